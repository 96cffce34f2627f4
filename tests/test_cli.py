"""The CLI end to end on a tiny run: train, evaluate, predict (as a user types them)."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.sources import BUILTIN_ZIP
from core.ml.metrics import predict_with_threshold

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode not in (0, 1):
        raise AssertionError(f"{args} exited {result.returncode}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`core train` as a user types it (the dataset cache is the session's, through CXR_CACHE_DIR)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = cli("core", "train", "--arch", "seed_cnn", "--task", "subtype", "--image-size", "32",
                 "--epochs", "1", "--batch-size", "64", "--runs-dir", str(runs_dir),
                 "--set", "arch_params.dense_units=16")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


@pytest.mark.slow
def test_train_prints_the_run_folder_and_test_metrics(trained_run):
    output, stderr = trained_run
    assert output["state"] == "done" and Path(output["run_dir"]).is_dir()
    assert output["run_dir"] in stderr and "epoch 1:" in stderr
    assert 0 <= output["test"]["accuracy"] <= 1 and output["test"]["n"] > 500
    assert set(output["test"]) >= {"macro_f1", "auc", "recall_normal", "recall_bacterial", "recall_viral"}
    config = json.loads((Path(output["run_dir"]) / "config.json").read_text())
    assert config["task"] == "subtype" and config["arch_params"] == {"dense_units": 16}


@pytest.mark.slow
def test_evaluate_prints_metrics_as_json(trained_run):
    output, _ = trained_run
    result = cli("core", "evaluate", output["run_dir"])
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated["metrics"]["accuracy"] == pytest.approx(output["test"]["accuracy"])
    assert len(evaluated["metrics"]["confusion_matrix"]) == 3
    curves = json.loads(cli("core", "evaluate", output["run_dir"], "--split", "val", "--curves").stdout)
    assert {"roc", "pr", "f1_threshold", "calibration"} <= set(curves)


@pytest.mark.slow
def test_predict_reproduces_the_saved_predictions_and_reports_bad_files(trained_run, tmp_path):
    run_dir = Path(trained_run[0]["run_dir"])
    with np.load(run_dir / "predictions_test.npz") as saved:
        files, probabilities = saved["files"][:3], saved["probabilities"][:3]
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        members = {Path(n).name: n for n in archive.namelist()}
        for name in files:
            (tmp_path / Path(name).name).write_bytes(archive.read(members[Path(name).name]))
    big_rgba = tmp_path / "large_rgba.png"
    Image.new("RGBA", (700, 500), (90, 90, 90, 255)).save(big_rgba)
    sixteen_bit = tmp_path / "sixteen.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 8).save(sixteen_bit)
    (tmp_path / "notes.jpeg").write_bytes(b"definitely not an image")
    result = cli("core", "predict", str(run_dir), str(tmp_path), str(tmp_path / "missing.png"))
    assert result.returncode == 1  # some inputs failed
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_file = {Path(line["file"]).name: line for line in lines}
    classes = ["normal", "bacterial", "viral"]
    threshold = json.loads((run_dir / "summary.json").read_text()).get("threshold")
    decided = predict_with_threshold(probabilities, classes, threshold)  # as the Diagnose page decides
    for name, expected, index in zip(files, probabilities, decided):
        got = by_file[Path(name).name]
        assert list(got["probabilities"]) == classes
        np.testing.assert_allclose(list(got["probabilities"].values()), expected, atol=1e-4)
        assert got["predicted"] == classes[int(index)]
        assert got["disease_score"] == pytest.approx(1 - expected[0], abs=1e-4)
    for name in ("large_rgba.png", "sixteen.png"):
        assert sum(by_file[name]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert "not an image" in by_file["notes.jpeg"]["error"]
    assert by_file["missing.png"]["error"] == "no such file"


def building_photo() -> Image.Image:
    """A synthetic colour photo of a building: blue sky, green lawn, a red-brick block with windows."""
    y, x = np.mgrid[0:480, 0:640]
    scene = np.zeros((480, 640, 3), np.uint8)
    scene[...] = np.stack([90 + y // 6, 150 + y // 8, 235 - y // 10], axis=-1)  # sky, lighter downwards
    scene[360:] = (60, 150, 50)  # lawn
    scene[120:360, 160:480] = (170, 70, 50)  # the building
    for top in range(140, 340, 50):
        for left in range(180, 460, 60):
            scene[top:top + 30, left:left + 35] = (200, 220, 240)  # windows
    noise = np.random.default_rng(0).normal(0, 6, scene.shape)
    return Image.fromarray(np.clip(scene + noise + 10 * np.sin(x / 9.0)[..., None], 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_predict_warns_about_a_photo_but_not_about_real_xrays(trained_run, tmp_path):
    run_dir = Path(trained_run[0]["run_dir"])
    building_photo().save(tmp_path / "building.jpg", quality=92)
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpeg"))[::900][:3]
        for name in names:
            (tmp_path / Path(name).name).write_bytes(archive.read(name))
    result = cli("core", "predict", str(run_dir), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    by_file = {Path(line["file"]).name: line for line in map(json.loads, result.stdout.splitlines())}
    photo = by_file["building.jpg"]
    assert photo["unusual"] is True and "unlike the training X-rays" in photo["warning"]
    assert "colour" in photo["warning"]
    assert f"warning: {tmp_path / 'building.jpg'}: This image looks unlike" in result.stderr
    xrays = [by_file[Path(name).name] for name in names]
    assert sum(line["unusual"] for line in xrays) <= 1, xrays  # val's 99th percentile: ~1% go beyond it
    assert all("warning" not in line for line in xrays if not line["unusual"])
    assert "not for clinical use" in result.stderr
    assert (run_dir / "ood.npz").exists()  # the same reference the Diagnose page builds and reuses


def test_evaluate_decides_at_the_runs_threshold_and_says_so(make_run, capsys):
    from core.__main__ import main as core_main
    run = make_run("done", name="decided")
    summary = run.summary()
    assert core_main(["evaluate", str(run.path)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["decided_at"] == f"threshold {summary['threshold']:.2f}"
    assert evaluated["metrics"]["accuracy"] == summary["test"]["accuracy"]  # the summary's (and Runs') number
    assert core_main(["evaluate", str(run.path), "--argmax"]) == 0
    argmax = json.loads(capsys.readouterr().out)
    assert argmax["decided_at"] == "argmax" and argmax["metrics"]["threshold"] is None
    assert core_main(["evaluate", str(run.path), "--split", "val", "--threshold", "0.7", "--curves"]) == 0
    assert json.loads(capsys.readouterr().out)["decided_at"] == "threshold 0.70"


def test_bad_cli_input_gives_a_message_not_a_traceback(tmp_path):
    result = cli("core", "train", "--arch", "no_such_net", "--runs-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "no_such_net" in result.stderr and "Traceback" not in result.stderr
    result = cli("core", "predict", str(tmp_path), "x.png", check=False)
    assert result.returncode == 2 and "not a run folder" in result.stderr


def test_a_run_submitted_under_a_name_already_taken_is_renamed_and_told(tmp_path, capsys):
    from core.cli.train import main
    from core.store.runs import RunStore
    for _ in range(2):
        assert main(["--submit", "--name", "same", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "A run named same exists: this one is named same-2." in capsys.readouterr().err
    names = sorted(run.display_name() for run in RunStore(tmp_path / "runs").list())
    assert names == ["same", "same-2"]
