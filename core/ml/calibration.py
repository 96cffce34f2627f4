"""Calibration of a run's probabilities: the reliability curve of the disease-vs-normal view with its
expected calibration error, and temperature scaling fitted on the validation split."""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve

from core.files import json_ready
from core.ml.metrics import validated, validated_binary_view, validated_labels, validated_probabilities


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
    probs = validated_probabilities(probabilities, [str(i) for i in range(np.shape(probabilities)[1])])
    labels = validated_labels(labels, probs.shape[1])
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
    val_probs, val_labels, names = validated(val["probabilities"], val["labels"], val["class_names"])
    test_probs, test_labels, test_names = validated(test["probabilities"], test["labels"], test["class_names"])
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


def _calibration_bin_counts(scores, n_bins):
    """Samples per non-empty bin, binned exactly as calibration_curve(strategy='uniform') does."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    counts = np.bincount(np.searchsorted(inner_edges, scores), minlength=n_bins)
    return counts[counts > 0]


def calibration(probabilities, labels, class_names, n_bins=10) -> dict | None:
    """Reliability curve of the binary view plus expected calibration error (ECE)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    binary_truth, scores = validated_binary_view(probabilities, labels, class_names)
    if binary_truth is None:
        return None
    prob_true, prob_pred = calibration_curve(
        binary_truth, scores, n_bins=n_bins, strategy="uniform", pos_label=1
    )
    counts = _calibration_bin_counts(scores, n_bins)
    # ECE: gap between confidence and observed frequency, weighted by each bin's share of samples.
    ece = np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))
    return json_ready({"prob_true": prob_true, "prob_pred": prob_pred, "counts": counts, "ece": ece})
