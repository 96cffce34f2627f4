"""Looking at a run's decisions: which images were misclassified at a threshold, the images behind a
confusion-matrix cell, their pixels and their Grad-CAM overlays (`explanation_overlay`, for the
Evaluate page's galleries).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.ml import explain
from core.ml import metrics as metrics_lib


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


def cell_cases(predictions: dict, true: str, predicted: str, threshold: float | None = None,
               limit: int = 24) -> list[dict]:
    """The images behind one confusion-matrix cell (true class, predicted class), most confident first:
    [{file, patient_id, true, predicted, confidence}]."""
    probs = np.asarray(predictions["probabilities"])
    labels = np.asarray(predictions["labels"])
    names = list(predictions["class_names"])
    if true not in names or predicted not in names:
        raise ValueError(f"no cell {true} → {predicted}: the classes are {', '.join(names)}")
    decided = metrics_lib.predict_with_threshold(probs, names, threshold)
    rows = np.flatnonzero((labels == names.index(true)) & (decided == names.index(predicted)))
    confidence = probs[rows, names.index(predicted)]
    order = rows[np.argsort(-confidence, kind="stable")][:limit]
    return [{"file": str(predictions["files"][i]), "patient_id": str(predictions["patient_ids"][i]),
             "true": true, "predicted": predicted, "confidence": float(probs[i, names.index(predicted)])}
            for i in order]


def images_by_file(files: np.ndarray, images: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
    """The model-input images (S, S, C) uint8 of the `wanted` files, looked up by file name."""
    index = {str(f): i for i, f in enumerate(files)}
    return {name: images[index[name]] for name in wanted if name in index}


@dataclass
class ExplainedImage:
    """What the gallery shows for one image: an overlay (None: the plain image) and an optional caption."""
    image: np.ndarray | None
    note: str | None = None


def explanation_overlay(run, file: str, image: np.ndarray) -> ExplainedImage:
    """The Grad-CAM overlay (uint8 RGB at the model size) of a run's prediction for one dataset image.

    file: the image's name in the dataset (kept for the gallery's call; the pixels are given);
    image: uint8 (S, S) or (S, S, C) model-input pixels. An empty Grad-CAM map falls back to
    Grad-CAM++ and says so in the note; a model without Grad-CAM gives no overlay and the reason.
    """
    pixels = image[..., None] if image.ndim == 2 else image
    try:
        explainer = explain.explainer_for_run(run)
    except Exception as exc:  # noqa: BLE001 - a damaged model.keras: the gallery shows plain images
        return ExplainedImage(None, f"no Grad-CAM: the model cannot be loaded ({type(exc).__name__}: {exc})")
    if explainer.cam_unavailable:
        return ExplainedImage(None, explainer.cam_unavailable)
    try:
        heatmap, method = explain.heatmap_with_fallback(explainer, pixels, explain.predicted_class(explainer, pixels))
    except explain.ExplainError as exc:
        return ExplainedImage(None, str(exc))
    if explain.is_empty_map(heatmap):
        return ExplainedImage(None, "Grad-CAM and Grad-CAM++ are both empty for this image")
    return ExplainedImage(explain.overlay(pixels, heatmap),
                          explain.GRADCAM_FALLBACK_NOTE if method == "gradcam++" else None)
