"""Tests for core.ml.metrics, checked against scikit-learn directly (no tensorflow)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from core.ml import metrics
from core.ml import calibration as calibration_lib
from core.ml import curves as curves_lib
from core.ml import intervals as intervals_lib

BINARY_NAMES = ["NORMAL", "PNEUMONIA"]
THREE_CLASS_NAMES = ["normal", "bacterial", "viral"]
FOLDER_NAMES = ["cats", "dogs", "birds"]


def decent_predictions(n_samples, n_classes, seed, skill=0.5):
    """Labels plus probabilities that lean towards the truth: Dirichlet noise mixed with one-hot."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_samples)
    noise = rng.dirichlet(np.ones(n_classes), n_samples)
    probabilities = (1 - skill) * noise + skill * np.eye(n_classes)[labels]
    # Some confidently wrong samples so the task is not trivially separable.
    flipped = rng.random(n_samples) < 0.15
    probabilities[flipped] = rng.dirichlet(np.ones(n_classes), flipped.sum())
    return probabilities, labels


@pytest.fixture
def binary_run():
    probabilities, labels = decent_predictions(200, 2, seed=0)
    return probabilities, labels, BINARY_NAMES


@pytest.fixture
def three_class_run():
    probabilities, labels = decent_predictions(200, 3, seed=1)
    return probabilities, labels, THREE_CLASS_NAMES


@pytest.fixture
def folder_run():
    probabilities, labels = decent_predictions(200, 3, seed=2)
    return probabilities, labels, FOLDER_NAMES


def pneumonia_view(probabilities, labels):
    return 1 - probabilities[:, 0], (labels != 0).astype(int)


# ---------------------------------------------------------------- import hygiene


def test_module_does_not_import_tensorflow_or_streamlit():
    code = (
        "import sys, core.ml.metrics, core.ml.intervals, core.ml.calibration, core.ml.curves; "
        "print(any(m.split('.')[0] in ('tensorflow', 'streamlit', 'keras') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------- binary view


def test_positive_scores_two_classes_is_probability_of_class_one(binary_run):
    probabilities, labels, names = binary_run
    np.testing.assert_allclose(metrics.positive_scores(probabilities, names), probabilities[:, 1])
    np.testing.assert_array_equal(metrics.positive_labels(labels, names), labels == 1)


def test_positive_scores_three_class_is_one_minus_normal(three_class_run):
    probabilities, labels, names = three_class_run
    scores, truth = pneumonia_view(probabilities, labels)
    np.testing.assert_allclose(metrics.positive_scores(probabilities, names), scores)
    np.testing.assert_array_equal(metrics.positive_labels(labels, names), truth)


def test_normal_class_is_found_case_insensitively_anywhere():
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    names = ["Bacterial", "NORMAL", "Viral"]
    np.testing.assert_allclose(metrics.positive_scores(probabilities, names), [0.3, 0.9])
    np.testing.assert_array_equal(metrics.positive_labels([1, 2], names), [0, 1])


def test_no_binary_view_without_normal_class(folder_run):
    probabilities, labels, names = folder_run
    assert metrics.positive_scores(probabilities, names) is None
    assert metrics.positive_labels(labels, names) is None


# ---------------------------------------------------------------- classification metrics vs sklearn


@pytest.mark.parametrize("run", ["binary_run", "three_class_run", "folder_run"])
def test_argmax_metrics_match_sklearn(run, request):
    probabilities, labels, names = request.getfixturevalue(run)
    predicted = probabilities.argmax(axis=1)
    all_classes = list(range(len(names)))
    result = metrics.classification_metrics(probabilities, labels, names)

    assert result["n"] == len(labels)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert result["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, average="macro", zero_division=0)
    )
    assert result["confusion_matrix"] == confusion_matrix(labels, predicted).tolist()
    assert result["log_loss"] == pytest.approx(log_loss(labels, probabilities, labels=all_classes))

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, zero_division=0
    )
    assert list(result["per_class"]) == names
    for i, name in enumerate(names):
        report = result["per_class"][name]
        assert report["precision"] == pytest.approx(precision[i])
        assert report["recall"] == pytest.approx(recall[i])
        assert report["f1"] == pytest.approx(f1[i])
        assert report["support"] == support[i]


def test_binary_auc_ap_brier_match_sklearn(binary_run):
    probabilities, labels, names = binary_run
    result = metrics.classification_metrics(probabilities, labels, names)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1]))
    assert result["average_precision"] == pytest.approx(
        average_precision_score(labels, probabilities[:, 1])
    )
    assert result["brier"] == pytest.approx(brier_score_loss(labels, probabilities[:, 1]))


def test_three_class_auc_is_pneumonia_vs_normal(three_class_run):
    probabilities, labels, names = three_class_run
    scores, truth = pneumonia_view(probabilities, labels)
    result = metrics.classification_metrics(probabilities, labels, names)
    assert result["auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert result["average_precision"] == pytest.approx(average_precision_score(truth, scores))
    assert result["brier"] == pytest.approx(brier_score_loss(truth, scores))
    assert result["macro_ovr_auc"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr")
    )


def test_folder_dataset_gets_macro_ovr_auc_and_no_binary_views(folder_run):
    probabilities, labels, names = folder_run
    result = curves_lib.evaluate_predictions(probabilities, labels, names)
    assert result["metrics"]["auc"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    )
    assert result["metrics"]["average_precision"] is None
    assert result["metrics"]["brier"] is None
    for binary_only in ("roc", "pr", "f1_threshold", "calibration"):
        assert result[binary_only] is None
    assert set(result["roc_per_class"]) == set(names)


def test_normalized_confusion_matrix_rows_sum_to_one_or_zero():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 1])  # class 2 never occurs
    result = metrics.classification_metrics(probabilities, labels, THREE_CLASS_NAMES)
    assert result["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    np.testing.assert_allclose(
        result["confusion_matrix_normalized"], [[1, 0, 0], [0.5, 0.5, 0], [0, 0, 0]]
    )


# ---------------------------------------------------------------- thresholds


def test_two_class_threshold_predicts_class_one_at_or_above(binary_run):
    probabilities, labels, names = binary_run
    predicted = metrics.predict_with_threshold(probabilities, names, threshold=0.3)
    np.testing.assert_array_equal(predicted, (probabilities[:, 1] >= 0.3).astype(int))
    result = metrics.classification_metrics(probabilities, labels, names, threshold=0.3)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))


def test_no_threshold_is_argmax(three_class_run):
    probabilities, _, names = three_class_run
    np.testing.assert_array_equal(
        metrics.predict_with_threshold(probabilities, names), probabilities.argmax(axis=1)
    )


def test_three_class_threshold_picks_normal_or_likeliest_disease(three_class_run):
    probabilities, labels, names = three_class_run
    threshold = 0.7
    predicted = metrics.predict_with_threshold(probabilities, names, threshold)
    is_disease = 1 - probabilities[:, 0] >= threshold
    expected = np.where(is_disease, 1 + probabilities[:, 1:].argmax(axis=1), 0)
    np.testing.assert_array_equal(predicted, expected)
    result = metrics.classification_metrics(probabilities, labels, names, threshold)
    assert result["confusion_matrix"] == confusion_matrix(labels, expected).tolist()


@pytest.mark.parametrize("run", ["binary_run", "three_class_run"])
def test_threshold_zero_predicts_nothing_normal(run, request):
    probabilities, labels, names = request.getfixturevalue(run)
    predicted = metrics.predict_with_threshold(probabilities, names, threshold=0.0)
    assert not np.any(predicted == 0)
    result = metrics.classification_metrics(probabilities, labels, names, threshold=0.0)
    assert sum(row[0] for row in result["confusion_matrix"]) == 0
    assert result["per_class"][names[0]]["recall"] == 0


@pytest.mark.parametrize("run", ["binary_run", "three_class_run"])
def test_threshold_above_one_predicts_everything_normal(run, request):
    probabilities, labels, names = request.getfixturevalue(run)
    predicted = metrics.predict_with_threshold(probabilities, names, threshold=1.0 + 1e-9)
    assert np.all(predicted == 0)
    result = metrics.classification_metrics(probabilities, labels, names, threshold=1.0 + 1e-9)
    assert result["per_class"][names[0]]["recall"] == 1
    assert result["per_class"][names[1]]["precision"] == 0  # zero_division=0, no crash


def test_threshold_one_still_works(three_class_run):
    probabilities, labels, names = three_class_run
    result = curves_lib.evaluate_predictions(probabilities, labels, names, threshold=1.0)
    json.dumps(result, allow_nan=False)


def test_threshold_is_ignored_without_binary_view(folder_run):
    probabilities, _, names = folder_run
    np.testing.assert_array_equal(
        metrics.predict_with_threshold(probabilities, names, threshold=0.9),
        probabilities.argmax(axis=1),
    )


# ---------------------------------------------------------------- curves vs sklearn


def test_roc_matches_sklearn(three_class_run):
    probabilities, labels, names = three_class_run
    scores, truth = pneumonia_view(probabilities, labels)
    fpr, tpr, thresholds = roc_curve(truth, scores)
    result = curves_lib.roc(probabilities, labels, names)
    np.testing.assert_allclose(result["fpr"], fpr)
    np.testing.assert_allclose(result["tpr"], tpr)
    assert result["thresholds"][0] is None  # sklearn's +inf starting point
    np.testing.assert_allclose(result["thresholds"][1:], thresholds[1:])
    assert result["auc"] == pytest.approx(roc_auc_score(truth, scores))


def test_roc_per_class_is_one_vs_rest(three_class_run):
    probabilities, labels, names = three_class_run
    result = curves_lib.roc_per_class(probabilities, labels, names)
    for index, name in enumerate(names):
        truth = (labels == index).astype(int)
        fpr, tpr, _ = roc_curve(truth, probabilities[:, index])
        np.testing.assert_allclose(result[name]["fpr"], fpr)
        np.testing.assert_allclose(result[name]["tpr"], tpr)
        assert result[name]["auc"] == pytest.approx(roc_auc_score(truth, probabilities[:, index]))


def test_roc_per_class_skips_absent_classes():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.4, 0.4, 0.2]])
    result = curves_lib.roc_per_class(probabilities, [0, 1, 1], THREE_CLASS_NAMES)
    assert set(result) == {"normal", "bacterial"}


def test_precision_recall_matches_sklearn(binary_run):
    probabilities, labels, names = binary_run
    precision, recall, thresholds = precision_recall_curve(labels, probabilities[:, 1])
    result = curves_lib.precision_recall(probabilities, labels, names)
    np.testing.assert_allclose(result["precision"], precision)
    np.testing.assert_allclose(result["recall"], recall)
    np.testing.assert_allclose(result["thresholds"], thresholds)
    assert result["average_precision"] == pytest.approx(
        average_precision_score(labels, probabilities[:, 1])
    )


@pytest.mark.parametrize("run", ["binary_run", "three_class_run"])
def test_best_threshold_really_maximises_f1(run, request):
    probabilities, labels, names = request.getfixturevalue(run)
    scores = metrics.positive_scores(probabilities, names)
    truth = metrics.positive_labels(labels, names)
    result = metrics.f1_vs_threshold(probabilities, labels, names, n=51)

    assert len(result["thresholds"]) == len(result["f1"]) == 51
    assert result["thresholds"][0] == 0 and result["thresholds"][-1] == 1
    recomputed = [f1_score(truth, scores >= t, zero_division=0) for t in result["thresholds"]]
    np.testing.assert_allclose(result["f1"], recomputed)
    best_at_threshold = f1_score(truth, scores >= result["best_threshold"], zero_division=0)
    assert result["best_f1"] == pytest.approx(best_at_threshold)
    assert best_at_threshold == pytest.approx(max(recomputed))


def test_f1_ties_go_to_threshold_closest_to_half():
    # Scores far from the middle: every threshold in (0.1, 0.9] separates perfectly.
    probabilities = np.array([[0.9, 0.1], [0.95, 0.05], [0.1, 0.9], [0.05, 0.95]])
    result = metrics.f1_vs_threshold(probabilities, [0, 0, 1, 1], BINARY_NAMES, n=11)
    assert result["best_f1"] == 1
    assert result["best_threshold"] == pytest.approx(0.5)


def test_calibration_matches_sklearn(three_class_run):
    probabilities, labels, names = three_class_run
    scores, truth = pneumonia_view(probabilities, labels)
    prob_true, prob_pred = calibration_curve(truth, scores, n_bins=10, strategy="uniform")
    result = calibration_lib.calibration(probabilities, labels, names, n_bins=10)
    np.testing.assert_allclose(result["prob_true"], prob_true)
    np.testing.assert_allclose(result["prob_pred"], prob_pred)
    assert len(result["counts"]) == len(prob_true)
    assert sum(result["counts"]) == len(labels)
    counts = np.array(result["counts"])
    expected_ece = np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))
    assert result["ece"] == pytest.approx(expected_ece)


def test_calibration_counts_use_sklearn_bin_edges():
    # Scores sitting exactly on bin edges must land in the same bins as sklearn puts them.
    probabilities = np.array([[0.5, 0.5], [0.8, 0.2], [0.2, 0.8], [0.0, 1.0], [1.0, 0.0]])
    labels = [1, 0, 1, 1, 0]
    result = calibration_lib.calibration(probabilities, labels, BINARY_NAMES, n_bins=5)
    prob_true, prob_pred = calibration_curve(labels, probabilities[:, 1], n_bins=5)
    assert len(result["counts"]) == len(prob_pred)
    assert sum(result["counts"]) == 5
    np.testing.assert_allclose(result["prob_pred"], prob_pred)


# ---------------------------------------------------------------- JSON output


def assert_plain_json_types(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json_types(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json_types(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


@pytest.mark.parametrize("run", ["binary_run", "three_class_run", "folder_run"])
def test_evaluate_predictions_is_json_serialisable(run, request):
    probabilities, labels, names = request.getfixturevalue(run)
    result = curves_lib.evaluate_predictions(probabilities, labels, names, threshold=0.5)
    json.dumps(result, allow_nan=False)
    assert_plain_json_types(result)
    assert set(result) == {"metrics", "roc", "roc_per_class", "pr", "f1_threshold", "calibration"}


def test_accepts_plain_lists_and_float32_without_warnings():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 rounding must not trip "do not sum to one"
        result = curves_lib.evaluate_predictions(probabilities.tolist(), [0, 1, 1], ("a", "b"))
    assert result["metrics"]["accuracy"] == pytest.approx(2 / 3)
    json.dumps(result, allow_nan=False)


# ---------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize("only_class", [0, 1])
def test_single_class_in_binary_labels_does_not_crash(only_class):
    probabilities, _ = decent_predictions(50, 2, seed=3)
    labels = np.full(50, only_class)
    result = curves_lib.evaluate_predictions(probabilities, labels, BINARY_NAMES, threshold=0.5)
    json.dumps(result, allow_nan=False)
    assert result["metrics"]["auc"] is None
    assert result["metrics"]["average_precision"] is None
    assert result["metrics"]["brier"] is not None
    assert result["roc"] is None and result["pr"] is None
    assert list(result["roc_per_class"]) == []
    assert result["calibration"] is not None
    assert result["metrics"]["log_loss"] == pytest.approx(
        log_loss(labels, probabilities, labels=[0, 1])
    )


def test_three_class_without_normal_samples_has_no_binary_auc_but_ovr_auc():
    probabilities, labels = decent_predictions(60, 3, seed=4)
    labels = np.where(labels == 0, 1, labels)  # only bacterial and viral remain
    result = curves_lib.evaluate_predictions(probabilities, labels, THREE_CLASS_NAMES)
    json.dumps(result, allow_nan=False)
    assert result["metrics"]["auc"] is None
    present = [1, 2]
    truth = (labels[:, None] == np.array(present)).astype(int)
    assert result["metrics"]["macro_ovr_auc"] == pytest.approx(
        roc_auc_score(truth, probabilities[:, present])
    )
    assert result["metrics"]["confusion_matrix_normalized"][0] == [0, 0, 0]


def test_folder_dataset_with_one_class_has_no_auc():
    probabilities, _ = decent_predictions(20, 3, seed=5)
    result = curves_lib.evaluate_predictions(probabilities, np.full(20, 2), FOLDER_NAMES)
    json.dumps(result, allow_nan=False)
    assert result["metrics"]["auc"] is None
    assert result["roc_per_class"] == {}


def test_all_predictions_one_class():
    probabilities = np.tile([0.1, 0.8, 0.1], (30, 1))
    labels = np.arange(30) % 3
    result = curves_lib.evaluate_predictions(probabilities, labels, THREE_CLASS_NAMES)
    json.dumps(result, allow_nan=False)
    assert result["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert result["metrics"]["per_class"]["normal"]["precision"] == 0
    assert result["metrics"]["auc"] == pytest.approx(0.5)  # constant scores


def test_single_sample():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = curves_lib.evaluate_predictions([[0.3, 0.7]], [1], BINARY_NAMES)
    json.dumps(result, allow_nan=False)
    assert result["metrics"]["n"] == 1
    assert result["metrics"]["accuracy"] == 1


@pytest.mark.parametrize(
    "probabilities, labels, names, message",
    [
        (np.zeros((0, 2)), [], BINARY_NAMES, "empty"),
        ([0.2, 0.8], [1], BINARY_NAMES, "2-D"),
        ([[0.2, 0.8]], [1], THREE_CLASS_NAMES, "columns"),
        ([[0.2, 0.8], [0.5, 0.5]], [1], BINARY_NAMES, "entries"),
        ([[0.2, 0.8]], [[1]], BINARY_NAMES, "1-D"),
        ([[0.2, 0.8]], [2], BINARY_NAMES, r"\[0, 1\]"),
        ([[0.2, 0.8]], [-1], BINARY_NAMES, r"\[0, 1\]"),
        ([[0.2, 0.8]], [0.5], BINARY_NAMES, "whole numbers"),
        ([[np.nan, 0.8]], [1], BINARY_NAMES, "NaN"),
        ([[1.5, -0.5]], [1], BINARY_NAMES, r"\[0, 1\]"),
        ([[1.0]], [0], ["only"], "at least 2"),
    ],
)
def test_invalid_inputs_raise_value_error(probabilities, labels, names, message):
    with pytest.raises(ValueError, match=message):
        curves_lib.evaluate_predictions(probabilities, labels, names)


def test_invalid_grid_sizes_raise(binary_run):
    probabilities, labels, names = binary_run
    with pytest.raises(ValueError):
        metrics.f1_vs_threshold(probabilities, labels, names, n=1)
    with pytest.raises(ValueError):
        calibration_lib.calibration(probabilities, labels, names, n_bins=0)


# ---------------------------------------------------------------- hidden classes and decisions


def test_a_class_never_predicted_is_flagged_with_its_recall():
    names = ["normal", "bacterial", "viral"]
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    # viral images all lean bacterial: the disease-vs-normal view is perfect, viral is never found
    probabilities = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.55, 0.35],
                              [0.1, 0.6, 0.3], [0.05, 0.5, 0.45], [0.2, 0.5, 0.3]])
    result = metrics.classification_metrics(probabilities, labels, names)
    assert result["auc"] == 1.0
    assert result["macro_ovr_auc"] < 1.0
    assert result["recall_per_class"] == {"normal": 1.0, "bacterial": 1.0, "viral": 0.0}
    assert result["never_predicted"] == [{"class": "viral", "support": 3}]
    assert metrics.never_predicted_notes(result) == ["viral: never predicted (0 of 3)"]
    assert result["per_class"]["bacterial"]["predicted"] == 5


def test_a_class_absent_from_the_labels_is_not_flagged(three_class_run):
    probabilities, labels, names = three_class_run
    keep = labels != 2
    result = metrics.classification_metrics(probabilities[keep], labels[keep], names)
    assert all(item["class"] != "viral" for item in result["never_predicted"])


def test_decision_notes_name_the_threshold_when_it_decides():
    names = ["NORMAL", "PNEUMONIA"]
    probabilities = np.array([[0.62, 0.38], [0.3, 0.7]])
    assert metrics.decision_notes(probabilities, names, 0.45) == [
        "disease score 0.38 < threshold 0.45", "disease score 0.70 ≥ threshold 0.45"]
    assert metrics.decision_notes(probabilities, names) == ["P(NORMAL) 0.62", "P(PNEUMONIA) 0.70"]
    three = np.array([[0.2, 0.5, 0.3]])
    assert metrics.decision_notes(three, THREE_CLASS_NAMES, 0.5) == [
        "disease score 0.80 ≥ threshold 0.50, bacterial likeliest (0.50)"]
    # without a disease-vs-normal view the threshold cannot decide: the likeliest class did
    assert metrics.decision_notes(three, FOLDER_NAMES, 0.5) == ["P(dogs) 0.50"]


def test_bootstrap_resamples_patients_and_rejects_bad_settings(binary_run):
    probabilities, labels, names = binary_run
    one_patient = np.array(["p"] * len(labels))
    result = intervals_lib.patient_bootstrap_ci(probabilities, labels, names, one_patient, n_resamples=20)
    # one patient: every resample is the whole set, so the bootstrap says nothing, and one patient is
    # little evidence: accuracy keeps the exact interval of one case, the AUC gets none (never a
    # collapsed interval that reads as certain)
    point = metrics.classification_metrics(probabilities, labels, names)
    low, high = result["accuracy"]
    assert low < point["accuracy"] < high and high - low > 0.9
    assert result["auc"] is None
    with pytest.raises(ValueError, match="n_resamples"):
        intervals_lib.patient_bootstrap_ci(probabilities, labels, names, one_patient, n_resamples=1)
    with pytest.raises(ValueError, match="confidence"):
        intervals_lib.patient_bootstrap_ci(probabilities, labels, names, one_patient, confidence=1.5)


# ----------------------------------------------------------------------------- bootstrap intervals

def patient_predictions(n_patients, images_per_patient=3, seed=0):
    """Binary predictions where each patient's images share one noisy score (correlated within patients)."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n_patients) % 2
    score = np.clip(0.5 + (truth - 0.5) * 0.6 + rng.normal(0, 0.3, n_patients), 0.01, 0.99)
    per_image = np.repeat(score, images_per_patient)
    probabilities = np.c_[1 - per_image, per_image]
    return probabilities, np.repeat(truth, images_per_patient), np.repeat([f"p{i}" for i in range(n_patients)],
                                                                          images_per_patient)


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_patients():
    names = ["NORMAL", "PNEUMONIA"]
    probabilities, labels, patients = patient_predictions(30)
    small = intervals_lib.bootstrap_intervals(probabilities, labels, names, patients)
    # the same 30 patients' results seen 20 times over (600 patients): same estimates, ~sqrt(20)x narrower
    large = intervals_lib.bootstrap_intervals(np.tile(probabilities, (20, 1)), np.tile(labels, 20), names,
                                        [f"{p}-{k}" for k in range(20) for p in patients])
    point = metrics.classification_metrics(probabilities, labels, names)
    assert set(small["intervals"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auc", "average_precision",
                                       "sensitivity", "specificity", "recall:NORMAL", "recall:PNEUMONIA"}
    for name, entry in small["intervals"].items():
        assert entry["low"] <= entry["value"] <= entry["high"], name
        width = lambda result: result["intervals"][name]["high"] - result["intervals"][name]["low"]  # noqa: E731
        assert width(large) < width(small) / 2, name
        assert large["intervals"][name]["value"] == pytest.approx(entry["value"]), name
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "average_precision"):
        assert small["intervals"][key]["value"] == pytest.approx(point[key])
    assert small["intervals"]["recall:PNEUMONIA"]["value"] == pytest.approx(point["recall_per_class"]["PNEUMONIA"])
    assert (small["n_images"], small["n_patients"], small["n_resamples"]) == (90, 30, 1000)


def test_bootstrap_draws_patients_not_images():
    # 40 patients of 5 identical images each: drawing images would treat 200 independent cases and give a
    # narrower interval; drawing patients matches the spread of 40 cases, exactly as if each had one image.
    names = ["NORMAL", "PNEUMONIA"]
    grouped = patient_predictions(40, images_per_patient=5)
    one_each = patient_predictions(40, images_per_patient=1)
    by_patient = intervals_lib.bootstrap_intervals(*grouped[:2], names, grouped[2], seed=3)["intervals"]
    single = intervals_lib.bootstrap_intervals(*one_each[:2], names, one_each[2], seed=3)["intervals"]
    by_image = intervals_lib.bootstrap_intervals(*grouped[:2], names, np.arange(200), seed=3)["intervals"]
    for key in ("accuracy", "auc"):
        assert by_patient[key]["low"] == pytest.approx(single[key]["low"])
        assert by_patient[key]["high"] == pytest.approx(single[key]["high"])
        assert by_image[key]["high"] - by_image[key]["low"] < 0.7 * (by_patient[key]["high"] - by_patient[key]["low"])


def test_bootstrap_intervals_of_three_classes_and_undefined_resamples(three_class_run):
    probabilities, labels, names = three_class_run
    patients = np.arange(len(labels)) // 2
    result = intervals_lib.bootstrap_intervals(probabilities, labels, names, patients, n_resamples=200)
    point = metrics.classification_metrics(probabilities, labels, names)
    assert result["intervals"]["macro_ovr_auc"]["value"] == pytest.approx(point["macro_ovr_auc"])
    # two patients of one class each: resamples with a single class have no AUC and are skipped; the
    # rest all give 1.0, which is no interval (1.000-1.000 would read as certainty)
    tiny = intervals_lib.bootstrap_intervals([[0.8, 0.2], [0.3, 0.7]], [0, 1], ["NORMAL", "PNEUMONIA"], ["a", "b"])
    assert tiny["intervals"]["auc"] == {"value": 1.0, "low": None, "high": None, "same_on_every_resample": True}
    with pytest.raises(ValueError, match="patient_ids has 1 entries"):
        intervals_lib.bootstrap_intervals(probabilities, labels, names, ["x"])


def test_a_small_perfect_set_gets_an_honest_interval_not_certainty():
    # 24 images of 24 patients, every one right: the percentile bootstrap alone gave 1.000 (1.000-1.000)
    scores = np.r_[np.full(12, 0.1), np.full(12, 0.9)]
    labels, patients = np.r_[np.zeros(12, int), np.ones(12, int)], [f"p{i}" for i in range(24)]
    result = intervals_lib.bootstrap_intervals(np.c_[1 - scores, scores], labels, BINARY_NAMES, patients, threshold=0.5)
    found = result["intervals"]
    exact_24, exact_12 = (binomtest(n, n).proportion_ci(0.95, "exact") for n in (24, 12))
    assert (found["accuracy"]["low"], found["accuracy"]["high"]) == pytest.approx((exact_24.low, 1.0))  # 0.858
    assert found["sensitivity"]["low"] == pytest.approx(exact_12.low) and found["sensitivity"]["high"] == 1.0
    assert found["auc"]["low"] is None and found["auc"]["same_on_every_resample"]
    assert "too few patients" in intervals_lib.no_interval_reason(found["auc"])
    assert "Only 24 images of 24 patients" in intervals_lib.small_set_warning(result)
    assert intervals_lib.interval_bounds({"value": 1.0, "low": 1.0, "high": 1.0}) is None  # as older results saved it
    assert all(entry["low"] is None or entry["low"] < entry["high"] for entry in found.values())


def test_exact_bounds_count_patients_not_their_images():
    scores = np.r_[np.full(12, 0.1), np.full(12, 0.9)]
    labels = np.r_[np.zeros(12, int), np.ones(12, int)]
    three_images_each = [f"p{i // 3}" for i in range(24)]  # 8 patients
    found = intervals_lib.bootstrap_intervals(np.c_[1 - scores, scores], labels, BINARY_NAMES, three_images_each,
                                        threshold=0.5)["intervals"]
    assert found["accuracy"]["low"] == pytest.approx(binomtest(8, 8).proportion_ci(0.95, "exact").low)


def test_bootstrap_values_are_the_summarys_own_numbers(binary_run):
    probabilities, labels, names = binary_run
    result = intervals_lib.bootstrap_intervals(probabilities, labels, names, np.arange(len(labels)), threshold=0.3,
                                         n_resamples=50)
    point = metrics.classification_metrics(probabilities, labels, names, threshold=0.3)
    assert result["threshold"] == point["threshold"] == 0.3
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "average_precision", "sensitivity",
                "specificity"):
        assert result["intervals"][key]["value"] == point[key], key  # the same computation, not a copy
    assert point["sensitivity"] == point["recall_per_class"]["PNEUMONIA"]
    assert point["specificity"] == point["recall_per_class"]["NORMAL"]


def test_the_decision_rule_is_named_in_every_thresholded_label(binary_run):
    from core.ml.decisions import decision_rule, metric_label
    probabilities, labels, names = binary_run
    threshold = metrics.decision_threshold(probabilities, labels, names)
    assert threshold == metrics.f1_vs_threshold(probabilities, labels, names)["best_threshold"]
    assert metrics.decision_threshold(probabilities[:, [0, 1, 1]] / probabilities[:, [0, 1, 1]].sum(1, keepdims=True),
                                      labels, ["a", "b", "c"]) is None  # no disease-vs-normal view: argmax
    assert metric_label("Accuracy", "accuracy", 0.43) == "Accuracy @ threshold 0.43"
    assert metric_label("Accuracy", "accuracy", None) == "Accuracy @ argmax"
    assert metric_label("AUC", "auc", 0.43) == "AUC" and decision_rule(None) == "argmax"


# ----------------------------------------------------------------------------- temperature scaling

def overconfident(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += 1.0
    logits *= 4  # far too sure of itself
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities, labels


def test_temperature_scaling_lowers_validation_nll_and_keeps_accuracy():
    probabilities, labels = overconfident()
    names = ["a", "b", "c"]
    temperature = calibration_lib.fit_temperature(probabilities, labels)
    assert 2.0 < temperature < 8.0  # the logits were sharpened by 4
    scaled = calibration_lib.apply_temperature(probabilities, temperature)
    assert np.allclose(scaled.sum(axis=1), 1.0)
    before = metrics.classification_metrics(probabilities, labels, names)
    after = metrics.classification_metrics(scaled, labels, names)
    assert after["log_loss"] < before["log_loss"]
    assert after["accuracy"] == before["accuracy"]
    test = overconfident(seed=1)
    report = calibration_lib.temperature_report({"probabilities": probabilities, "labels": labels, "class_names": names},
                                        {"probabilities": test[0], "labels": test[1], "class_names": names})
    assert report["temperature"] == pytest.approx(temperature)
    assert report["val"]["nll"]["after"] < report["val"]["nll"]["before"]
    assert report["test"]["ece"]["after"] < report["test"]["ece"]["before"]
    assert report["reliability"]["before"]["ece"] == report["test"]["ece"]["before"]
    with pytest.raises(ValueError, match="temperature must be positive"):
        calibration_lib.apply_temperature(probabilities, 0)


# ----------------------------------------------------------------------------- referral

def test_referral_curve_at_full_coverage_is_the_accuracy_and_keeps_the_surest(binary_run):
    probabilities, labels, names = binary_run
    curve = curves_lib.referral_curve(probabilities, labels, names)
    assert curve["coverage"][-1] == 1.0
    assert curve["accuracy"][-1] == pytest.approx(metrics.classification_metrics(probabilities, labels, names)["accuracy"])
    # at 50% coverage: accuracy of exactly the half with the highest winning probability
    half = curve["coverage"].index(0.5)
    kept = np.argsort(-np.asarray(probabilities).max(axis=1), kind="stable")[:curve["kept"][half]]
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    assert curve["accuracy"][half] == pytest.approx(correct[kept].mean())
    with_threshold = curves_lib.referral_curve(probabilities, labels, names, threshold=0.3)
    assert with_threshold["sureness"] == "distance of the disease score from the threshold"
    assert with_threshold["sensitivity"][-1] == pytest.approx(
        intervals_lib.bootstrap_intervals(probabilities, labels, names, np.arange(len(labels)), threshold=0.3,
                                    n_resamples=10)["intervals"]["sensitivity"]["value"])
