"""Where did the network look? Grad-CAM, HiResCAM, Grad-CAM++, vanilla saliency and SmoothGrad maps
(through tf-keras-vis), their overlay on the original image, and a sanity check of each map.

Everything is computed on the logits, never on the softmax (whose gradient vanishes for a confident
prediction): tf-keras-vis' `ReplaceToLinear` modifier does not work on Keras 3, but every model of the
registry ends in `Dense(name="logits") -> Activation("softmax", name="probabilities")`, so
`keras.Model(model.inputs, logits.output)` gives the logits and tf-keras-vis gets `model_modifier=None`.
(Measured on a 64 px seed_cnn: the log-odds of the class instead of its logit changes neither how
often Grad-CAM is empty nor where it points; bench/saliency_quality.py.)

Grad-CAM needs a feature map that is a layer output *of the graph it differentiates*. A transfer
model's convolutional base is a nested keras.Model whose `.output` belongs to its own inner graph
(Keras 3 refuses `keras.Model(model.inputs, base.output)`: "not connected to inputs"). So the model
is cut at the feature map into two functional models, inputs -> feature map and feature map ->
logits, and re-joined through an `Identity` layer named `FEATURE_LAYER`; that layer's output is in
the flat graph and is what tf-keras-vis differentiates. The same cut works for every architecture.
Models without convolutions (mlp, logistic) have no feature map: Grad-CAM raises ExplainError with
a message, and vanilla saliency / SmoothGrad (gradients on the input) still work.

Why maps were empty or off the lungs (a 3-epoch 64 px seed_cnn, 150 test images): in a two-class model
the two classes' Grad-CAM maps are near mirror images, so exactly one of them was empty for 99 % of
images, NORMAL's for 81 % (the model reads NORMAL from the absence of pneumonia features); an empty map
now falls back to HiResCAM (CAM_FALLBACKS) and says why. The feature map of a "valid"-padded CNN covers
only the middle of the input, and stretching it over the whole image put its edge rows on the neck and
abdomen: maps are placed where their cells look (FeatureGrid). And Grad-CAM's map kept a median rank
correlation of 0.94 with the map of a model whose classifier head was randomised: it showed where the
last convolution is active more than what the model learned, which is what `sanity_check` tells users.

Speed and robustness: the tf-keras-vis objects are built once per model (`Explainer`, cached per
run by `explainer_for_run`); the sub-models run inside tf.functions (`graph_layer`, traced
without autograph, so no Python source is parsed at run time), so each image costs one traced graph
call instead of eager op-by-op gradients; and each image is sent as a batch of two copies, because
TensorFlow 2.21's oneDNN kernel for the eager gradient of a strided 1x1 convolution (resnet_small's
shortcut) corrupts the heap for a batch of one.

The model graph the maps are computed on: saliency_graph.py; a computed map's checks (empty, sanity
verdict) and its overlay on the image: maps.py. TensorFlow and tf-keras-vis are imported inside
functions so importing this module stays fast.
"""
from __future__ import annotations

import functools
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from core.ml.maps import SanityCheck, is_empty_map, normalise_map
from core.ml.saliency_graph import (FEATURE_LAYER, ExplainError, cut_at_feature_map, default_feature_layer,
                                    feature_grid, logits_model, randomised_head_copy)


METHODS = {
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "gradcam++": "Grad-CAM++",
    "saliency": "Vanilla saliency",
    "smoothgrad": "SmoothGrad",
}


CAM_METHODS = ("gradcam", "hirescam", "gradcam++")
# What stands in for an empty class-activation map, in order: HiResCAM weights each location by its own
# gradient, so evidence for the class at some places survives even when Grad-CAM's sum is negative everywhere.
CAM_FALLBACKS = ("hirescam", "gradcam++")
EMPTY_CAM_REASON = (
    "{method} keeps only feature-map evidence that raises the score of {target} (a ReLU drops the rest), "
    "and here the weighted evidence speaks against {target} everywhere.")
TWO_CLASS_REASON = (
    " With two classes, evidence for one class is evidence against the other, so the two classes' maps "
    "are close to mirror images and one of them is nearly always empty: the model reads {target} mostly "
    "from the absence of what it calls {other}. An empty map says nothing about whether the prediction is right.")
EMPTY_MAP_MESSAGE = "The {method} map of {target} is empty for this image (no pixel has any positive evidence)."


class Explainer:
    """The maps of one model. Build it once per model: the tf-keras-vis objects are kept."""

    def __init__(self, model, feature_layer: str | None = None, smooth_samples: int = 20,
                 smooth_noise: float = 0.2):
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.saliency import Saliency

        self.model = model
        self.smooth_samples, self.smooth_noise = smooth_samples, smooth_noise
        self.saliency = Saliency(logits_model(model), model_modifier=None, clone=False)
        self.cam_unavailable = None
        self.feature_layer = None
        try:
            self.feature_layer = feature_layer or default_feature_layer(model)
            cam_model = cut_at_feature_map(model, self.feature_layer)
        except ExplainError as exc:
            if feature_layer:  # the user's own choice: say so rather than quietly drop Grad-CAM
                raise
            self.cam_unavailable = str(exc)
        else:
            self.cam_visualizers = {"gradcam": Gradcam(cam_model, model_modifier=None, clone=False),
                                    "hirescam": hirescam(cam_model),
                                    "gradcam++": GradcamPlusPlus(cam_model, model_modifier=None, clone=False)}
            self.cam_layer = cam_model.get_layer(FEATURE_LAYER)
            self.grid = feature_grid(model, self.feature_layer)
        self._randomised, self._randomised_lock = None, threading.Lock()

    @property
    def methods(self) -> list[str]:
        """The methods this model supports, in display order."""
        return [m for m in METHODS if m not in CAM_METHODS or self.cam_unavailable is None]

    def heatmap(self, pixels: np.ndarray, method: str = "gradcam", class_index: int = 0) -> np.ndarray:
        """A float32 (S, S) map in [0, 1] for one uint8 (S, S, C) model input, on the input's pixel grid
        (class-activation maps are placed where their feature-map cells look, see FeatureGrid)."""
        from tf_keras_vis.utils.scores import CategoricalScore

        if method not in METHODS:
            raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if method in CAM_METHODS and self.cam_unavailable:
            raise ExplainError(self.cam_unavailable)
        # A batch of two copies: TensorFlow 2.21's oneDNN gradient of a strided 1x1 convolution
        # (resnet_small's shortcut) corrupts the heap and kills the process for a batch of one.
        seed = np.repeat(np.asarray(pixels, dtype=np.float32)[None], 2, axis=0)
        score = CategoricalScore([int(class_index)])
        with warnings.catch_warnings():
            # tf-keras-vis passes the single input as a one-element list, which Keras 3 warns about
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            cam = np.asarray(self._raw_map(method, score, seed))[0]
        if method in CAM_METHODS:
            cam = self.grid.on_input(np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))
        return normalise_map(cam)

    def _raw_map(self, method, score, seed):
        if method in CAM_METHODS:
            # expand_cam=False: the feature-map cells are placed on the input grid by self.grid instead.
            return self.cam_visualizers[method](score, seed, penultimate_layer=self.cam_layer,
                                                seek_penultimate_conv_layer=False, expand_cam=False,
                                                normalize_cam=False)
        samples = self.smooth_samples if method == "smoothgrad" else 0
        return self.saliency(score, seed, smooth_samples=samples, smooth_noise=self.smooth_noise,
                             normalize_map=False)


    def randomised(self) -> "Explainer":
        """The same maps for a copy of the model whose classifier head is re-initialised (built once)."""
        with self._randomised_lock:
            if self._randomised is None:
                self._randomised = Explainer(randomised_head_copy(self.model), feature_layer=self.feature_layer,
                                             smooth_samples=self.smooth_samples, smooth_noise=self.smooth_noise)
            return self._randomised


def hirescam(cam_model):
    """HiResCAM (Draelos & Carin 2020) on tf-keras-vis' Grad-CAM machinery.

    Grad-CAM averages each channel's gradient over the map, which throws away *where* a flatten + dense
    head reads the channel; its map then follows activation strength (bright mediastinum, spine,
    diaphragm). HiResCAM multiplies gradient and activation at each location before summing the
    channels: for such heads that is each location's exact first-order share of the class score, and
    for a global-average head it equals Grad-CAM.
    """
    from tf_keras_vis.gradcam import Gradcam

    class HiResCam(Gradcam):
        def _calculate_cam(self, grads, penultimate_output, gradient_modifier, activation_modifier):
            cam = np.sum(np.multiply(grads, penultimate_output), axis=-1)
            return cam if activation_modifier is None else activation_modifier(cam)

    return HiResCam(cam_model, model_modifier=None, clone=False)


def empty_map_message(method: str, target: str, class_names) -> str:
    """Why the `method` map of class `target` is empty, in plain words."""
    if method not in CAM_METHODS:
        return EMPTY_MAP_MESSAGE.format(method=METHODS[method], target=target)
    message = f"The {METHODS[method]} map of {target} is empty for this image: " + EMPTY_CAM_REASON.format(
        method=METHODS[method], target=target)
    others = [name for name in class_names if name != target]
    return message + (TWO_CLASS_REASON.format(target=target, other=others[0]) if len(others) == 1 else "")


def fallback_note(requested: str, shown: str, target: str) -> str:
    """'Grad-CAM of NORMAL was empty for this image, so HiResCAM is shown' ('' when nothing fell back)."""
    if requested == shown:
        return ""
    return f"{METHODS[requested]} of {target} was empty for this image, so {METHODS[shown]} is shown"


def method_caption(method: str, target: str, predicted: str | None = None) -> str:
    """'HiResCAM of PNEUMONIA (the predicted class)': which method and which class a map shows."""
    return f"{METHODS[method]} of {target}" + (" (the predicted class)" if target == predicted else "")


# Streamlit sessions (Diagnose, Evaluate) ask from their own threads: one builds an Explainer at a time.
_EXPLAINERS_LOCK = threading.Lock()
_RUN_EXPLAINERS_KEPT = 4


def explainer_for_run(run) -> Explainer:
    """The Explainer of a core.store.runs.Run's saved model, loaded once per run and model version
    (a retrained model has a new mtime); the last few runs' explainers are kept."""
    with _EXPLAINERS_LOCK:
        return _explainer_for_model_file(str(run.path), run.model_path.stat().st_mtime)


@functools.lru_cache(maxsize=_RUN_EXPLAINERS_KEPT)
def _explainer_for_model_file(run_folder: str, mtime: float) -> Explainer:
    from core.ml.inference import load_model
    from core.store.run_folder import Run
    return Explainer(load_model(Run(run_folder)))


def heatmap_with_fallback(explainer: Explainer, pixels: np.ndarray, class_index: int,
                          method: str = "gradcam") -> tuple[np.ndarray, str]:
    """(map, method shown): the `method` map, or for an empty class-activation map the first non-empty
    one of CAM_FALLBACKS (the last one tried when all are empty)."""
    tried = [method, *(m for m in CAM_FALLBACKS if m != method)] if method in CAM_METHODS else [method]
    for shown in tried:
        heatmap = explainer.heatmap(pixels, shown, class_index)
        if not is_empty_map(heatmap):
            break
    return heatmap, shown


@dataclass(frozen=True)
class Explanation:
    """What a page shows for one image: the map, the method drawn (after any fallback), the one asked
    for, the class explained, and the randomisation check (None for an empty map)."""
    heatmap: np.ndarray
    method: str
    requested: str
    target: str
    sanity: "SanityCheck | None"

    @property
    def empty(self) -> bool:
        return is_empty_map(self.heatmap)

    def caption(self, predicted: str | None = None) -> str:
        """'HiResCAM of NORMAL (the predicted class); Grad-CAM of NORMAL was empty ..., so HiResCAM is shown'."""
        note = fallback_note(self.requested, self.method, self.target)
        return method_caption(self.method, self.target, predicted) + (f"; {note}" if note else "")


def explain_image(explainer: Explainer, pixels: np.ndarray, method: str, class_index: int,
                  class_names) -> Explanation:
    """The `method` map of class `class_index` with the automatic fallback and its sanity check."""
    heatmap, shown = heatmap_with_fallback(explainer, pixels, class_index, method)
    sanity = None if is_empty_map(heatmap) else sanity_check(explainer, pixels, shown, class_index, heatmap)
    return Explanation(heatmap, shown, method, str(class_names[class_index]), sanity)


def sanity_check(explainer: Explainer, pixels: np.ndarray, method: str, class_index: int,
                 heatmap: np.ndarray) -> SanityCheck:
    """Compare `heatmap` (the `method` map of `class_index`) with the randomised-head model's map."""
    from scipy.stats import spearmanr
    randomised = explainer.randomised().heatmap(pixels, method, class_index)
    if is_empty_map(randomised):
        return SanityCheck(None)
    return SanityCheck(float(spearmanr(np.ravel(heatmap), np.ravel(randomised)).statistic))


def predicted_class(explainer: Explainer, pixels: np.ndarray) -> int:
    probabilities = explainer.model.predict_on_batch(np.asarray(pixels, dtype=np.float32)[None])
    return int(np.argmax(probabilities[0]))
