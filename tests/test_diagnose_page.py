"""The Diagnose page through Streamlit's AppTest, with real (tiny) trained runs: uploads of real
X-rays, of bad files and of several files at once, the run choice (also after an upload, and through
app.py's navigation), an empty Grad-CAM map and the automatic switch to HiResCAM, the sanity check,
and the controls."""
import base64
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.ml import diagnosis as dx
from core.ml.explain import METHODS
from tests.apptest_support import open_page
from tests.conftest import copy_run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_run):
    """A run store with finished 32 px runs trained for real, one epoch each: a copy of the session's
    seed_cnn (tiny_run) and an mlp."""
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    from core.store.runs import RunStore
    root = tmp_path_factory.mktemp("runs")
    copy_run(tiny_run, root)
    config = TrainConfig(arch="mlp", image_size=32, epochs=1, batch_size=64, name="mlp")
    run = RunStore(root).create(config.to_dict(), name="mlp")
    execute_run(run, config)
    assert run.state() == "done", run.status().get("error")
    return root


@pytest.fixture
def page(runs_root, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs_root))
    app = open_page("pages/diagnose.py", timeout=120)
    assert not app.exception, app.exception
    return app


def select_run(app, arch: str):
    from core.store.runs import RunStore
    run_id = next(run.id for run in RunStore().list() if run.config()["arch"] == arch)
    app.selectbox(key="diag_run").set_value(run_id).run()
    assert not app.exception, app.exception
    return app


def xray_upload(index: int = 0):
    from core.data.sources import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        name = sorted(n for n in archive.namelist() if n.lower().endswith(".jpeg"))[index]
        return name.rsplit("/", 1)[-1], archive.read(name), "image/jpeg"


def captions(app) -> list[str]:
    return [caption for image in app.image for caption in image.captions]


def texts(app) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "error", "warning", "info", "caption")
                    for e in getattr(app, kind))


@pytest.mark.slow  # trains an mlp (runs_root)
def test_page_shows_the_clinical_use_note_and_the_best_run_by_default(page):
    assert "not for clinical use" in texts(page)
    assert not page.warning[1:]  # only the clinical-use note: no "default value set via Session State" warning
    assert page.selectbox(key="diag_run").value is not None
    from core.store.runs import RunStore
    runs = dx.diagnosable_runs(RunStore())  # CXR_RUNS_DIR is the fixture's store
    run = dx.best_run(runs)
    assert page.selectbox(key="diag_run").value == run.id
    threshold = next(s for s in page.slider if "threshold" in s.label)
    assert threshold.value == pytest.approx(run.summary()["threshold"])


@pytest.mark.slow  # trains an mlp (runs_root)
def test_uploading_an_xray_shows_prediction_heatmap_and_probability_chart(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam").run()
    page.file_uploader(key="diag_upload").set_value([xray_upload()]).run()
    assert not page.exception, page.exception
    assert "predicted **" in texts(page)
    assert not page.error
    assert any(c.startswith("Original") for c in captions(page))
    assert any(c.startswith(("Grad-CAM of", "HiResCAM of")) for c in captions(page)), captions(page)
    assert "Sanity check: map changes when the model is randomised: **" in texts(page)  # yes or no, with rho
    assert page.get("vega_lite_chart")  # the Altair probability chart
    assert "Research tool, not for clinical use" in " ".join(c.value for c in page.caption)  # by the diagnosis


@pytest.mark.slow  # trains an mlp (runs_root)
def test_a_non_image_is_a_clear_error_and_the_page_keeps_working(page):
    page.file_uploader(key="diag_upload").set_value([("notes.jpg", b"this is not a picture", "image/jpeg"),
                                                     xray_upload(5)]).run()
    assert not page.exception, page.exception
    assert any("notes.jpg" in e.value and "not an image" in e.value for e in page.error)
    assert "predicted **" in texts(page)  # the real X-ray next to it was still diagnosed


@pytest.mark.slow  # trains an mlp (runs_root)
def test_several_files_give_a_results_table_and_changing_controls_works(page):
    select_run(page, "seed_cnn")
    page.file_uploader(key="diag_upload").set_value([xray_upload(0), xray_upload(-1)]).run()
    assert not page.exception, page.exception
    assert len(page.dataframe) == 1 and len(page.dataframe[0].value) == 2
    page.selectbox(key="diag_method").set_value("gradcam++").run()
    page.slider(key="diag_opacity").set_value(0.8).run()
    assert not page.exception and not page.error


@pytest.mark.slow  # trains an mlp (runs_root)
def test_gradcam_can_be_pointed_at_another_feature_map(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam").run()
    layers = page.selectbox(key="diag_layer").options
    assert layers[0].startswith("automatic (conv2d") and len(layers) > 3
    first_conv = next(layer for layer in layers[1:] if layer.startswith("conv2d"))
    page.selectbox(key="diag_layer").set_value(first_conv).run()
    page.file_uploader(key="diag_upload").set_value([xray_upload(2)]).run()
    assert not page.exception and not page.error
    assert any(c.startswith(("Grad-CAM of", "HiResCAM of")) for c in captions(page)), captions(page)


@pytest.mark.slow  # trains an mlp (runs_root)
def test_a_run_without_convolutions_offers_saliency_and_says_why_not_gradcam(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam++").run()
    select_run(page, "mlp")  # Grad-CAM++ was chosen, and the mlp does not offer it
    assert page.selectbox(key="diag_method").options == [METHODS["saliency"], METHODS["smoothgrad"]]
    assert any("no convolutional layer" in i.value for i in page.info)
    assert "diag_layer" not in [box.key for box in page.selectbox]  # no feature map to choose
    page.file_uploader(key="diag_upload").set_value([xray_upload(3)]).run()
    assert any(c.startswith("Vanilla saliency of") for c in captions(page)), captions(page)


@pytest.mark.slow  # trains an mlp (runs_root)
def test_changing_the_run_after_an_upload_keeps_the_files_and_diagnoses_them_again(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("saliency").run()
    page.file_uploader(key="diag_upload").set_value([xray_upload(4), xray_upload(-2)]).run()
    assert not page.exception, page.exception
    first = [str(m.value) for m in page.markdown if "predicted **" in str(m.value)]
    select_run(page, "mlp")  # raises on any exception, e.g. assigning to the uploader's state
    assert len(page.file_uploader(key="diag_upload").value) == 2  # the files stayed
    again = [str(m.value) for m in page.markdown if "predicted **" in str(m.value)]
    assert len(again) == 2 and sum(c.startswith("Vanilla saliency of") for c in captions(page)) == 2
    assert len(page.dataframe) == 1 and not page.error
    select_run(page, "seed_cnn")
    assert [str(m.value) for m in page.markdown if "predicted **" in str(m.value)] == first


def xray_with_empty_gradcam(runs_root) -> tuple:
    """A built-in X-ray whose Grad-CAM for the predicted class is empty with the seed_cnn run."""
    from core.data.sources import BUILTIN_ZIP
    from core.ml.maps import is_empty_map
    from core.store.runs import RunStore
    run = next(r for r in RunStore(runs_root).list() if r.config()["arch"] == "seed_cnn")
    diagnoser = dx.Diagnoser(run.path)
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpeg"))
        for name in names[::7][:400]:
            result = diagnoser.diagnose(archive.read(name), name)
            if is_empty_map(diagnoser.heatmap(result, "gradcam")):
                return name.rsplit("/", 1)[-1], archive.read(name), "image/jpeg"
    pytest.fail("no built-in X-ray with an empty Grad-CAM map for this run")


@pytest.mark.slow  # trains an mlp (runs_root)
def test_an_empty_gradcam_falls_back_to_hirescam_names_class_and_method_and_says_why(page, runs_root):
    upload = xray_with_empty_gradcam(runs_root)
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("gradcam").run()
    page.file_uploader(key="diag_upload").set_value([upload]).run()
    assert not page.exception, page.exception
    predicted = next(str(m.value) for m in page.markdown if "predicted **" in str(m.value)).split("**")[3]
    assert f"HiResCAM of {predicted} (the predicted class); Grad-CAM of {predicted} was empty for this image, " \
           f"so HiResCAM is shown" in captions(page)
    assert f"The Grad-CAM map of {predicted} is empty for this image" in texts(page)
    assert "mirror images" in texts(page)  # a two-class model: why one class's map is nearly always empty
    sanity = next(str(m.value) for m in page.markdown if str(m.value).startswith("Sanity check:"))
    assert "map changes when the model is randomised: **" in sanity and "ρ = " in sanity
    assert page.selectbox(key="diag_method").value == "gradcam"  # the user's choice stays


@pytest.mark.slow  # trains an mlp (runs_root)
def test_the_explained_class_can_be_chosen_and_the_caption_names_it(page):
    select_run(page, "seed_cnn").selectbox(key="diag_method").set_value("saliency").run()
    page.selectbox(key="diag_class").set_value("NORMAL").run()
    page.file_uploader(key="diag_upload").set_value([xray_upload()]).run()
    assert not page.exception, page.exception
    assert any(c.startswith("Vanilla saliency of NORMAL") for c in captions(page)), captions(page)


@pytest.mark.parametrize("case", ["text with a .jpg name", "truncated JPEG", "zero bytes", "decompression bomb",
                                  "RGBA PNG", "16-bit grayscale PNG"])
@pytest.mark.slow  # trains an mlp (runs_root)
def test_each_bad_or_odd_upload_gets_a_message_and_the_next_image_diagnoses(page, case):
    from tests.test_bad_inputs import ACCEPTED, REFUSED
    select_run(page, "seed_cnn")
    name, make, expected = REFUSED.get(case) or ACCEPTED[case]
    page.file_uploader(key="diag_upload").set_value([(name, make(), "image/png")]).run()
    assert not page.exception, page.exception
    if case in REFUSED:
        assert any(name in e.value and expected in e.value for e in page.error), [e.value for e in page.error]
    else:
        assert f"**{name}**: predicted **" in texts(page) and not page.error
    page.file_uploader(key="diag_upload").set_value([xray_upload(6)]).run()
    assert not page.exception and not page.error and "predicted **" in texts(page)


@pytest.mark.slow  # trains an mlp (runs_root)
def test_a_run_with_a_damaged_model_is_a_message_not_a_crash(runs_root, tmp_path, monkeypatch):
    import shutil

    from core.store.runs import RunStore
    source = dx.diagnosable_runs(RunStore(runs_root))[0]
    shutil.copytree(source.path, tmp_path / source.id)
    (tmp_path / source.id / "model.keras").write_bytes(b"not a keras archive")
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    app = open_page("pages/diagnose.py", timeout=60)
    assert not app.exception and any("cannot be loaded" in e.value for e in app.error)


def test_without_runs_the_page_says_what_to_do(tmp_path, monkeypatch):
    app = app_on_diagnose(tmp_path, monkeypatch)  # through app.py: its link to Train needs the navigation
    assert not app.exception and "No finished run" in texts(app)
    assert "Go to Train" in [link.label for link in app.get("page_link")]


def app_on_diagnose(runs_root, monkeypatch, uploads=None):
    """app.py under AppTest, switched to the Diagnose page (as a click in the sidebar does)."""
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs_root))
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(uploads or runs_root / "uploads"))
    return open_page("pages/diagnose.py")


@pytest.mark.slow  # trains an mlp (runs_root)
def test_through_app_navigation_an_upload_and_a_run_change_do_not_crash(runs_root, tmp_path, monkeypatch):
    """app.py re-assigns the kept widget keys before every page; the uploader and buttons must survive it."""
    app = app_on_diagnose(runs_root, monkeypatch, tmp_path / "uploads")
    assert not app.exception, app.exception
    app.file_uploader(key="diag_upload").set_value([xray_upload(1), xray_upload(8)]).run()
    assert not app.exception, app.exception
    assert "predicted **" in texts(app)
    select_run(app, "mlp")
    assert len(app.file_uploader(key="diag_upload").value) == 2 and "predicted **" in texts(app)
    app.selectbox(key="diag_method").set_value("smoothgrad").run()
    assert not app.exception and not app.error


# ----------------------------------------------------------------------------- the core the page calls

def test_every_run_with_a_model_that_is_not_active_is_listed_and_labelled(make_run, store):
    runs = {state: make_run(state, name=state) for state in ("done", "cancelled", "interrupted", "running", "queued")}
    make_run("cancelled", name="cancelled-before-any-epoch")  # no model: not listed
    for run in runs.values():
        run.model_path.write_bytes(b"")
    runs["cancelled"].write_summary({"best_epoch": 3, "test": {"auc": 0.99, "macro_f1": 0.9}})
    listed = dx.diagnosable_runs(store)
    assert {run.id for run in listed} == {runs[s].id for s in ("done", "cancelled", "interrupted")}
    assert dx.state_note(runs["cancelled"]) == "cancelled, best epoch 3"
    assert dx.state_note(runs["interrupted"]) == "interrupted" and dx.state_note(runs["done"]) == ""
    assert dx.best_run(listed).id == runs["cancelled"].id  # a cancelled run can be the best one


def test_on_equal_quality_the_default_is_a_model_with_gradcam(store):
    runs = []
    for arch in ("seed_cnn", "logistic", "mlp"):  # the conv-less models are newer
        run = store.create({"task": "binary", "arch": arch})
        run.write_summary({"test": {"auc": 0.95, "macro_f1": 0.9}})
        run.update_status(state="done")
        run.model_path.write_bytes(b"")
        runs.append(run)
    assert dx.best_run(dx.diagnosable_runs(store)).config()["arch"] == "seed_cnn"
    better = store.create({"task": "binary", "arch": "mlp"})
    better.write_summary({"test": {"auc": 0.97, "macro_f1": 0.5}})
    better.update_status(state="done")
    better.model_path.write_bytes(b"")
    assert dx.best_run(dx.diagnosable_runs(store)).id == better.id  # quality first


@pytest.mark.slow  # trains an mlp (runs_root)
def test_a_cancelled_run_shows_up_in_the_page_with_its_state(runs_root, tmp_path, monkeypatch):
    import shutil

    from core.store.runs import RunStore
    source = next(r for r in RunStore(runs_root).list() if r.config()["arch"] == "seed_cnn")
    shutil.copytree(source.path, tmp_path / source.id)
    copy = RunStore(tmp_path).get(source.id)
    copy.update_status(state="cancelled")
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    app = open_page("pages/diagnose.py", timeout=120)
    box = app.selectbox(key="diag_run")
    assert not app.exception and box.value == copy.id
    assert any("cancelled" in option for option in box.options), box.options
    app.file_uploader(key="diag_upload").set_value([xray_upload(0)]).run()
    assert not app.exception and "predicted **" in texts(app)

def test_best_run_prefers_test_auc_then_macro_f1(tmp_path):
    import json

    from core.store.runs import RunStore
    store = RunStore(tmp_path)
    runs = []
    for auc, f1 in ((0.8, 0.9), (0.9, 0.5), (0.9, 0.7), (None, 0.99)):
        run = store.create({"task": "binary"})
        run.write_summary({"test": {"auc": auc, "macro_f1": f1}})
        run.update_status(state="done")
        run.model_path.write_bytes(b"")
        runs.append(run)
    (runs[0].path / "status.json").write_text(json.dumps({"state": "running"}))
    assert runs[0].id not in [run.id for run in dx.diagnosable_runs(store)]
    assert dx.best_run(dx.diagnosable_runs(store)).id == runs[2].id
    assert dx.best_run([]) is None


@pytest.mark.slow  # trains an mlp (runs_root)
def test_the_evaluate_gallery_falls_back_to_hirescam_and_says_so(runs_root):
    from core.data.imaging import displayable
    from core.ml.explain import explainer_for_run, predicted_class
    from core.ml.maps import is_empty_map
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig
    from core.present import review
    from core.store.runs import RunStore
    runs = {run.config()["arch"]: run for run in RunStore(runs_root).list()}
    dataset, split = load_data(TrainConfig.from_dict(runs["seed_cnn"].config()))
    explainer = explainer_for_run(runs["seed_cnn"])
    kinds = {}
    for index in split.test[:120]:
        image = displayable(dataset.images[index])  # (S, S), as the gallery passes it
        pixels = dataset.images[index]
        predicted = predicted_class(explainer, pixels)
        empty = is_empty_map(explainer.heatmap(pixels, "gradcam", predicted))
        kinds.setdefault(empty, (str(dataset.files[index]), image, dataset.class_names[predicted]))
    assert set(kinds) == {True, False}, "expected images with and without an empty Grad-CAM"
    file, image, predicted = kinds[True]
    shown = review.explanation_overlay(runs["seed_cnn"], file, image)
    assert shown.note.startswith(f"HiResCAM of {predicted} (the predicted class); Grad-CAM of {predicted} was empty")
    assert "map changes when the model is randomised: " in shown.note and shown.image.shape == (32, 32, 3)
    file, image, predicted = kinds[False]
    shown = review.explanation_overlay(runs["seed_cnn"], file, image)
    assert shown.note.startswith(f"Grad-CAM of {predicted} (the predicted class) · map changes when the model is")
    assert shown.image.shape == (32, 32, 3) and shown.image.dtype == np.uint8
    shown = review.explanation_overlay(runs["mlp"], file, image)
    assert shown.image is None and "no convolutional layer" in shown.note


@pytest.mark.slow  # trains an mlp (runs_root)
def test_an_interrupted_run_without_summary_still_diagnoses_with_its_dataset_classes(runs_root, tmp_path):
    import shutil

    from core.store.runs import RunStore
    source = next(r for r in RunStore(runs_root).list() if r.config()["arch"] == "seed_cnn")
    shutil.copytree(source.path, tmp_path / source.id)
    copy = RunStore(tmp_path).get(source.id)
    for name in ("summary.json", "predictions_val.npz", "predictions_test.npz"):
        (copy.path / name).unlink()
    copy.update_status(state="interrupted")
    assert [run.id for run in dx.diagnosable_runs(RunStore(tmp_path))] == [copy.id]
    diagnoser = dx.Diagnoser(copy.path)
    assert diagnoser.class_names == ["NORMAL", "PNEUMONIA"] and diagnoser.threshold is None
    result = diagnoser.diagnose(xray_upload(0)[1], "x.jpeg")
    assert result.ok and result.predicted in diagnoser.class_names


def test_results_rows_and_thumbnails():
    ok = dx.Diagnosis(file="a.png", image=Image.new("L", (300, 200)), probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8},
                      predicted="PNEUMONIA", score=0.8)
    assert ok.row()["p_PNEUMONIA"] == 0.8 and ok.row()["error"] == ""
    assert dx.Diagnosis(file="b.png", error="empty").row() == {"file": "b.png", "predicted": None, "error": "empty"}
    url = dx.thumbnail_data_url(ok.image)
    thumb = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert url.startswith("data:image/png;base64,") and max(thumb.size) == 64


@pytest.mark.slow  # trains an mlp (runs_root)
def test_threshold_decides_the_class(runs_root):
    from core.store.runs import RunStore
    diagnoser = dx.Diagnoser(dx.diagnosable_runs(RunStore(runs_root))[0].path)
    probabilities = np.array([0.3, 0.7])
    assert diagnoser.decide(probabilities, 0.5) == ("PNEUMONIA", pytest.approx(0.7))
    assert diagnoser.decide(probabilities, 0.9)[0] == "NORMAL"
    assert diagnoser.decide(probabilities, None)[0] == "PNEUMONIA"  # no threshold: argmax
