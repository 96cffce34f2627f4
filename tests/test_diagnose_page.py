"""The Diagnose page through Streamlit's AppTest, with a real (tiny) trained run: uploads of real
X-rays, of a non-image and of several files at once, the run choice and the controls."""
import base64
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import diagnosis as dx
from core.explain import METHODS

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "diagnose.py")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A run store with finished 32 px mlp and seed_cnn runs (trained for real, one epoch each)."""
    from core.runs import RunStore
    from core.training import TrainConfig, execute_run
    root = tmp_path_factory.mktemp("runs")
    for arch in ("mlp", "seed_cnn"):  # the CNN is created last: newest
        config = TrainConfig(arch=arch, image_size=32, epochs=1, batch_size=64, name=arch)
        run = RunStore(root).create(config.to_dict(), name=arch)
        execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
    return root


@pytest.fixture
def page(runs_root, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs_root))
    app = AppTest.from_file(PAGE, default_timeout=120)
    app.run()
    assert not app.exception, app.exception
    return app


def select_run(app, arch: str):
    from core.runs import RunStore
    run_id = next(run.id for run in RunStore().list() if run.config()["arch"] == arch)
    app.selectbox(key="diag_run").set_value(run_id).run()
    assert not app.exception, app.exception
    return app


def xray_upload(index: int = 0):
    from core.data import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        name = sorted(n for n in archive.namelist() if n.lower().endswith(".jpeg"))[index]
        return name.rsplit("/", 1)[-1], archive.read(name), "image/jpeg"


def texts(app) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "error", "warning", "info", "caption")
                    for e in getattr(app, kind))


def test_page_shows_the_clinical_use_note_and_the_best_run_by_default(page):
    assert "not for clinical use" in texts(page)
    assert page.selectbox(key="diag_run").value is not None
    from core.runs import RunStore
    runs = dx.diagnosable_runs(RunStore())  # CXR_RUNS_DIR is the fixture's store
    run = dx.best_run(runs)
    assert page.selectbox(key="diag_run").value == run.id
    threshold = next(s for s in page.slider if "threshold" in s.label)
    assert threshold.value == pytest.approx(run.summary()["threshold"])


def test_uploading_an_xray_shows_prediction_heatmap_and_probability_chart(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam").run()
    page.file_uploader(key="diag_upload").set_value([xray_upload()]).run()
    assert not page.exception, page.exception
    assert "predicted **" in texts(page)
    assert not page.error
    captions = [caption for image in page.image for caption in image.captions]
    assert any(c.startswith("Original") for c in captions) and any(c.startswith("Grad-CAM for") for c in captions)
    assert page.get("vega_lite_chart")  # the Altair probability chart


def test_a_non_image_is_a_clear_error_and_the_page_keeps_working(page):
    page.file_uploader(key="diag_upload").set_value([("notes.jpg", b"this is not a picture", "image/jpeg"),
                                                     xray_upload(5)]).run()
    assert not page.exception, page.exception
    assert any("notes.jpg" in e.value and "not an image" in e.value for e in page.error)
    assert "predicted **" in texts(page)  # the real X-ray next to it was still diagnosed


def test_several_files_give_a_results_table_and_changing_controls_works(page):
    select_run(page, "seed_cnn")
    page.file_uploader(key="diag_upload").set_value([xray_upload(0), xray_upload(-1)]).run()
    assert not page.exception, page.exception
    assert len(page.dataframe) == 1 and len(page.dataframe[0].value) == 2
    page.selectbox(key="diag_method").set_value("gradcam++").run()
    page.slider(key="diag_opacity").set_value(0.8).run()
    assert not page.exception and not page.error


def test_gradcam_can_be_pointed_at_another_feature_map(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam").run()
    layers = page.selectbox(key="diag_layer").options
    assert layers[0].startswith("automatic (conv2d") and len(layers) > 3
    first_conv = next(layer for layer in layers[1:] if layer.startswith("conv2d"))
    page.selectbox(key="diag_layer").set_value(first_conv).run()
    page.file_uploader(key="diag_upload").set_value([xray_upload(2)]).run()
    assert not page.exception and not page.error
    assert any(c.startswith("Grad-CAM for") for image in page.image for c in image.captions)


def test_a_run_without_convolutions_offers_saliency_and_says_why_not_gradcam(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam++").run()
    select_run(page, "mlp")  # Grad-CAM++ was chosen, and the mlp does not offer it
    assert page.selectbox(key="diag_method").options == [METHODS["saliency"], METHODS["smoothgrad"]]
    assert any("no convolutional layer" in i.value for i in page.info)
    assert "diag_layer" not in [box.key for box in page.selectbox]  # no feature map to choose
    page.file_uploader(key="diag_upload").set_value([xray_upload(3)]).run()
    captions = [caption for image in page.image for caption in image.captions]
    assert any(c.startswith("Vanilla saliency for") for c in captions), captions


def test_a_run_with_a_damaged_model_is_a_message_not_a_crash(runs_root, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from core.runs import RunStore
    source = dx.diagnosable_runs(RunStore(runs_root))[0]
    shutil.copytree(source.path, tmp_path / source.id)
    (tmp_path / source.id / "model.keras").write_bytes(b"not a keras archive")
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    assert not app.exception and any("cannot be loaded" in e.value for e in app.error)


def test_without_runs_the_page_says_what_to_do(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.run()
    assert not app.exception and "No finished run" in texts(app)


# ----------------------------------------------------------------------------- the core the page calls

def test_best_run_prefers_test_auc_then_macro_f1(tmp_path):
    import json

    from core.runs import RunStore
    store = RunStore(tmp_path)
    runs = []
    for auc, f1 in ((0.8, 0.9), (0.9, 0.5), (0.9, 0.7), (None, 0.99)):
        run = store.create({"task": "binary"})
        run.write_summary({"test": {"auc": auc, "macro_f1": f1}})
        run.update_status(state="done")
        run.model_path.write_bytes(b"")
        runs.append(run)
    (runs[0].path / "status.json").write_text(json.dumps({"state": "failed"}))
    assert dx.best_run(dx.diagnosable_runs(store)).id == runs[2].id
    assert dx.best_run([]) is None


def test_results_rows_and_thumbnails():
    ok = dx.Diagnosis(file="a.png", image=Image.new("L", (300, 200)), probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8},
                      predicted="PNEUMONIA", score=0.8)
    assert ok.row()["p_PNEUMONIA"] == 0.8 and ok.row()["error"] == ""
    assert dx.Diagnosis(file="b.png", error="empty").row() == {"file": "b.png", "predicted": None, "error": "empty"}
    url = dx.thumbnail_data_url(ok.image)
    thumb = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert url.startswith("data:image/png;base64,") and max(thumb.size) == 64


def test_threshold_decides_the_class(runs_root):
    from core.runs import RunStore
    diagnoser = dx.Diagnoser(dx.diagnosable_runs(RunStore(runs_root))[0].path)
    probabilities = np.array([0.3, 0.7])
    assert diagnoser.decide(probabilities, 0.5) == ("PNEUMONIA", pytest.approx(0.7))
    assert diagnoser.decide(probabilities, 0.9)[0] == "NORMAL"
    assert diagnoser.decide(probabilities, None)[0] == "PNEUMONIA"  # no threshold: argmax
