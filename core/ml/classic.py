"""Logistic regression on the pixels with scikit-learn: the classic reports' linear baseline, with an
L1 or L2 penalty and its strength C chosen on the validation patients (no TensorFlow).

A `logistic_regression` run (core.ml.training.train_linear) fits it here on the run's training
rows, then puts its weights into the perceptron's Keras graph (pixels to logits, `logit_weights`),
so it is saved, predicted, evaluated and explained as every run is; loading it never unpickles.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from core.progress import ProgressFn
from core.settings.architectures import C_GRID, LOGISTIC_PENALTIES

PENALTIES = LOGISTIC_PENALTIES
DEFAULT_C_GRID = tuple(C_GRID)
# The logit of a class the training rows did not have: its probability is 0 (exp(-1e4) underflows).
ABSENT_CLASS_LOGIT = -1e4


class FitCancelled(Exception):
    """The run was stopped between two fits of the grid."""


@dataclass
class Fitted:
    model: LogisticRegression
    c: float                      # the C of the grid with the lowest validation log-loss
    val_log_loss: dict[float, float]
    converged: bool
    grid: list[dict]              # per C: its train and validation log-loss, convergence, nonzero weights


def pixel_features(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, h, w, c) -> rows of pixels in 0-1, as the Keras models rescale them."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def logistic_model(penalty: str, c: float, seed: int, class_weight: dict | None = None) -> LogisticRegression:
    """L1 through SAGA (the solver that takes it for any number of classes), L2 through L-BFGS."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}; got {penalty!r}")
    if c <= 0:
        raise ValueError(f"C must be positive; got {c}")
    l1 = penalty == "l1"
    return LogisticRegression(C=c, l1_ratio=1.0 if l1 else 0.0, solver="saga" if l1 else "lbfgs",
                              max_iter=2000, random_state=seed, class_weight=class_weight)


def fit_logistic_regression(x_train, y_train, x_val, y_val, num_classes: int, penalty: str = "l2",
                            c_grid=DEFAULT_C_GRID, seed: int = 0, class_weight: dict | None = None,
                            progress: ProgressFn | None = None, cancel=None) -> Fitted:
    """One model per C of the grid; the one with the lowest validation log-loss is kept. `cancel()`
    is asked before each fit (FitCancelled); `progress` hears of each."""
    if not len(c_grid):
        raise ValueError("the C grid is empty")
    grid = sorted(float(c) for c in c_grid)
    fitted, rows = {}, []
    for done, c in enumerate(grid):
        if cancel is not None and cancel():
            raise FitCancelled()
        if progress is not None:
            progress(done, len(grid), f"C = {c:g}")
        fitted[c], converged = _fit_one(logistic_model(penalty, c, seed, class_weight), x_train, y_train)
        rows.append({"C": c, "converged": converged, "nonzero_weights": int(np.count_nonzero(fitted[c].coef_)),
                     **{f"{name}_log_loss": _log_loss(fitted[c], x, y, num_classes)
                        for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val))}})
    if progress is not None:
        progress(len(grid), len(grid), "done")
    best = min(rows, key=lambda row: row["val_log_loss"])
    return Fitted(fitted[best["C"]], best["C"], {row["C"]: row["val_log_loss"] for row in rows},
                  best["converged"], rows)


def _fit_one(model: LogisticRegression, x, y) -> tuple[LogisticRegression, bool]:
    """The fitted model and whether its solver converged within its iterations."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _log_loss(model: LogisticRegression, x, y, num_classes: int) -> float:
    return float(log_loss(y, probabilities(model, x, num_classes), labels=np.arange(num_classes)))


def probabilities(model: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, num_classes) probabilities, zero for a class the training rows did not have."""
    out = np.zeros((len(x), num_classes), dtype=np.float32)
    out[:, model.classes_] = model.predict_proba(x)
    return out


def logit_weights(model: LogisticRegression, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model as the kernel (features, num_classes) and bias of a Dense logits layer whose
    softmax gives `probabilities`. Two classes: scikit-learn's one score z becomes the logits (-z/2,
    z/2), whose softmax is its sigmoid; a class absent from training gets ABSENT_CLASS_LOGIT."""
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2 and coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    kernel = np.zeros((coef.shape[1], num_classes), dtype=np.float32)
    bias = np.full(num_classes, ABSENT_CLASS_LOGIT, dtype=np.float32)
    kernel[:, model.classes_], bias[model.classes_] = coef.T, intercept
    return kernel, bias
