"""A linear model's weights as pictures (no Streamlit, no TensorFlow): one image per class of where a
bright pixel raises (red) or lowers (blue) that class's score. The linear models are the perceptron
(trained by gradient descent) and the logistic regression (fitted by scikit-learn): both read the
pixels straight into their logits (core.ml.models.class_weight_images)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# The architectures whose logits read the pixels directly, and what their weights are called.
LINEAR_MODELS = {"logistic": "the perceptron", "logistic_regression": "the logistic regression"}
WEIGHTS_CAPTION = ("Each pixel's weight in the class's score: red raises it, blue lowers it, white is no "
                   "effect (one scale for every class).")
SALIENCY_NOTE = ("Saliency maps are not available for {model}: a linear model on the pixels has no feature "
                 "maps for Grad-CAM, and its gradient with respect to an image is its weight image, the same "
                 "for every X-ray (shown on Evaluate).")
C_GRID_CAPTION = ("One fit per C ({penalty} penalty; smaller C, stronger penalty): the C of the lowest validation "
                  "log-loss is kept, chosen on the validation patients only; the test patients played no part.")
WEIGHTS_INSTEAD = "In place of a map: its weights for the predicted class, {name}"
WHITE = np.array([255.0, 255.0, 255.0])
RED = np.array([178.0, 24.0, 43.0])
BLUE = np.array([33.0, 102.0, 172.0])


def diverging_rgb(weights: np.ndarray, scale: float) -> np.ndarray:
    """(h, w) weights -> (h, w, 3) uint8: white at 0, red at +scale, blue at -scale (clipped)."""
    t = np.clip(weights / scale, -1.0, 1.0)[..., None] if scale > 0 else np.zeros((*weights.shape, 1))
    rgb = WHITE + np.where(t > 0, t * (RED - WHITE), -t * (BLUE - WHITE))
    return rgb.round().astype(np.uint8)


def class_pictures(weight_images: np.ndarray) -> list[np.ndarray]:
    """(classes, h, w, channels) weights -> one RGB picture per class, on one scale shared by every
    class (so their strengths compare). A colour pixel's weights are summed: a grey pixel, equal in
    every channel, moves the score by their sum."""
    per_pixel = weight_images.sum(axis=-1)
    scale = float(np.abs(per_pixel).max())
    return [diverging_rgb(image, scale) for image in per_pixel]


def is_linear(arch: str | None) -> bool:
    return arch in LINEAR_MODELS


def weights_title(arch: str) -> str:
    return f"What {LINEAR_MODELS[arch]} weighs"


def saliency_note(arch: str) -> str:
    return SALIENCY_NOTE.format(model=LINEAR_MODELS[arch])


def c_grid_frame(fit: dict) -> pd.DataFrame:
    """A logistic regression's `summary["logistic_regression"]` as one row per C of its grid."""
    rows = [{"C": row["C"], "kept": "✓" if row["C"] == fit["C"] else "",
             "train log-loss": row["train_log_loss"], "validation log-loss": row["val_log_loss"],
             "nonzero weights": row["nonzero_weights"], "converged": "yes" if row["converged"] else "no"}
            for row in fit["grid"]]
    return pd.DataFrame(rows)
