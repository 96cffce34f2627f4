"""Looking at a run's decisions: which images were misclassified at a threshold, the images behind a
confusion-matrix cell, their pixels and their heatmap overlays (`explanation_overlay`, for the
Evaluate page's galleries: Grad-CAM, or HiResCAM when Grad-CAM is empty, with a sanity check).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.ml import explain, maps, saliency_graph
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
    """The heatmap overlay (uint8 RGB at the model size) of a run's prediction for one dataset image,
    with a note naming the method and the class it explains, why another method stands in for an
    empty Grad-CAM, and the randomisation sanity check.

    file: the image's name in the dataset (kept for the gallery's call; the pixels are given);
    image: uint8 (S, S) or (S, S, C) model-input pixels. A model without Grad-CAM gives no overlay and the reason.
    """
    pixels = image[..., None] if image.ndim == 2 else image
    try:
        explainer = explain.explainer_for_run(run)
    except Exception as exc:  # noqa: BLE001 - a damaged model.keras: the gallery shows plain images
        return ExplainedImage(None, f"no Grad-CAM: the model cannot be loaded ({type(exc).__name__}: {exc})")
    if explainer.cam_unavailable:
        return ExplainedImage(None, explainer.cam_unavailable)
    class_names = _class_names(run, explainer)
    predicted = explain.predicted_class(explainer, pixels)
    try:
        shown = explain.explain_image(explainer, pixels, "gradcam", predicted, class_names)
    except saliency_graph.ExplainError as exc:
        return ExplainedImage(None, str(exc))
    if shown.empty:
        return ExplainedImage(None, "every class-activation map of this image is empty: "
                                    + explain.empty_map_message("gradcam", shown.target, class_names))
    return ExplainedImage(maps.overlay(pixels, shown.heatmap),
                          f"{shown.caption(shown.target)} · {shown.sanity.verdict()}")


def _class_names(run, explainer) -> list[str]:
    """The run's class names (from its summary), else 'class 0', 'class 1', ..."""
    names = (run.summary() or {}).get("class_names")
    count = int(explainer.model.output_shape[-1])
    return list(names) if names and len(names) == count else [f"class {i}" for i in range(count)]
