"""Evaluation metrics for saved predictions (numpy + scikit-learn only, so it imports fast).

A run's predictions are `probabilities` (N, C), `labels` (N,) ints and `class_names` (C str).
Besides the multi-class metrics there is a "binary view" (disease vs. not): for 2 classes the
score is P(class 1); for more classes with one named "normal" it is 1 - P(normal). Datasets
without such a view get None for the binary-only results.

Every public function returns plain JSON-serialisable Python types (NaN/inf become None).
Here: checking predictions, the binary view, deciding (threshold, argmax) and the metrics at a
decision. Beside it: their intervals (core/ml/intervals.py), calibration (core/ml/calibration.py)
and the threshold-free curves (core/ml/curves.py).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from core.files import json_ready

NORMAL_CLASS_NAME = "normal"
# Room for float error in saved softmax outputs (e.g. float32 rows summing to 1.0000001).
PROBABILITY_TOLERANCE = 1e-4


# ---------------------------------------------------------------- validation


def validated(probabilities, labels, class_names):
    """Check shapes and ranges; return (probabilities float (N, C), labels int (N,), names list)."""
    names = validated_class_names(class_names)
    probs = validated_probabilities(probabilities, names)
    labels = validated_labels(labels, len(names))
    if len(labels) != len(probs):
        raise ValueError(
            f"labels has {len(labels)} entries but probabilities has {len(probs)} rows"
        )
    return probs, labels, names


def validated_class_names(class_names):
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError(f"need at least 2 class names, got {names!r}")
    return names


def validated_probabilities(probabilities, names):
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be 2-D (N, C), got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("probabilities is empty: no predictions to evaluate")
    if probs.shape[1] != len(names):
        raise ValueError(
            f"probabilities has {probs.shape[1]} columns but there are {len(names)} class names"
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contains NaN or infinite values")
    if probs.min() < -PROBABILITY_TOLERANCE or probs.max() > 1 + PROBABILITY_TOLERANCE:
        raise ValueError("probabilities must lie in [0, 1]")
    return np.clip(probs, 0.0, 1.0)


def validated_labels(labels, n_classes):
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {raw.shape}")
    if raw.size == 0:
        raise ValueError("labels is empty: no predictions to evaluate")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise ValueError(f"labels must be integers, got dtype {raw.dtype}")
    if np.issubdtype(raw.dtype, np.floating) and not np.all(raw == np.round(raw)):
        raise ValueError("labels must be whole numbers (class indices)")
    as_int = raw.astype(int)
    if as_int.min() < 0 or as_int.max() >= n_classes:
        raise ValueError(
            f"labels must be class indices in [0, {n_classes - 1}], "
            f"got values from {as_int.min()} to {as_int.max()}"
        )
    return as_int


def has_both_classes(binary_truth) -> bool:
    return len(np.unique(binary_truth)) == 2


# ---------------------------------------------------------------- binary view


def normal_index(class_names):
    lowered = [str(name).strip().lower() for name in class_names]
    return lowered.index(NORMAL_CLASS_NAME) if NORMAL_CLASS_NAME in lowered else None


def binary_view_kind(class_names):
    """'two_class', 'not_normal' or None (no disease-vs-not view for this dataset)."""
    if len(class_names) == 2:
        return "two_class"
    if normal_index(class_names) is not None:
        return "not_normal"
    return None


def positive_scores(probabilities, class_names) -> np.ndarray | None:
    """Disease score per sample: P(class 1) for 2 classes, 1 - P(normal) otherwise, or None."""
    names = validated_class_names(class_names)
    probs = validated_probabilities(probabilities, names)
    kind = binary_view_kind(names)
    if kind == "two_class":
        return probs[:, 1]
    if kind == "not_normal":
        # Clipped because 1 - p can drift just outside [0, 1] through float error.
        return np.clip(1.0 - probs[:, normal_index(names)], 0.0, 1.0)
    return None


def positive_labels(labels, class_names) -> np.ndarray | None:
    """0/1 truth matching positive_scores: label == 1 for 2 classes, label != normal otherwise."""
    names = validated_class_names(class_names)
    labels = validated_labels(labels, len(names))
    kind = binary_view_kind(names)
    if kind == "two_class":
        return (labels == 1).astype(int)
    if kind == "not_normal":
        return (labels != normal_index(names)).astype(int)
    return None


def binary_view(probabilities, labels, class_names):
    """(truth 0/1, scores) for the binary view, or (None, None) when there is none."""
    scores = positive_scores(probabilities, class_names)
    if scores is None:
        return None, None
    return positive_labels(labels, class_names), scores


def validated_binary_view(probabilities, labels, class_names):
    """binary_view of predictions checked by validated."""
    return binary_view(*validated(probabilities, labels, class_names))


# ---------------------------------------------------------------- predictions


def predict_with_threshold(probabilities, class_names, threshold=None) -> np.ndarray:
    """Predicted class indices: argmax, or the binary view's score >= threshold when one is given.

    With a threshold on a dataset that has no binary view, the threshold is ignored (argmax).
    """
    names = validated_class_names(class_names)
    probs = validated_probabilities(probabilities, names)
    argmax = probs.argmax(axis=1)
    kind = binary_view_kind(names)
    if threshold is None or kind is None:
        return argmax
    is_positive = positive_scores(probs, names) >= threshold
    if kind == "two_class":
        return is_positive.astype(int)
    normal = normal_index(names)
    # Among the disease classes pick the likeliest, i.e. argmax with normal masked out.
    disease_only = probs.copy()
    disease_only[:, normal] = -np.inf
    return np.where(is_positive, disease_only.argmax(axis=1), normal)


def predict_positive(predicted, class_names) -> np.ndarray:
    """0/1 per predicted class index: 1 when it is a disease class in the binary view."""
    names = validated_class_names(class_names)
    predicted = np.asarray(predicted)
    if binary_view_kind(names) == "two_class":
        return (predicted == 1).astype(int)
    return (predicted != normal_index(names)).astype(int)



# ---------------------------------------------------------------- the run's decision

def decision_threshold(probabilities, labels, class_names) -> float | None:
    """A run's decision threshold, chosen on its validation predictions: the disease-score threshold
    with the best F1 (f1_vs_threshold); None, i.e. argmax, for classes without a disease-vs-normal
    view. A run's summary, Evaluate, the model card and the CLI decide with it by default; their
    labels name it (core.ml.decisions)."""
    best = f1_vs_threshold(probabilities, labels, class_names)
    return best["best_threshold"] if best else None


def _closest_to_half_among_best(thresholds, f1_values):
    best_f1 = np.max(f1_values)
    tied = np.flatnonzero(f1_values == best_f1)
    return tied[np.argmin(np.abs(thresholds[tied] - 0.5))]



def f1_vs_threshold(probabilities, labels, class_names, n=101) -> dict | None:
    """F1 of the positive class (binary view) at n thresholds evenly spaced in [0, 1].

    best_threshold is the grid point with the highest F1; ties go to the one closest to 0.5.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2 grid points, got {n}")
    binary_truth, scores = validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None:
        return None
    thresholds = np.linspace(0.0, 1.0, n)
    f1_values = np.array(
        [f1_score(binary_truth, (scores >= t).astype(int), zero_division=0) for t in thresholds]
    )
    best = _closest_to_half_among_best(thresholds, f1_values)
    return json_ready(
        {
            "thresholds": thresholds,
            "f1": f1_values,
            "best_threshold": thresholds[best],
            "best_f1": f1_values[best],
        }
    )



# ---------------------------------------------------------------- metrics


def _per_class_report(labels, predicted, class_names):
    all_classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=all_classes, zero_division=0
    )
    predicted_counts = np.bincount(predicted, minlength=len(class_names))
    return {
        name: {
            "precision": precision[i],
            "recall": recall[i],
            "f1": f1[i],
            "support": support[i],
            "predicted": predicted_counts[i],
        }
        for i, name in enumerate(class_names)
    }


def never_predicted(matrix, class_names) -> list[dict]:
    """Classes present in the labels that the model never predicts, from a confusion matrix
    (rows: true class, columns: predicted): [{"class", "support"}].

    A headline AUC can look excellent while a whole class is silently folded into another.
    """
    counts = np.asarray(matrix)
    return [{"class": name, "support": int(counts[i].sum())} for i, name in enumerate(class_names)
            if counts[i].sum() > 0 and counts[:, i].sum() == 0]


def never_predicted_notes(metrics: dict) -> list[str]:
    """'viral: never predicted (0 of 168)' for each class the model never predicts."""
    return [f"{item['class']}: never predicted (0 of {item['support']})"
            for item in metrics.get("never_predicted") or []]


def _balanced_accuracy(labels, predicted):
    with warnings.catch_warnings():
        # sklearn warns when the test set lacks a predicted class, or has a single class;
        # the score (mean recall over the classes present) is still well defined.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return balanced_accuracy_score(labels, predicted)


def _log_loss(probabilities, labels, n_classes):
    row_sums = probabilities.sum(axis=1, keepdims=True)
    # float32 softmax rows miss 1 by ~1e-7, which sklearn's float64 check flags; rescale only
    # that noise away so genuinely unnormalised scores still get sklearn's warning.
    if np.allclose(row_sums, 1.0, rtol=0, atol=PROBABILITY_TOLERANCE):
        probabilities = probabilities / row_sums
    return log_loss(labels, probabilities, labels=list(range(n_classes)))


def _macro_ovr_auc(probabilities, labels):
    """Macro one-vs-rest ROC AUC over the classes present in labels; None if fewer than 2."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    # One indicator column per present class: sklearn's multilabel macro AUC is exactly the
    # OvR macro AUC, and unlike multi_class="ovr" it tolerates classes absent from the test set.
    truth = (labels[:, None] == present[None, :]).astype(int)
    return roc_auc_score(truth, probabilities[:, present], average="macro")


def _binary_auc(binary_truth, scores):
    if binary_truth is None or not has_both_classes(binary_truth):
        return None
    return roc_auc_score(binary_truth, scores)


def _binary_average_precision(binary_truth, scores):
    if binary_truth is None or not has_both_classes(binary_truth):
        return None
    return average_precision_score(binary_truth, scores)


def _binary_brier(binary_truth, scores):
    if binary_truth is None:
        return None
    return brier_score_loss(binary_truth, scores, labels=[0, 1])


def _sensitivity_specificity(binary_truth, predicted, class_names) -> dict:
    """Recall of disease and of normal in the binary view, at the decisions made; {} without one."""
    if binary_truth is None:
        return {}
    positive = predict_positive(predicted, class_names)
    found = {"sensitivity": (binary_truth, positive), "specificity": (1 - binary_truth, 1 - positive)}
    return {name: float((truth * decided).sum() / truth.sum()) if truth.sum() else None
            for name, (truth, decided) in found.items()}


def classification_metrics(probabilities, labels, class_names, threshold=None) -> dict:
    """Headline metrics, per-class report and confusion matrices for one set of predictions, with
    decisions at `threshold` on the disease score (None: argmax). "threshold" in the result is the
    one that decided (None when the classes have no disease-vs-normal view, which ignores it).

    macro_f1 averages over the classes that occur in labels or predictions (sklearn's default);
    per_class lists every class, with zeros and support 0 for absent ones. This is the one
    computation of these numbers: bootstrap_intervals takes its values from here.
    """
    probs, labels, names = validated(probabilities, labels, class_names)
    predicted = predict_with_threshold(probs, names, threshold)
    binary_truth, scores = binary_view(probs, labels, names)
    all_classes = list(range(len(names)))
    macro_ovr_auc = _macro_ovr_auc(probs, labels)
    per_class = _per_class_report(labels, predicted, names)
    matrix = confusion_matrix(labels, predicted, labels=all_classes)
    metrics = {
        "n": len(labels),
        "threshold": threshold if scores is not None else None,
        "accuracy": accuracy_score(labels, predicted),
        "balanced_accuracy": _balanced_accuracy(labels, predicted),
        "macro_f1": f1_score(labels, predicted, average="macro", zero_division=0),
        "per_class": per_class,
        "recall_per_class": {name: row["recall"] for name, row in per_class.items()},
        "never_predicted": never_predicted(matrix, names),
        "confusion_matrix": matrix,
        "confusion_matrix_normalized": confusion_matrix(
            labels, predicted, labels=all_classes, normalize="true"
        ),
        # "auc" is the headline: disease vs normal when there is that view, else macro OvR.
        "auc": macro_ovr_auc if scores is None else _binary_auc(binary_truth, scores),
        "macro_ovr_auc": macro_ovr_auc,
        "average_precision": _binary_average_precision(binary_truth, scores),
        **_sensitivity_specificity(binary_truth, predicted, names),
        "log_loss": _log_loss(probs, labels, len(names)),
        "brier": _binary_brier(binary_truth, scores),
    }
    return json_ready(metrics)


# ---------------------------------------------------------------- explaining one decision


def decision_notes(probabilities, class_names, threshold=None) -> list[str]:
    """Why each row got its predicted class, in words.

    With a threshold on a dataset with a disease-vs-normal view, the threshold decided:
    'disease score 0.38 < threshold 0.45' (plus the likeliest disease class with 3+ classes).
    Otherwise the most likely class won: 'P(NORMAL) 0.62'.
    """
    names = validated_class_names(class_names)
    probs = validated_probabilities(probabilities, names)
    predicted = predict_with_threshold(probs, names, threshold)
    scores = positive_scores(probs, names)
    if threshold is None or scores is None:
        return [f"P({names[p]}) {probs[i, p]:.2f}" for i, p in enumerate(predicted)]
    notes = []
    normal = normal_index(names) if len(names) > 2 else None
    for i, p in enumerate(predicted):
        relation = "≥" if scores[i] >= threshold else "<"
        note = f"disease score {scores[i]:.2f} {relation} threshold {threshold:.2f}"
        if normal is not None and p != normal:
            note += f", {names[p]} likeliest ({probs[i, p]:.2f})"
        notes.append(note)
    return notes
