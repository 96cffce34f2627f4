"""Uncertainty of the metrics: 95% intervals by bootstrapping patients (all of a patient's images are
resampled together), exact binomial bounds where the bootstrap degenerates, and the warnings that go
with small sets. Plain JSON-serialisable results, as core.ml.metrics."""

from __future__ import annotations

import numpy as np

from core.ml.metrics import (
    binary_view,
    binary_view_kind,
    classification_metrics,
    predict_positive,
    predict_with_threshold,
    validated,
)


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
    probs, labels, names = validated(probabilities, labels, class_names)
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
    decided_at = threshold if binary_view_kind(names) is not None else None
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
        self.truth, self.scores = binary_view(probs, labels, names)
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
