"""Evaluation metrics for saved predictions (numpy + scikit-learn only, so it imports fast).

A run's predictions are `probabilities` (N, C), `labels` (N,) ints and `class_names` (C str).
Besides the multi-class metrics there is a "binary view" (disease vs. not): for 2 classes the
score is P(class 1); for more classes with one named "normal" it is 1 - P(normal). Datasets
without such a view get None for the binary-only results.

Every public function returns plain JSON-serialisable Python types (NaN/inf become None).
"""

from __future__ import annotations

import warnings

import numpy as np
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

from core.files import json_ready

NORMAL_CLASS_NAME = "normal"
# Room for float error in saved softmax outputs (e.g. float32 rows summing to 1.0000001).
PROBABILITY_TOLERANCE = 1e-4


# ---------------------------------------------------------------- validation


def _validated(probabilities, labels, class_names):
    """Check shapes and ranges; return (probabilities float (N, C), labels int (N,), names list)."""
    names = _validated_class_names(class_names)
    probs = _validated_probabilities(probabilities, names)
    labels = _validated_labels(labels, len(names))
    if len(labels) != len(probs):
        raise ValueError(
            f"labels has {len(labels)} entries but probabilities has {len(probs)} rows"
        )
    return probs, labels, names


def _validated_class_names(class_names):
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError(f"need at least 2 class names, got {names!r}")
    return names


def _validated_probabilities(probabilities, names):
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


def _validated_labels(labels, n_classes):
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


def _has_both_classes(binary_truth) -> bool:
    return len(np.unique(binary_truth)) == 2


# ---------------------------------------------------------------- binary view


def _normal_index(class_names):
    lowered = [str(name).strip().lower() for name in class_names]
    return lowered.index(NORMAL_CLASS_NAME) if NORMAL_CLASS_NAME in lowered else None


def _binary_view_kind(class_names):
    """'two_class', 'not_normal' or None (no disease-vs-not view for this dataset)."""
    if len(class_names) == 2:
        return "two_class"
    if _normal_index(class_names) is not None:
        return "not_normal"
    return None


def positive_scores(probabilities, class_names) -> np.ndarray | None:
    """Disease score per sample: P(class 1) for 2 classes, 1 - P(normal) otherwise, or None."""
    names = _validated_class_names(class_names)
    probs = _validated_probabilities(probabilities, names)
    kind = _binary_view_kind(names)
    if kind == "two_class":
        return probs[:, 1]
    if kind == "not_normal":
        # Clipped because 1 - p can drift just outside [0, 1] through float error.
        return np.clip(1.0 - probs[:, _normal_index(names)], 0.0, 1.0)
    return None


def positive_labels(labels, class_names) -> np.ndarray | None:
    """0/1 truth matching positive_scores: label == 1 for 2 classes, label != normal otherwise."""
    names = _validated_class_names(class_names)
    labels = _validated_labels(labels, len(names))
    kind = _binary_view_kind(names)
    if kind == "two_class":
        return (labels == 1).astype(int)
    if kind == "not_normal":
        return (labels != _normal_index(names)).astype(int)
    return None


def _binary_view(probabilities, labels, class_names):
    """(truth 0/1, scores) for the binary view, or (None, None) when there is none."""
    scores = positive_scores(probabilities, class_names)
    if scores is None:
        return None, None
    return positive_labels(labels, class_names), scores


def _validated_binary_view(probabilities, labels, class_names):
    """_binary_view of predictions checked by _validated."""
    return _binary_view(*_validated(probabilities, labels, class_names))


# ---------------------------------------------------------------- predictions


def predict_with_threshold(probabilities, class_names, threshold=None) -> np.ndarray:
    """Predicted class indices: argmax, or the binary view's score >= threshold when one is given.

    With a threshold on a dataset that has no binary view, the threshold is ignored (argmax).
    """
    names = _validated_class_names(class_names)
    probs = _validated_probabilities(probabilities, names)
    argmax = probs.argmax(axis=1)
    kind = _binary_view_kind(names)
    if threshold is None or kind is None:
        return argmax
    is_positive = positive_scores(probs, names) >= threshold
    if kind == "two_class":
        return is_positive.astype(int)
    normal = _normal_index(names)
    # Among the disease classes pick the likeliest, i.e. argmax with normal masked out.
    disease_only = probs.copy()
    disease_only[:, normal] = -np.inf
    return np.where(is_positive, disease_only.argmax(axis=1), normal)


# ---------------------------------------------------------------- the run's decision

def decision_threshold(probabilities, labels, class_names) -> float | None:
    """A run's decision threshold, chosen on its validation predictions: the disease-score threshold
    with the best F1 (f1_vs_threshold); None, i.e. argmax, for classes without a disease-vs-normal
    view. A run's summary, Evaluate, the model card and the CLI decide with it by default; their
    labels name it (core.ml.decisions)."""
    best = f1_vs_threshold(probabilities, labels, class_names)
    return best["best_threshold"] if best else None


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
    if binary_truth is None or not _has_both_classes(binary_truth):
        return None
    return roc_auc_score(binary_truth, scores)


def _binary_average_precision(binary_truth, scores):
    if binary_truth is None or not _has_both_classes(binary_truth):
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
    probs, labels, names = _validated(probabilities, labels, class_names)
    predicted = predict_with_threshold(probs, names, threshold)
    binary_truth, scores = _binary_view(probs, labels, names)
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


# ---------------------------------------------------------------- uncertainty


def patient_bootstrap_ci(probabilities, labels, class_names, patient_ids, threshold=None,
                         n_resamples=500, confidence=0.95, seed=0) -> dict:
    """Bootstrap confidence intervals of accuracy and the headline AUC, resampling PATIENTS
    (bootstrap_intervals, reduced to the two numbers the common-split comparison shows).

    Returns {"accuracy": [low, high], "auc": [low, high] or None, "n_resamples", "confidence"}.
    """
    result = bootstrap_intervals(probabilities, labels, class_names, patient_ids, threshold,
                                 n_resamples, confidence, seed)
    spans = {name: None if entry["low"] is None else [entry["low"], entry["high"]]
             for name, entry in result["intervals"].items()}
    return {"accuracy": spans["accuracy"], "auc": spans["auc"], "n_resamples": n_resamples,
            "confidence": confidence}


# Resamples evaluated at once: (chunk, N) weight matrices stay small for large test sets.
BOOTSTRAP_CHUNK = 250
# Fewer patients than this and a bootstrap interval says little (a perfect score on every resample
# gives 1.000-1.000): small_set_warning says so.
SMALL_SET_PATIENTS = 50


def bootstrap_intervals(probabilities, labels, class_names, patient_ids, threshold=None,
                        n_resamples=1000, confidence=0.95, seed=0) -> dict:
    """Percentile bootstrap intervals of every headline metric, resampling PATIENTS.

    Images of one patient are correlated, so whole patients are drawn with replacement; a drawn
    patient's images all enter the resample (as integer weights). A resample where a metric is
    undefined (e.g. AUC with one class) is skipped for that metric. "value" is classification_metrics'
    number on all the data. Metrics: accuracy, balanced_accuracy, macro_f1, auc, macro_ovr_auc (3+
    classes), average_precision, sensitivity and specificity (binary view at the threshold), recall:<class>.

    A proportion (accuracy, sensitivity, specificity, a recall) gets at least its exact Clopper-Pearson
    interval, counting patients: n the patients among its cases, k its value times n (one image per
    patient: the plain exact interval). So a small set never reads as certain (24 of 24 right:
    0.858-1.000), and a patient's images never count as independent evidence. Any other metric that
    is the same on every resample gets no interval ("same_on_every_resample"); small_set_warning
    speaks for a set of fewer than SMALL_SET_PATIENTS patients.
    """
    if n_resamples < 10:
        raise ValueError(f"n_resamples must be at least 10, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    probs, labels, names = _validated(probabilities, labels, class_names)
    patients = np.asarray(patient_ids).astype(str)
    if patients.shape != labels.shape:
        raise ValueError(f"patient_ids has {len(patients)} entries but labels has {len(labels)}")
    evaluate = _WeightedMetrics(probs, labels, names, threshold)
    point = _point_values(classification_metrics(probs, labels, names, threshold),
                          evaluate(np.ones((1, len(labels)))))
    _, inverse = np.unique(patients, return_inverse=True)
    n_patients = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in point}
    for start in range(0, n_resamples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, n_resamples - start)
        # How often each patient is drawn in n_patients draws with replacement.
        counts = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=size)
        for name, values in evaluate(counts[:, inverse].astype(float)).items():
            samples[name].append(values)
    intervals = {name: _percentile_interval(point[name], np.concatenate(samples[name]), confidence)
                 for name in point}
    for name, cases in evaluate.proportion_cases().items():
        intervals[name] = _with_exact_bounds(intervals[name], len(np.unique(inverse[cases])), confidence)
    decided_at = threshold if _binary_view_kind(names) is not None else None
    return {"intervals": intervals, "threshold": decided_at, "n_images": int(len(labels)),
            "n_patients": n_patients, "n_resamples": int(n_resamples), "confidence": float(confidence)}


def _with_exact_bounds(entry: dict, n: int, confidence: float) -> dict:
    """A proportion's bootstrap interval widened to contain the exact (Clopper-Pearson) interval of
    its value over `n` cases (beta quantiles, so k = value * n need not be whole)."""
    from scipy.stats import beta
    value = entry["value"]
    if value is None or n == 0:
        return entry
    k, tail = value * n, (1 - confidence) / 2
    exact_low = 0.0 if value <= 0 else float(beta.ppf(tail, k, n - k + 1))
    exact_high = 1.0 if value >= 1 else float(beta.ppf(1 - tail, k + 1, n - k))
    low = exact_low if entry["low"] is None else min(entry["low"], exact_low)
    high = exact_high if entry["high"] is None else max(entry["high"], exact_high)
    return {"value": value, "low": float(low), "high": float(high)}


def interval_bounds(entry: dict | None) -> tuple[float, float] | None:
    """(low, high) of a bootstrap_intervals entry that has an interval; None when it has none, or
    when it is zero-width (saved before such intervals were dropped: it would read as certainty)."""
    if not entry or entry.get("low") is None or entry.get("high") is None or entry["low"] >= entry["high"]:
        return None
    return entry["low"], entry["high"]


def no_interval_reason(entry: dict | None) -> str:
    """Why a bootstrap_intervals entry has no interval, as the pages and the model card say it."""
    if entry and (entry.get("same_on_every_resample") or entry.get("low") is not None):
        return "no interval: the same on every resample, too few patients to bound it"
    return "no interval: undefined on resamples"


def small_set_warning(result: dict) -> str | None:
    """A warning for bootstrap_intervals of a small set; None for a set large enough."""
    if result.get("n_patients", SMALL_SET_PATIENTS) >= SMALL_SET_PATIENTS:
        return None
    return (f"Only {result['n_images']} images of {result['n_patients']} patients: every interval is wide "
            f"and rough, and a perfect score on so few cases is weak evidence. Proportions (accuracy, "
            f"sensitivity, specificity, recalls) carry at least their exact Clopper-Pearson interval.")


def _point_values(metrics: dict, weighted: dict) -> dict:
    """Each bootstrapped metric's value on all the data, as classification_metrics gives it (so a
    number reads the same here as in a run's summary); None where it is undefined."""
    found = {**metrics, **{f"recall:{name}": value for name, value in metrics["recall_per_class"].items()}}
    return {name: found.get(name) if np.isfinite(values[0]) else None for name, values in weighted.items()}


def _percentile_interval(value, samples, confidence) -> dict:
    defined = samples[np.isfinite(samples)]
    if value is None or not len(defined):
        return {"value": value, "low": None, "high": None}
    if np.all(defined == defined[0]):  # e.g. a perfect AUC on few patients: 1.000-1.000 is no certainty
        return {"value": value, "low": None, "high": None, "same_on_every_resample": True}
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return {"value": value, "low": float(low), "high": float(high)}


class _WeightedMetrics:
    """The headline metrics of fixed predictions under rows of per-image weights (B, N): a resample
    that draws an image k times gives it weight k, so each row's metric equals sklearn's on the
    resample, and all rows are computed at once. Undefined values are NaN."""

    def __init__(self, probs, labels, names, threshold):
        self.probs, self.labels, self.names = probs, labels, names
        self.predicted = predict_with_threshold(probs, names, threshold)
        self.truth, self.scores = _binary_view(probs, labels, names)
        self.onehot_true = labels[:, None] == np.arange(len(names))[None, :]
        self.onehot_pred = self.predicted[:, None] == np.arange(len(names))[None, :]

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        correct = (self.predicted == self.labels).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            support = weights @ self.onehot_true                       # (B, C)
            hits = weights @ (self.onehot_true & self.onehot_pred)      # true positives per class
            predicted = weights @ self.onehot_pred
            recall = hits / support
            f1_terms = support + predicted                              # 2tp + fp + fn
            f1 = np.where(f1_terms > 0, 2 * hits / f1_terms, np.nan)
            out = {"accuracy": weights @ correct / weights.sum(axis=1),
                   "balanced_accuracy": _row_nanmean(np.where(support > 0, recall, np.nan)),
                   "macro_f1": _row_nanmean(f1)}
            ovr = self._macro_ovr_auc(weights, support)
            out["auc"] = ovr if self.scores is None else _weighted_auc(self.scores, self.truth, weights)
            if len(self.names) > 2:
                out["macro_ovr_auc"] = ovr
            if self.scores is not None:
                out.update(self._binary_view_metrics(weights))
            for i, name in enumerate(self.names):
                out[f"recall:{name}"] = recall[:, i]
        return out

    def proportion_cases(self) -> dict[str, np.ndarray]:
        """Each metric that is a share of images: which images it is a share of."""
        found = {"accuracy": np.ones(len(self.labels), dtype=bool)}
        found.update({f"recall:{name}": self.labels == i for i, name in enumerate(self.names)})
        if self.scores is not None:
            found.update(sensitivity=self.truth == 1, specificity=self.truth == 0)
        return found

    def _macro_ovr_auc(self, weights, support):
        per_class = np.stack([_weighted_auc(self.probs[:, i], self.onehot_true[:, i].astype(int), weights)
                              for i in range(len(self.names))], axis=1)
        present = support > 0
        per_class = np.where(present, per_class, np.nan)
        return np.where(present.sum(axis=1) >= 2, _row_nanmean(per_class), np.nan)

    def _binary_view_metrics(self, weights):
        positive_prediction = predict_positive(self.predicted, self.names).astype(float)
        positives = weights @ self.truth
        negatives = weights @ (1 - self.truth)
        return {"average_precision": _weighted_average_precision(self.scores, self.truth, weights),
                "sensitivity": (weights @ (self.truth * positive_prediction)) / positives,
                "specificity": (weights @ ((1 - self.truth) * (1 - positive_prediction))) / negatives}


def _row_nanmean(values):
    """Mean of each row over its defined entries; NaN for a row with none (without numpy's warning)."""
    defined = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0.0).sum(axis=1) / defined.sum(axis=1)


def predict_positive(predicted, class_names) -> np.ndarray:
    """0/1 per predicted class index: 1 when it is a disease class in the binary view."""
    names = _validated_class_names(class_names)
    predicted = np.asarray(predicted)
    if _binary_view_kind(names) == "two_class":
        return (predicted == 1).astype(int)
    return (predicted != _normal_index(names)).astype(int)


def _tie_groups(sorted_scores):
    """For scores sorted ascending: the first and last position of each position's tie group."""
    starts_new = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    group = np.cumsum(starts_new) - 1
    firsts = np.flatnonzero(starts_new)
    lasts = np.r_[firsts[1:] - 1, len(sorted_scores) - 1]
    return firsts[group], lasts[group]


def _weighted_auc(scores, truth, weights):
    """ROC AUC per weight row (Mann-Whitney, ties count half); NaN without both classes."""
    order = np.argsort(scores, kind="stable")
    first, last = _tie_groups(scores[order])
    w = weights[:, order]
    is_pos = truth[order].astype(float)
    cum_neg = np.cumsum(w * (1 - is_pos), axis=1)
    below = np.where(first > 0, cum_neg[:, np.maximum(first - 1, 0)], 0.0)
    equal = cum_neg[:, last] - below
    pos_w, neg_w = (w * is_pos).sum(axis=1), cum_neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * is_pos * (below + 0.5 * equal)).sum(axis=1) / (pos_w * neg_w)


def _weighted_average_precision(scores, truth, weights):
    """sklearn's average precision (sum of recall steps times precision) per weight row."""
    order = np.argsort(-scores, kind="stable")
    _, last = _tie_groups(-scores[order])
    is_end = np.r_[last[:-1] != last[1:], True]  # last position of each threshold's tie group
    w = weights[:, order]
    tp = np.cumsum(w * truth[order], axis=1)[:, is_end]
    seen = np.cumsum(w, axis=1)[:, is_end]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall = tp / tp[:, -1:]
        steps = np.diff(np.c_[np.zeros(len(w)), recall], axis=1)
        both_classes = (tp[:, -1] > 0) & (seen[:, -1] > tp[:, -1])  # as classification_metrics: None otherwise
        return np.where(both_classes, (steps * precision).sum(axis=1), np.nan)


# ---------------------------------------------------------------- temperature scaling

TEMPERATURE_RANGE = (0.05, 20.0)
_LOG_FLOOR = 1e-12


def apply_temperature(probabilities, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens, T < 1 sharpens; the ranking of classes never changes."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(np.asarray(probabilities, dtype=float), _LOG_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _nll(probabilities, labels) -> float:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], _LOG_FLOOR, 1.0)
    return float(-np.log(picked).mean())


def fit_temperature(probabilities, labels) -> float:
    """The temperature in TEMPERATURE_RANGE minimising the negative log-likelihood of softmax(log p / T)
    on these (validation) predictions."""
    from scipy.optimize import minimize_scalar
    probs = _validated_probabilities(probabilities, [str(i) for i in range(np.shape(probabilities)[1])])
    labels = _validated_labels(labels, probs.shape[1])
    if len(labels) != len(probs):
        raise ValueError(f"labels has {len(labels)} entries but probabilities has {len(probs)} rows")
    # Searched in log T: the likelihood changes as much from 0.1 to 0.2 as from 10 to 20.
    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(lambda log_t: _nll(apply_temperature(probs, np.exp(log_t)), labels),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def top_label_reliability(probabilities, labels, n_bins=10) -> dict:
    """Reliability of the most likely class: per confidence bin the mean confidence, the accuracy and
    the count; ECE is the count-weighted gap (works for any number of classes)."""
    probs, labels = np.asarray(probabilities, dtype=float), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    bins = np.clip(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence, side="right"), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    kept = counts > 0
    mean_conf = np.bincount(bins, confidence, n_bins)[kept] / counts[kept]
    accuracy = np.bincount(bins, correct, n_bins)[kept] / counts[kept]
    ece = float(np.sum(counts[kept] / len(labels) * np.abs(accuracy - mean_conf)))
    return json_ready({"confidence": mean_conf, "accuracy": accuracy, "counts": counts[kept], "ece": ece})


def _multiclass_brier(probabilities, labels) -> float:
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def _calibration_numbers(probs, labels, temperature) -> dict:
    scaled = apply_temperature(probs, temperature)
    return {"nll": {"before": _nll(probs, labels), "after": _nll(scaled, labels)},
            "ece": {"before": top_label_reliability(probs, labels)["ece"],
                    "after": top_label_reliability(scaled, labels)["ece"]},
            "brier": {"before": _multiclass_brier(probs, labels), "after": _multiclass_brier(scaled, labels)}}


def temperature_report(val: dict, test: dict) -> dict:
    """Temperature scaling fitted on `val`, applied to `test` (each {probabilities, labels, class_names}):
    {"temperature", "val" and "test": {nll, ece, brier: {before, after}}, "reliability": {before,
    after} (top-label curves of test)}. ECE is top-label; Brier sums over classes."""
    val_probs, val_labels, names = _validated(val["probabilities"], val["labels"], val["class_names"])
    test_probs, test_labels, test_names = _validated(test["probabilities"], test["labels"], test["class_names"])
    if test_names != names:
        raise ValueError(f"val and test have different classes: {names} and {test_names}")
    temperature = fit_temperature(val_probs, val_labels)
    return json_ready({
        "temperature": temperature,
        "val": _calibration_numbers(val_probs, val_labels, temperature),
        "test": _calibration_numbers(test_probs, test_labels, temperature),
        "reliability": {"before": top_label_reliability(test_probs, test_labels),
                        "after": top_label_reliability(apply_temperature(test_probs, temperature), test_labels)},
    })


# ---------------------------------------------------------------- referral


REFERRAL_COVERAGE = np.round(np.arange(0.05, 1.0001, 0.05), 2)


def sureness(probabilities, class_names, threshold=None) -> np.ndarray:
    """How sure each decision is: the disease score's distance from the threshold when a threshold
    decides (binary view), else the winning class's probability."""
    names = _validated_class_names(class_names)
    probs = _validated_probabilities(probabilities, names)
    scores = positive_scores(probs, names)
    if threshold is None or scores is None:
        return probs.max(axis=1)
    return np.abs(scores - threshold)


def referral_curve(probabilities, labels, class_names, threshold=None) -> dict:
    """Accuracy (and sensitivity, with a binary view) on the cases kept when the least sure are
    referred to a human, at each coverage (share kept) of REFERRAL_COVERAGE; the kept cases are
    always the surest ones. {"coverage", "kept", "accuracy", "sensitivity" (None without a binary
    view; a None entry when no disease case is kept), "sureness": how sureness was measured}."""
    probs, labels, names = _validated(probabilities, labels, class_names)
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


# ---------------------------------------------------------------- explaining one decision


def decision_notes(probabilities, class_names, threshold=None) -> list[str]:
    """Why each row got its predicted class, in words.

    With a threshold on a dataset with a disease-vs-normal view, the threshold decided:
    'disease score 0.38 < threshold 0.45' (plus the likeliest disease class with 3+ classes).
    Otherwise the most likely class won: 'P(NORMAL) 0.62'.
    """
    names = _validated_class_names(class_names)
    probs = _validated_probabilities(probabilities, names)
    predicted = predict_with_threshold(probs, names, threshold)
    scores = positive_scores(probs, names)
    if threshold is None or scores is None:
        return [f"P({names[p]}) {probs[i, p]:.2f}" for i, p in enumerate(predicted)]
    notes = []
    normal = _normal_index(names) if len(names) > 2 else None
    for i, p in enumerate(predicted):
        relation = "≥" if scores[i] >= threshold else "<"
        note = f"disease score {scores[i]:.2f} {relation} threshold {threshold:.2f}"
        if normal is not None and p != normal:
            note += f", {names[p]} likeliest ({probs[i, p]:.2f})"
        notes.append(note)
    return notes


# ---------------------------------------------------------------- curves


def roc(probabilities, labels, class_names) -> dict | None:
    """ROC curve of the binary view; None without a binary view or with one class only.

    The first threshold (sklearn's +inf) comes back as None.
    """
    binary_truth, scores = _validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None or not _has_both_classes(binary_truth):
        return None
    fpr, tpr, thresholds = roc_curve(binary_truth, scores)
    return json_ready(
        {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": roc_auc_score(binary_truth, scores)}
    )


def roc_per_class(probabilities, labels, class_names) -> dict:
    """One-vs-rest ROC per class; classes whose OvR split has a single side are skipped."""
    probs, labels, names = _validated(probabilities, labels, class_names)
    curves = {}
    for index, name in enumerate(names):
        is_class = (labels == index).astype(int)
        # Absent class (no positives) or the only class present (no negatives): undefined.
        if not _has_both_classes(is_class):
            continue
        fpr, tpr, _ = roc_curve(is_class, probs[:, index])
        curves[name] = {"fpr": fpr, "tpr": tpr, "auc": roc_auc_score(is_class, probs[:, index])}
    return json_ready(curves)


def precision_recall(probabilities, labels, class_names) -> dict | None:
    """Precision-recall curve of the binary view; None without a binary view or with one class."""
    binary_truth, scores = _validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None or not _has_both_classes(binary_truth):
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
    binary_truth, scores = _validated_binary_view(probabilities, labels, class_names)
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


def _calibration_bin_counts(scores, n_bins):
    """Samples per non-empty bin, binned exactly as calibration_curve(strategy='uniform') does."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    counts = np.bincount(np.searchsorted(inner_edges, scores), minlength=n_bins)
    return counts[counts > 0]


def calibration(probabilities, labels, class_names, n_bins=10) -> dict | None:
    """Reliability curve of the binary view plus expected calibration error (ECE)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    binary_truth, scores = _validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None:
        return None
    prob_true, prob_pred = calibration_curve(
        binary_truth, scores, n_bins=n_bins, strategy="uniform", pos_label=1
    )
    counts = _calibration_bin_counts(scores, n_bins)
    # ECE: gap between confidence and observed frequency, weighted by each bin's share of samples.
    ece = np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))
    return json_ready({"prob_true": prob_true, "prob_pred": prob_pred, "counts": counts, "ece": ece})


# ---------------------------------------------------------------- everything at once


def evaluate_predictions(probabilities, labels, class_names, threshold=None) -> dict:
    """All metrics and curves for one run's predictions, ready for json.dumps."""
    probs, labels, names = _validated(probabilities, labels, class_names)
    return {
        "metrics": classification_metrics(probs, labels, names, threshold),
        "roc": roc(probs, labels, names),
        "roc_per_class": roc_per_class(probs, labels, names),
        "pr": precision_recall(probs, labels, names),
        "f1_threshold": f1_vs_threshold(probs, labels, names),
        "calibration": calibration(probs, labels, names),
    }
