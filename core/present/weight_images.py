"""A single-layer perceptron's weights as pictures (no Streamlit, no TensorFlow): one image per class
of where a bright pixel raises (red) or lowers (blue) that class's score."""
from __future__ import annotations

import numpy as np

# The architecture whose logits read the pixels directly (core.ml.models.class_weight_images).
PERCEPTRON_ARCH = "logistic"
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
