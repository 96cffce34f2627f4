"""How a run's thresholded numbers name their decision rule, so one label always means one number.

A run decides at the disease-score threshold chosen on its validation split (metrics.decision_threshold),
or takes the most likely class (argmax) where its classes have no disease-vs-normal view. Accuracy,
balanced accuracy, macro-F1, sensitivity, specificity, the recalls and the confusion matrix all
depend on that rule, so wherever they are shown their label says it: 'Accuracy @ threshold 0.43'.
Plain Python (no numpy, no scikit-learn): the runs tables import it on Home's first paint.
"""
from __future__ import annotations

# Numbers of the scores alone, the same at any decision rule.
THRESHOLD_FREE = ("auc", "macro_ovr_auc", "average_precision", "log_loss", "brier")
VALIDATION_CHOSEN = "chosen on the validation split (best F1)"


def decision_rule(threshold: float | None) -> str:
    """'threshold 0.43' (disease score >= 0.43 -> disease) or 'argmax' (the most likely class)."""
    return "argmax" if threshold is None else f"threshold {threshold:.2f}"


def metric_label(label: str, key: str, threshold: float | None) -> str:
    """'Accuracy @ threshold 0.43' for a number that depends on the decision; `label` alone for one
    that does not (AUC, average precision, log loss, Brier)."""
    return label if key in THRESHOLD_FREE else f"{label} @ {decision_rule(threshold)}"


def decision_sentence(threshold: float | None, validation_threshold: float | None) -> str:
    """What decided, in words: whether `threshold` is the run's own (chosen on validation)."""
    if threshold is None:
        return "Decisions: argmax (the most likely class); these classes have no disease-vs-normal threshold."
    own = (f"the run's own, {VALIDATION_CHOSEN}" if validation_threshold is not None
           and round(threshold, 2) == round(validation_threshold, 2)
           else "not the run's own" + (f" ({decision_rule(validation_threshold)}, {VALIDATION_CHOSEN})"
                                       if validation_threshold is not None else ""))
    return f"Decisions at {decision_rule(threshold)} on the disease score: {own}."
