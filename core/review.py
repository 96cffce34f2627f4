"""Looking at a run's mistakes: which images were misclassified at a threshold, and their pixels.

`explanation_overlay` is the one place where Grad-CAM plugs in: when `core.explain` offers
`overlay_for_file(run, file, image)`, the Evaluate page's gallery can show its overlay.
"""
from __future__ import annotations

import importlib
import importlib.util

import numpy as np

from core import metrics as metrics_lib


def misclassified(predictions: dict, threshold: float | None = None, limit: int = 24) -> list[dict]:
    """Wrong predictions, most confident first: [{file, patient_id, true, predicted, confidence}]."""
    probs = np.asarray(predictions["probabilities"])
    labels = np.asarray(predictions["labels"])
    names = list(predictions["class_names"])
    predicted = metrics_lib.predict_with_threshold(probs, names, threshold)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    return [{"file": str(predictions["files"][i]), "patient_id": str(predictions["patient_ids"][i]),
             "true": names[labels[i]], "predicted": names[predicted[i]],
             "confidence": float(probs[i, predicted[i]])} for i in order]


def images_by_file(files: np.ndarray, images: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
    """The model-input images (S, S, C) uint8 of the `wanted` files, looked up by file name."""
    index = {str(f): i for i, f in enumerate(files)}
    return {name: images[index[name]] for name in wanted if name in index}


def displayable(image: np.ndarray) -> np.ndarray:
    """(S, S, 1) grayscale -> (S, S) for st.image; RGB stays as it is."""
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def explanation_overlay(run, file: str, image: np.ndarray):
    """A Grad-CAM overlay (RGB uint8) from `core.explain.overlay_for_file(run, file, image)`, or
    None when that module or function is missing or fails for this image (e.g. a model without
    convolutions)."""
    try:
        explain = importlib.import_module("core.explain")
    except ImportError:
        return None
    overlay_for_file = getattr(explain, "overlay_for_file", None)
    if overlay_for_file is None:
        return None
    try:
        return overlay_for_file(run, file, image)
    except Exception:  # noqa: BLE001 - an explanation is optional; the plain image still shows
        return None


def explanations_available() -> bool:
    return importlib.util.find_spec("core.explain") is not None
