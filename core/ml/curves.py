"""Threshold-free curves of a run's predictions: ROC (disease vs normal, and one class vs the rest),
precision-recall, F1 against the threshold, the referral curve (accuracy against coverage), and all
of them at once for the Evaluate page (`evaluate_predictions`)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from core.files import json_ready
from core.ml.calibration import calibration
from core.ml.metrics import (
    classification_metrics,
    f1_vs_threshold,
    has_both_classes,
    positive_labels,
    positive_scores,
    predict_positive,
    predict_with_threshold,
    validated,
    validated_binary_view,
    validated_class_names,
    validated_probabilities,
)


# ---------------------------------------------------------------- referral


REFERRAL_COVERAGE = np.round(np.arange(0.05, 1.0001, 0.05), 2)


def sureness(probabilities, class_names, threshold=None) -> np.ndarray:
    """How sure each decision is: the disease score's distance from the threshold when a threshold
    decides (binary view), else the winning class's probability."""
    names = validated_class_names(class_names)
    probs = validated_probabilities(probabilities, names)
    scores = positive_scores(probs, names)
    if threshold is None or scores is None:
        return probs.max(axis=1)
    return np.abs(scores - threshold)


def referral_curve(probabilities, labels, class_names, threshold=None) -> dict:
    """Accuracy (and sensitivity, with a binary view) on the cases kept when the least sure are
    referred to a human, at each coverage (share kept) of REFERRAL_COVERAGE; the kept cases are
    always the surest ones. {"coverage", "kept", "accuracy", "sensitivity" (None without a binary
    view; a None entry when no disease case is kept), "sureness": how sureness was measured}."""
    probs, labels, names = validated(probabilities, labels, class_names)
    predicted = predict_with_threshold(probs, names, threshold)
    order = np.argsort(-sureness(probs, names, threshold), kind="stable")
    correct = (predicted == labels)[order]
    kept = np.maximum(1, np.ceil(REFERRAL_COVERAGE * len(labels) - 1e-9).astype(int))
    accuracy = np.cumsum(correct)[kept - 1] / kept
    truth = positive_labels(labels, names)
    sensitivity = None
    if truth is not None:
        caught = np.cumsum((truth * predict_positive(predicted, names))[order])[kept - 1]
        positives = np.cumsum(truth[order])[kept - 1]
        sensitivity = [float(c / p) if p else None for c, p in zip(caught, positives)]
    decided_by_threshold = threshold is not None and truth is not None
    return json_ready({"coverage": REFERRAL_COVERAGE, "kept": kept, "accuracy": accuracy,
                       "sensitivity": sensitivity,
                       "sureness": "distance of the disease score from the threshold" if decided_by_threshold
                       else "probability of the predicted class"})


# ---------------------------------------------------------------- curves


def roc(probabilities, labels, class_names) -> dict | None:
    """ROC curve of the binary view; None without a binary view or with one class only.

    The first threshold (sklearn's +inf) comes back as None.
    """
    binary_truth, scores = validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None or not has_both_classes(binary_truth):
        return None
    fpr, tpr, thresholds = roc_curve(binary_truth, scores)
    return json_ready(
        {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": roc_auc_score(binary_truth, scores)}
    )


def roc_per_class(probabilities, labels, class_names) -> dict:
    """One-vs-rest ROC per class; classes whose OvR split has a single side are skipped."""
    probs, labels, names = validated(probabilities, labels, class_names)
    curves = {}
    for index, name in enumerate(names):
        is_class = (labels == index).astype(int)
        # Absent class (no positives) or the only class present (no negatives): undefined.
        if not has_both_classes(is_class):
            continue
        fpr, tpr, _ = roc_curve(is_class, probs[:, index])
        curves[name] = {"fpr": fpr, "tpr": tpr, "auc": roc_auc_score(is_class, probs[:, index])}
    return json_ready(curves)


def precision_recall(probabilities, labels, class_names) -> dict | None:
    """Precision-recall curve of the binary view; None without a binary view or with one class."""
    binary_truth, scores = validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None or not has_both_classes(binary_truth):
        return None
    precision, recall, thresholds = precision_recall_curve(binary_truth, scores)
    return json_ready(
        {
            "precision": precision,
            "recall": recall,
            "thresholds": thresholds,
            "average_precision": average_precision_score(binary_truth, scores),
        }
    )


# ---------------------------------------------------------------- everything at once


def evaluate_predictions(probabilities, labels, class_names, threshold=None) -> dict:
    """All metrics and curves for one run's predictions, ready for json.dumps."""
    probs, labels, names = validated(probabilities, labels, class_names)
    return {
        "metrics": classification_metrics(probs, labels, names, threshold),
        "roc": roc(probs, labels, names),
        "roc_per_class": roc_per_class(probs, labels, names),
        "pr": precision_recall(probs, labels, names),
        "f1_threshold": f1_vs_threshold(probs, labels, names),
        "calibration": calibration(probs, labels, names),
    }
