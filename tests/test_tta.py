"""Test-time augmentation (core.ml.tta): the identity view alone is the plain prediction to the last
bit, the averaged output is a probability distribution, the views move the image as their names say,
and the Evaluate and Diagnose pages show it with its cost, computed once per model."""
import os

import numpy as np
import pytest

from core.ml import tta
from core.ml.tta import IDENTITY, View, apply_view, predict_views
from tests.apptest_support import assert_clean, open_page, texts


@pytest.fixture(scope="module")
def small_model():
    """A real (untrained) seed CNN at 32 px: its probabilities are those of a Keras model, not a stand-in."""
    from core.ml import models
    return models.build_model("seed_cnn", 32, 1, 3, params={"dense_units": 8})


def xrays(n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 1)).astype(np.uint8)


def test_the_identity_view_alone_is_exactly_the_plain_prediction(small_model):
    images = xrays(10)
    plain = small_model.predict(images.astype(np.float32), batch_size=4, verbose=0)
    result = predict_views(tta.keras_predict(small_model, 4), images, (IDENTITY,))
    assert result.probabilities.dtype == np.float32
    assert np.array_equal(result.probabilities, plain)
    assert result.passes == 1 and result.plain_seconds == result.seconds > 0


def test_the_average_over_the_views_is_a_probability_distribution_and_counts_its_cost(small_model):
    images = xrays(9)
    seen = []
    result = predict_views(tta.keras_predict(small_model, 4), images, tta.VIEWS,
                           progress=lambda done, total, message: seen.append((done, total, message)))
    probabilities = result.probabilities
    assert probabilities.shape == (9, 3) and probabilities.dtype == np.float32
    assert np.all(probabilities >= 0) and np.all(probabilities <= 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    plain = small_model.predict(images.astype(np.float32), verbose=0)
    assert not np.allclose(probabilities, plain, atol=1e-6)  # the other views do change it
    assert result.passes == len(tta.VIEWS) == 7 and len(result.view_seconds) == 7
    assert result.seconds > result.plain_seconds > 0
    assert seen[-1] == (9 * 7, 9 * 7, "Forward passes: 63 of 63")


def test_each_view_moves_the_image_as_its_name_says_and_none_flips_it():
    image = np.zeros((1, 100, 100, 1), np.uint8)
    image[0, 50, 20] = 255  # a bright dot left of centre
    where = {view.name: np.unravel_index(np.argmax(apply_view(image, view)[0, ..., 0]), (100, 100))
             for view in tta.VIEWS}
    assert where["as is"] == (50, 20)
    assert where["3% right"] == (50, 23) and where["3% left"] == (50, 17)
    assert where["3% down"] == (53, 20) and where["3% up"] == (47, 20)
    assert where["5% closer"][1] < 20 < where["5% farther"][1]  # away from / towards the centre (49.5)
    assert not any("flip" in view.name for view in tta.VIEWS) and "not left-right symmetric" in tta.NOT_A_VIEW
    border = apply_view(np.full((1, 100, 100, 1), 200, np.uint8), View("shift", shift=(0.0, 0.03)))
    assert border[0, 50, 0, 0] == 0 and border[0, 50, 50, 0] == 200  # uncovered border black, as in training


def test_a_split_is_scored_once_for_the_current_model_and_the_identity_gives_the_saved_predictions(tiny_run_copy):
    run = tiny_run_copy
    saved = run.predictions("test")
    identity = tta.score_split(run, "test", views=(IDENTITY,))
    np.testing.assert_allclose(identity["probabilities"], saved["probabilities"], rtol=0, atol=1e-6)
    assert int(identity["passes"]) == 1 and int(identity["images"]) == len(saved["labels"])
    assert tta.load_saved(run, "test", (IDENTITY,))["seconds"] == identity["seconds"]  # read back, not recomputed
    assert tta.load_saved(run, "test") is None  # saved for other views than the default ones
    os.utime(run.model_path)  # a new model.keras: the saved views are stale
    assert tta.load_saved(run, "test", (IDENTITY,)) is None


def test_evaluate_shows_the_tta_row_with_its_cost_beside_the_plain_numbers(tiny_run_copy):
    run = tiny_run_copy
    threshold = run.summary()["threshold"]
    at = open_page("pages/evaluate.py", {"eval_run": run.id})
    assert_clean(at)
    assert "Score the test split again" in texts(at)
    at.button(key="eval_tta_button").click().run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "with TTA" in d.value.columns)
    assert table.loc["Cost: forward passes per image"].tolist() == ["1", "7"]
    seconds = next(label for label in table.index if label.startswith("Cost: seconds for "))
    assert all(cell.endswith(" s") for cell in table.loc[seconds])
    accuracy = f"Accuracy @ threshold {threshold:.2f}"
    assert table.loc[accuracy, "plain"].split(" (")[0] == f"{run.summary()['test']['accuracy']:.3f}"
    assert "(" in table.loc[accuracy, "with TTA"]  # with its interval
    assert tta.saved_path(run, "test").exists()
    reopened = open_page("pages/evaluate.py", {"eval_run": run.id})  # saved: shown without a click
    assert_clean(reopened)
    assert any("with TTA" in d.value.columns for d in reopened.dataframe)
    assert f"Both columns at threshold {threshold:.2f}" in texts(reopened)


def test_the_diagnose_checkbox_adds_the_tta_probabilities_and_their_cost(tiny_run_copy):
    from tests.test_diagnose_page import xray_upload
    at = open_page("pages/diagnose.py")
    at.checkbox(key="diag_tta").check().run()
    at.file_uploader(key="diag_upload").set_value([xray_upload()]).run()
    assert_clean(at)
    page = texts(at)
    assert "With test-time augmentation: predicted **" in page and "7 forward passes instead of 1" in page
    assert "Research tool, not for clinical use" in page


def test_diagnose_with_tta_gives_the_plain_probabilities_through_the_identity_and_says_its_cost(tiny_run_copy):
    from core.ml.diagnosis import Diagnoser
    from core.present.diagnose import tta_sentence
    from tests.test_diagnose_page import xray_upload
    name, data, _ = xray_upload()
    diagnoser = Diagnoser(tiny_run_copy.path)
    identity = diagnoser.diagnose(data, name, with_tta=True, views=(IDENTITY,))
    assert identity.tta.probabilities == identity.probabilities and identity.tta.predicted == identity.predicted
    result = diagnoser.diagnose(data, name, with_tta=True)
    assert result.tta.passes == 7 and result.tta.seconds > result.tta.plain_seconds > 0
    assert sum(result.tta.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert {"tta_predicted", "tta_score"} <= set(result.row())
    sentence = tta_sentence(result, diagnoser.threshold)
    assert "7 forward passes instead of 1" in sentence and "ms" in sentence
    assert diagnoser.diagnose(data, name).tta is None  # off unless asked
