"""Out-of-distribution warnings: a real model trained on the built-in X-rays must flag noise,
colour photos and flat images, and leave real X-rays alone."""
import numpy as np
import pytest
from PIL import Image

from core.ml import ood
from tests.conftest import copy_run


@pytest.fixture(scope="module")
def trained_run(tiny_run, tmp_path_factory):
    """This module's copy of the session's tiny run: the tests here build and remove its ood.npz."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("ood-runs"))


@pytest.fixture(scope="module")
def diagnoser(trained_run):
    from core.ml.diagnosis import Diagnoser
    return Diagnoser(trained_run.path)


@pytest.fixture(scope="module")
def test_xrays(trained_run):
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig
    dataset, split = load_data(TrainConfig.from_dict(trained_run.config()))
    return dataset.images[split.test]


def png_bytes(array: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the distance itself

def test_fit_reference_flags_points_far_from_the_training_distribution():
    rng = np.random.default_rng(0)
    scales = np.linspace(0.1, 3.0, 20)
    train, val = rng.normal(size=(2000, 20)) * scales, rng.normal(size=(500, 20)) * scales
    reference = ood.fit_reference(train, val)
    near = reference.distances(rng.normal(size=(1000, 20)) * scales)
    assert 0.97 < (near <= reference.threshold).mean() <= 1.0
    shifted = np.zeros((1, 20))
    shifted[0, 0] = 2.0  # small in absolute terms, but 20 standard deviations of that feature
    assert reference.distances(shifted)[0] > 3 * reference.threshold


def test_directions_beyond_the_kept_components_still_count():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(2000, 20)), rng.normal(size=(500, 20))
    reference = ood.fit_reference(train, val, max_components=5)  # 15 dimensions in the residual term
    assert reference.components.shape == (5, 20) and reference.residual_variance > 0
    near = reference.distances(rng.normal(size=(1000, 20)))
    assert 0.97 < (near <= reference.threshold).mean() <= 1.0
    assert reference.distances(np.full((1, 20), 4.0))[0] > 2 * reference.threshold


def test_fit_reference_needs_data():
    with pytest.raises(ValueError, match="at least 3"):
        ood.fit_reference(np.zeros((2, 4)), np.zeros((1, 4)))


# ----------------------------------------------------------------------------- pixel statistics

def test_pixel_checks_name_what_is_wrong():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8))
    y, x = np.mgrid[0:256, 0:256]
    smooth = Image.fromarray((127 + 100 * np.sin(x / 20.0) * np.cos(y / 30.0)).astype(np.uint8))
    assert ood.pixel_warnings(smooth) == []
    assert ood.pixel_warnings(smooth.convert("RGB")) == []  # gray saved as RGB is still gray
    stripes = np.zeros((256, 256, 3), np.uint8)
    stripes[:, :85, 0] = stripes[:, 85:170, 1] = stripes[:, 170:, 2] = 255
    assert any("colour" in r for r in ood.pixel_warnings(Image.fromarray(stripes)))
    assert any("contrast" in r for r in ood.pixel_warnings(Image.new("L", (256, 256), 128)))
    assert any("tiny" in r for r in ood.pixel_warnings(smooth.resize((20, 20))))
    assert any("elongated" in r for r in ood.pixel_warnings(smooth.resize((1200, 200))))
    assert any("noise" in r for r in ood.pixel_warnings(noise))


# ----------------------------------------------------------------------------- with a trained run

def test_reference_is_computed_once_and_saved_in_the_run(trained_run, diagnoser):
    reference = diagnoser.reference()
    path = trained_run.path / ood.OOD_FILE
    assert reference is not None and path.exists() and reference.threshold > 0
    saved_at = path.stat().st_mtime_ns
    again = ood.reference_for_run(trained_run, diagnoser.features_model)
    assert path.stat().st_mtime_ns == saved_at and again.threshold == pytest.approx(reference.threshold)


def test_real_xrays_pass_and_noise_is_far(diagnoser, test_xrays):
    reference = diagnoser.reference()
    xray_distances = reference.distances(ood.compute_features(diagnoser.features_model, test_xrays))
    assert (xray_distances > reference.threshold).mean() < 0.05
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 1), dtype=np.uint8)
    noise_distances = reference.distances(ood.compute_features(diagnoser.features_model, noise))
    assert (noise_distances > reference.threshold).all()


def builtin_xray_files(n: int) -> list[tuple[str, bytes]]:
    """n original 128 px JPEGs from the built-in dataset, spread over both classes."""
    import zipfile

    from core.data.sources import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        names = sorted(name for name in archive.namelist() if name.lower().endswith(".jpeg"))
        picked = names[:: len(names) // n][:n]
        return [(name, archive.read(name)) for name in picked]


def test_real_xray_uploads_get_no_warning(diagnoser):
    results = [diagnoser.diagnose(data, name) for name, data in builtin_xray_files(10)]
    assert all(r.ok and r.ood.distance is not None for r in results)
    flagged = [(r.file, r.ood.reasons) for r in results if r.ood.unusual]
    assert len(flagged) <= 1, flagged  # the threshold is val's 99th percentile: ~1% are beyond it


@pytest.mark.parametrize("kind", ["noise", "colour photo", "flat colour"])
def test_non_xray_uploads_are_flagged_with_a_reason(diagnoser, kind):
    rng = np.random.default_rng(1)
    if kind == "noise":
        array = rng.integers(0, 256, size=(300, 300), dtype=np.uint8)
    elif kind == "colour photo":
        y, x = np.mgrid[0:300, 0:300]
        array = np.stack([x * 255 // 300, y * 255 // 300, 255 - x * 255 // 300], axis=-1).astype(np.uint8)
    else:
        array = np.full((300, 300, 3), (40, 160, 90), np.uint8)
    result = diagnoser.diagnose(png_bytes(array), f"{kind}.png")
    assert result.ok and result.predicted in diagnoser.class_names  # still answered...
    assert result.ood.unusual and result.ood.reasons  # ...but with a warning saying why
    assert "unreliable" in result.ood.message()


def test_without_training_data_the_check_degrades_to_pixel_statistics(trained_run, tmp_path):
    import json
    import shutil

    from core.ml.diagnosis import Diagnoser
    from core.store.run_folder import Run
    copy = Run(tmp_path / trained_run.id)
    shutil.copytree(trained_run.path, copy.path)
    (copy.path / ood.OOD_FILE).unlink()
    config = {**copy.config(), "data_source": "folder", "data_path": str(tmp_path / "moved-away")}
    copy.config_path.write_text(json.dumps(config))
    diagnoser = Diagnoser(copy.path)
    result = diagnoser.diagnose(png_bytes(np.full((300, 300), 128, np.uint8)), "flat.png")
    assert result.ok and result.ood.distance is None and result.ood.unusual  # flat: pixel check
    assert "out-of-distribution check is off" in diagnoser.ood_error


def test_subsample_is_bounded_deterministic_and_ordered():
    indices = np.arange(100, 5000)
    picked = ood.subsample(indices, 1000)
    assert len(picked) == 1000 and len(set(picked)) == 1000 and set(picked) <= set(indices)
    assert np.array_equal(picked, ood.subsample(indices, 1000)) and (np.diff(picked) > 0).all()
    assert np.array_equal(ood.subsample(indices[:10], 1000), indices[:10])


def test_warm_up_builds_the_reference_ahead_of_the_first_upload(trained_run):
    from core.ml.diagnosis import Diagnoser
    (trained_run.path / ood.OOD_FILE).unlink(missing_ok=True)
    diagnoser = Diagnoser(trained_run.path)
    diagnoser.warm_up()
    assert (trained_run.path / ood.OOD_FILE).exists() and diagnoser.reference() is not None
