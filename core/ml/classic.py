"""Logistic regression on the pixels with scikit-learn: the classic reports' linear baseline, with an
L1 or L2 penalty and its strength C chosen on the validation patients (no TensorFlow).

It reads the same data and patient-grouped split as a Keras run of the same settings
(core.ml.data_pipeline.load_data) and scores with the same metrics (core.ml.metrics), so its figures
stand beside a run's; it is a command (`python -m core baseline`), not a run folder.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

PENALTIES = ("l1", "l2")
DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class Fitted:
    model: LogisticRegression
    c: float                      # the C of the grid with the lowest validation log-loss
    val_log_loss: dict[float, float]
    converged: bool


def pixel_features(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, h, w, c) -> rows of pixels in 0-1, as the Keras models rescale them."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def logistic_model(penalty: str, c: float, seed: int) -> LogisticRegression:
    """L1 through SAGA (the solver that takes it for any number of classes), L2 through L-BFGS."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}; got {penalty!r}")
    if c <= 0:
        raise ValueError(f"C must be positive; got {c}")
    l1 = penalty == "l1"
    return LogisticRegression(C=c, l1_ratio=1.0 if l1 else 0.0, solver="saga" if l1 else "lbfgs",
                              max_iter=2000, random_state=seed)


def fit_logistic_regression(x_train, y_train, x_val, y_val, num_classes: int, penalty: str = "l2",
                            c_grid=DEFAULT_C_GRID, seed: int = 0) -> Fitted:
    """One model per C of the grid; the one with the lowest validation log-loss is kept."""
    if not c_grid:
        raise ValueError("the C grid is empty")
    classes = np.arange(num_classes)
    fitted, losses, converged = {}, {}, {}
    for c in sorted(float(c) for c in c_grid):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = logistic_model(penalty, c, seed).fit(x_train, y_train)
        converged[c] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        fitted[c] = model
        losses[c] = float(log_loss(y_val, probabilities(model, x_val, num_classes), labels=classes))
    best = min(losses, key=losses.get)
    return Fitted(fitted[best], best, losses, converged[best])


def probabilities(model: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, num_classes) probabilities, zero for a class the training rows did not have."""
    out = np.zeros((len(x), num_classes), dtype=np.float32)
    out[:, model.classes_] = model.predict_proba(x)
    return out


def logistic_baseline(config, penalty: str = "l2", c_grid=DEFAULT_C_GRID) -> dict:
    """Logistic regression on the pixels of `config`'s data and split (a TrainConfig: its source, task,
    image size, colour, split and seed): C chosen on validation, figures on validation and test at
    the threshold chosen on validation, as a Keras run's summary has them."""
    from core.ml import metrics
    from core.ml.data_pipeline import load_data
    dataset, split = load_data(config.validate())
    rows = {name: split.indices(name) for name in ("train", "val", "test")}
    x = {name: pixel_features(dataset.images[idx]) for name, idx in rows.items()}
    y = {name: dataset.labels[idx] for name, idx in rows.items()}
    classes = dataset.class_names
    fitted = fit_logistic_regression(x["train"], y["train"], x["val"], y["val"], len(classes), penalty,
                                     c_grid, config.seed)
    predicted = {name: probabilities(fitted.model, x[name], len(classes)) for name in ("val", "test")}
    threshold = metrics.decision_threshold(predicted["val"], y["val"], classes)
    return {"model": f"logistic regression on {x['train'].shape[1]} pixels ({penalty.upper()} penalty)",
            "penalty": penalty, "C": fitted.c, "c_grid": sorted(float(c) for c in c_grid),
            "val_log_loss_by_C": {str(c): loss for c, loss in fitted.val_log_loss.items()},
            "converged": fitted.converged, "nonzero_weights": int(np.count_nonzero(fitted.model.coef_)),
            "class_names": classes, "images": {name: len(idx) for name, idx in rows.items()},
            "threshold": threshold,
            **{name: metrics.classification_metrics(predicted[name], y[name], classes, threshold)
               for name in ("val", "test")}}
