"""Logistic regression (scikit-learn) as a run: its declared settings, its weights in the perceptron's
Keras graph giving scikit-learn's own probabilities, and (slow) a run trained through the job
manager's training process, reloaded in Keras' safe mode, on Evaluate and Diagnose through app.py."""
import zipfile

import keras
import numpy as np
import pytest

from core.ml import classic, models
from core.present import train_view, weight_images
from core.settings.architectures import resolve_params
from core.settings.config import TrainConfig
from tests.conftest import tiny_folder_config, wait_until


@pytest.fixture(autouse=True)
def fresh_keras_session():
    keras.backend.clear_session(free_memory=False)
    yield
    keras.backend.clear_session(free_memory=False)


def pixel_rows(n: int, classes: int, seed: int):
    """32 px grayscale images whose class brightens its own third of the rows, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.uniform(0, 120, (n, 32, 32, 1))
    for k in range(classes):
        images[labels == k, 10 * k:10 * k + 10] += 100
    return images.astype(np.uint8), labels


@pytest.mark.parametrize("classes,present", [(2, 2), (3, 2)])
def test_its_weights_in_the_keras_graph_give_scikit_learns_probabilities(classes, present):
    """Two classes (scikit-learn's single score) and a class the training rows lack (probability 0)."""
    images, labels = pixel_rows(60, present, seed=classes)
    x = classic.pixel_features(images)
    fitted = classic.fit_logistic_regression(x, labels, x, labels, classes, "l2", (1.0,))
    model = models.build_model("logistic_regression", 32, 1, classes)
    model.get_layer("logits").set_weights(list(classic.logit_weights(fitted.model, classes)))
    by_keras = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(by_keras, classic.probabilities(fitted.model, x, classes), atol=1e-5)
    assert (by_keras[:, present:] == 0).all()
    assert (by_keras.argmax(1) == labels).mean() > 0.9


def test_the_penalty_and_c_grid_are_declared_settings():
    config = TrainConfig(arch="logistic_regression", arch_params={"penalty": "l1", "c_grid": "10, 0.1, 0.1"})
    config.validate()
    assert resolve_params(config.arch, config.arch_params) == {"penalty": "l1", "c_grid": [0.1, 10.0]}  # sorted, once
    assert TrainConfig.from_json(config.to_json()).validate() == config
    for grid in ([], [0.0], "a, b", [True], 5):
        with pytest.raises(ValueError, match="c_grid must be a non-empty list of numbers between 1e-06 and"):
            TrainConfig(arch="logistic_regression", arch_params={"c_grid": grid}).validate()
    with pytest.raises(ValueError, match="penalty must be one of l1, l2"):
        TrainConfig(arch="logistic_regression", arch_params={"penalty": "elasticnet"}).validate()


def test_the_live_view_shows_which_c_is_being_fitted():
    progress = {"phase": "fitting", "fit": 1, "fits": 4, "fit_label": "C = 0.1", "epochs": 0, "batches": 0}
    assert train_view.progress_bars(progress) == [(0.25, "Fit 2 of 4: C = 0.1")]
    assert "fitting the logistic regression" in train_view.headline("lr", "x", "running", "fitting", None)


def test_the_c_grid_table_marks_the_c_kept():
    fit = {"penalty": "l1", "C": 1.0, "grid": [
        {"C": 0.1, "train_log_loss": 0.69, "val_log_loss": 0.69, "nonzero_weights": 0, "converged": True},
        {"C": 1.0, "train_log_loss": 0.2, "val_log_loss": 0.3, "nonzero_weights": 12, "converged": False}]}
    frame = weight_images.c_grid_frame(fit)
    assert frame["kept"].tolist() == ["", "✓"] and frame["converged"].tolist() == ["yes", "no"]


@pytest.mark.slow  # a training process (TensorFlow's import) and two page runs
def test_a_logistic_regression_run_trains_through_the_job_path_and_shows_on_evaluate_and_diagnose(
        app_env, store, manager, chest_folder):
    from core.ml.inference import Predictor
    from tests.apptest_support import assert_clean, open_page, texts
    from tests.test_diagnose_page import xray_upload

    config = tiny_folder_config(chest_folder, arch="logistic_regression", arch_params={"c_grid": [0.01, 1.0]})
    run_id = manager.submit(config)
    run = store.get(run_id)
    wait_until(lambda: run.state() not in ("queued", "running"), 240, "the logistic regression run")
    assert run.state() == "done", run.status().get("error")
    summary = run.summary()
    fit = summary["logistic_regression"]
    assert fit["C"] == min(fit["grid"], key=lambda row: row["val_log_loss"])["C"]  # chosen on validation
    assert summary["test"]["n"] == len(run.predictions("test")["labels"]) > 0  # held-out patients
    assert set(summary["overfitting"]) >= {"train_accuracy", "val_accuracy", "accuracy_gap"}
    assert "scikit_learn" in run.environment()
    # The model is Keras' zip of JSON and weights (no pickle), loaded in safe mode; it predicts the saved test
    # predictions again.
    with zipfile.ZipFile(run.model_path) as saved:
        assert sorted(saved.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    predictor = Predictor(run.path)
    test = run.predictions("test")
    images = np.stack([predictor_input(predictor, chest_folder / path) for path in test["files"]])
    np.testing.assert_allclose(predictor.model.predict(images, verbose=0), test["probabilities"], atol=1e-5)

    evaluate = open_page("pages/evaluate.py", {"eval_run": run_id})
    assert_clean(evaluate)
    assert "What the logistic regression weighs" in [h.value for h in evaluate.subheader]
    assert "Saliency maps are not available for the logistic regression" in texts(evaluate)
    [grid] = [frame.value for frame in evaluate.dataframe if "kept" in frame.value.columns]
    assert grid["C"].tolist() == [0.01, 1.0]

    diagnose = open_page("pages/diagnose.py", {"diag_run": run_id})
    diagnose.file_uploader(key="diag_upload").set_value([xray_upload(0)]).run()
    assert_clean(diagnose)
    assert "Saliency maps are not available for the logistic regression" in texts(diagnose)
    assert not [box for box in diagnose.selectbox if box.key == "diag_method"]  # no map methods offered
    captions = [caption for image in diagnose.get("image") for caption in
                (img.caption for img in image.proto.imgs)]
    assert any(caption.startswith("In place of a map: its weights for the predicted class") for caption in captions)


def predictor_input(predictor, path) -> np.ndarray:
    """A saved prediction's image as the run's model takes it (its size and colour, 0-255)."""
    from core.data.imaging import to_model_array
    return to_model_array(path, predictor.config.image_size, predictor.config.channels).astype(np.float32)
