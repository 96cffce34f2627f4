"""Where did the network look? Grad-CAM, Grad-CAM++, vanilla saliency and SmoothGrad maps
(through tf-keras-vis) and their overlay on the original image.

Everything is computed on the logits, never on the softmax: tf-keras-vis' `ReplaceToLinear`
modifier does not work on Keras 3, but every model of the registry ends in
`Dense(name="logits") -> Activation("softmax", name="probabilities")`, so
`keras.Model(model.inputs, logits.output)` gives the logits and tf-keras-vis gets
`model_modifier=None`.

Grad-CAM needs a feature map that is a layer output *of the graph it differentiates*. A transfer
model's convolutional base is a nested keras.Model whose `.output` belongs to its own inner graph
(Keras 3 refuses `keras.Model(model.inputs, base.output)`: "not connected to inputs"). So the model
is cut at the feature map into two functional models, inputs -> feature map and feature map ->
logits, and re-joined through an `Identity` layer named `FEATURE_LAYER`; that layer's output is in
the flat graph and is what tf-keras-vis differentiates. The same cut works for every architecture.
Models without convolutions (mlp, logistic) have no feature map: Grad-CAM raises ExplainError with
a message, and vanilla saliency / SmoothGrad (gradients on the input) still work.

Speed and robustness: the tf-keras-vis objects are built once per model (`Explainer`, cached by
`explainer_for` / `explainer_for_run`); the sub-models run inside tf.functions (`graph_layer`), so
each image costs one traced graph call instead of eager op-by-op gradients; and each image is sent
as a batch of two copies, because TensorFlow 2.21's oneDNN kernel for the eager gradient of a
strided 1x1 convolution (resnet_small's shortcut) corrupts the heap for a batch of one.

TensorFlow and tf-keras-vis are imported inside functions so importing this module stays fast.
"""
from __future__ import annotations

import functools
import threading
import warnings
import weakref

import numpy as np
from PIL import Image

from core.data.imaging import displayable

METHODS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "saliency": "Vanilla saliency",
    "smoothgrad": "SmoothGrad",
}
CAM_METHODS = ("gradcam", "gradcam++")
FEATURE_LAYER = "explain_feature_map"
DEFAULT_OPACITY = 0.45
NO_CONV_MESSAGE = ("Grad-CAM is not defined for this model: it has no convolutional layer, so there is "
                   "no spatial feature map to weight. Use vanilla saliency or SmoothGrad instead.")
EMPTY_GRADCAM_MESSAGE = (
    "The Grad-CAM map is empty for this image: Grad-CAM keeps only the feature-map evidence that raises "
    "the class score (a ReLU drops the rest), and here the weighted sum is negative everywhere, so nothing "
    "is left. That is typical for a class the model scores low, or for an image it gets wrong. "
    "Grad-CAM++ weights the feature maps differently and usually still shows where the network looked.")
EMPTY_MAP_MESSAGE = "The {method} map is empty for this image (no pixel has any positive evidence)."
GRADCAM_FALLBACK_NOTE = "Grad-CAM was empty for this image; showing Grad-CAM++"


class ExplainError(ValueError):
    """A map that cannot be computed for this model or these settings; the message says why."""


# ----------------------------------------------------------------------------- the model graph

def logits_model(model):
    """inputs -> logits (the input of the final softmax layer named "probabilities"), run as a graph."""
    import keras
    inner = keras.Model(model.inputs, model.get_layer("logits").output, name=f"{model.name}_logits")
    pixels = keras.Input(shape=model.input_shape[1:], name="pixels")
    return keras.Model(pixels, graph_layer(inner)(pixels), name=inner.name)


def graph_layer(inner):
    """A layer that runs the Keras model `inner` as one tf.function (inference mode).

    tf-keras-vis differentiates eagerly, op by op; inside a tf.function the forward and backward
    passes run as graphs, traced once per input shape and reused for every image.
    """
    import keras
    import tensorflow as tf

    class GraphCall(keras.layers.Layer):
        def __init__(self, wrapped, **kwargs):
            super().__init__(name=f"{wrapped.name}_graph", **kwargs)
            self.wrapped = wrapped

            def run_in_inference_mode(x):
                return wrapped(x, training=False)

            # autograph=False: the function has no Python control flow to convert, and autograph would
            # parse its source in whichever thread traces it first (a warm-up thread), which can corrupt
            # CPython 3.11's parser state while Streamlit compiles a page (CPython issue 106905).
            self.run_graph = tf.function(run_in_inference_mode, autograph=False, reduce_retracing=True)

        def call(self, x):
            return self.run_graph(x)

        def compute_output_spec(self, x):
            return self.wrapped.compute_output_spec(x)

    return GraphCall(inner)


def has_conv_layer(model) -> bool:
    """True if `model`, nested models included, has any convolution."""
    from core.ml.models import all_layers
    return any(has_conv_layer_type(layer) for layer in all_layers(model))


def has_conv_layer_type(layer) -> bool:
    from keras import layers
    return isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D,
                              layers.SeparableConv2D))


def feature_map_candidates(model) -> list[str]:
    """Names of the top-level layers whose output is a spatial (batch, h, w, channels) map."""
    import keras
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in ("logits", "probabilities"):
            continue
        if len(_outer_output(model, layer).shape) == 4:
            names.append(layer.name)
    return names


def default_feature_layer(model) -> str:
    """The last convolutional feature map: what the classifier head flattens or pools.

    That is the input of the first Flatten / global-pooling layer; when that map is 1x1 (e.g. a deep
    CNN on a tiny input) there is nothing to localise, so the last larger map after the first
    convolution is used instead.
    """
    if not has_conv_layer(model):
        raise ExplainError(NO_CONV_MESSAGE)
    candidates = _maps_after_first_conv(model)
    head_input = _head_input_layer(model)
    if head_input in candidates:
        candidates = candidates[:candidates.index(head_input) + 1]
    spatial = [name for name in candidates if _spatial_size(model, name) > 1]
    if not spatial:
        raise ExplainError("Grad-CAM cannot localise anything here: the model's last feature map is 1x1 "
                           "at this image size. Use vanilla saliency or SmoothGrad instead.")
    return spatial[-1]


def _maps_after_first_conv(model) -> list[str]:
    """feature_map_candidates from the first top-level layer that is or contains a convolution."""
    import keras
    candidates = feature_map_candidates(model)
    for layer in model.layers:
        is_conv = has_conv_layer(layer) if isinstance(layer, keras.Model) else has_conv_layer_type(layer)
        if is_conv and layer.name in candidates:
            return candidates[candidates.index(layer.name):]
    return []


def _head_input_layer(model) -> str | None:
    """Name of the layer whose output the classifier head flattens or globally pools."""
    import keras
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.Model)):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        if len(inputs) == 1 and len(inputs[0].shape) == 4 and len(layer.output.shape) == 2:
            return inputs[0]._keras_history.operation.name
    return None


def _spatial_size(model, layer_name: str) -> int:
    shape = _outer_output(model, model.get_layer(layer_name)).shape
    return int(shape[1] or 0) * int(shape[2] or 0)


def _outer_output(model, layer):
    """The output tensor of `layer` in `model`'s own graph.

    For a nested model `layer.output` is the tensor of its inner graph, so it is taken from the
    input of the layer that consumes it instead (Keras 3 records the producer in `_keras_history`).
    """
    import keras
    if not isinstance(layer, keras.Model):
        return layer.output
    for consumer in model.layers:
        inputs = consumer.input if isinstance(consumer.input, list) else [consumer.input]
        for tensor in inputs:
            if getattr(tensor, "_keras_history", None) and tensor._keras_history.operation is layer:
                return tensor
    return layer.output  # the nested model is the last layer: its output is the model's output


def cut_at_feature_map(model, layer_name: str):
    """A flat model inputs -> logits with an Identity layer `FEATURE_LAYER` on the chosen feature map."""
    import keras
    if layer_name not in feature_map_candidates(model):
        raise ExplainError(f"layer {layer_name!r} has no spatial feature map; choose one of: "
                           f"{', '.join(feature_map_candidates(model)) or '(none)'}")
    feature = _outer_output(model, model.get_layer(layer_name))
    logits = model.get_layer("logits").output
    try:
        to_features = keras.Model(model.inputs, feature, name="to_feature_map")
        to_logits = keras.Model(feature, logits, name="feature_map_to_logits")
    except ValueError as exc:
        raise ExplainError(f"Grad-CAM cannot use layer {layer_name!r}: part of the network bypasses it "
                           f"(e.g. a residual connection), so the logits are not a function of its "
                           f"output alone ({exc})") from None
    pixels = keras.Input(shape=model.input_shape[1:], name="pixels")
    features = keras.layers.Identity(name=FEATURE_LAYER)(graph_layer(to_features)(pixels))
    return keras.Model(pixels, graph_layer(to_logits)(features), name=f"{model.name}_cam")


# ----------------------------------------------------------------------------- maps

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
            self.gradcam = Gradcam(cam_model, model_modifier=None, clone=False)
            self.gradcam_plus_plus = GradcamPlusPlus(cam_model, model_modifier=None, clone=False)
            self.cam_layer = cam_model.get_layer(FEATURE_LAYER)

    @property
    def methods(self) -> list[str]:
        """The methods this model supports, in display order."""
        return [m for m in METHODS if m not in CAM_METHODS or self.cam_unavailable is None]

    def heatmap(self, pixels: np.ndarray, method: str = "gradcam", class_index: int = 0) -> np.ndarray:
        """A float32 map in [0, 1] for one uint8 (S, S, C) model input, at feature-map or input size."""
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
            cam = self._raw_map(method, score, seed)
        return normalise_map(np.asarray(cam)[0])

    def _raw_map(self, method, score, seed):
        if method in CAM_METHODS:
            visualizer = self.gradcam if method == "gradcam" else self.gradcam_plus_plus
            # expand_cam=False: the map is resized once, straight to the original image's size.
            return visualizer(score, seed, penultimate_layer=self.cam_layer, seek_penultimate_conv_layer=False,
                              expand_cam=False, normalize_cam=False)
        samples = self.smooth_samples if method == "smoothgrad" else 0
        return self.saliency(score, seed, smooth_samples=samples, smooth_noise=self.smooth_noise,
                             normalize_map=False)


def is_empty_map(heatmap: np.ndarray) -> bool:
    """True for a map without any signal (all zero or constant, which `normalise_map` makes all zero)."""
    values = np.asarray(heatmap, dtype=np.float32)
    return values.size == 0 or float(values.max()) <= float(values.min())


def empty_map_message(method: str) -> str:
    """Why the `method` map of an image is empty, in plain words."""
    return EMPTY_GRADCAM_MESSAGE if method == "gradcam" else EMPTY_MAP_MESSAGE.format(method=METHODS[method])


def normalise_map(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a map with no positive evidence (all equal) becomes all zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return (values - low) / (high - low)


# ----------------------------------------------------------------------------- rendering

def _jet_lut() -> np.ndarray:
    """The classic 256-entry jet colormap (blue - cyan - yellow - red) as uint8 RGB, no matplotlib."""
    x = np.linspace(0.0, 1.0, 256)
    channel = lambda centre: np.clip(1.5 - np.abs(4.0 * x - centre), 0.0, 1.0)  # noqa: E731
    return np.round(np.stack([channel(3.0), channel(2.0), channel(1.0)], axis=1) * 255).astype(np.uint8)


JET = _jet_lut()


def resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to `size` = (width, height)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[::-1] == tuple(size):
        return heatmap
    return np.asarray(Image.fromarray(heatmap, mode="F").resize(size, Image.Resampling.BILINEAR))


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to jet colours: uint8 (H, W, 3)."""
    return JET[np.clip(np.round(np.asarray(heatmap) * 255), 0, 255).astype(np.uint8)]


def overlay(image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Blend the coloured map over `image` (PIL or array, any size) at the image's own resolution."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    base = _as_rgb_array(image)
    colours = colorize(resize_map(heatmap, (base.shape[1], base.shape[0])))
    blended = (1.0 - opacity) * base.astype(np.float32) + opacity * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = displayable(np.asarray(image))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array.astype(np.uint8)


# ----------------------------------------------------------------------------- one-call helper

_EXPLAINERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# Streamlit sessions (Diagnose, Evaluate) ask from their own threads: one builds an Explainer at a time.
_EXPLAINERS_LOCK = threading.Lock()


def explainer_for(source) -> Explainer:
    """The cached Explainer of an Explainer, a core.ml.inference.Predictor or a Keras model."""
    if isinstance(source, Explainer):
        return source
    model = getattr(source, "model", source)  # a Predictor has .model
    with _EXPLAINERS_LOCK:
        if model not in _EXPLAINERS:
            _EXPLAINERS[model] = Explainer(model)
        return _EXPLAINERS[model]


def overlay_for_image(source, pixels: np.ndarray, method: str = "gradcam", class_index: int | None = None,
                      opacity: float = DEFAULT_OPACITY, image=None) -> np.ndarray:
    """The heatmap overlay for one image, for galleries: uint8 RGB (H, W, 3).

    source: a core.ml.inference.Predictor, a Keras model or an Explainer (the Explainer is built once per
    model and cached). pixels: the uint8 (S, S, C) model input. class_index: the class to explain,
    default the predicted one. image: what to draw on (PIL or array, any size), default `pixels`.
    Raises ExplainError with a readable message (e.g. Grad-CAM on a model without convolutions).
    """
    explainer = explainer_for(source)
    if class_index is None:
        class_index = predicted_class(explainer, pixels)
    heatmap = explainer.heatmap(pixels, method, class_index)
    return overlay(pixels if image is None else image, heatmap, opacity)


_RUN_EXPLAINERS_KEPT = 4


def explainer_for_run(run) -> Explainer:
    """The Explainer of a core.store.runs.Run's saved model, loaded once per run and model version
    (a retrained model has a new mtime); the last few runs' explainers are kept."""
    with _EXPLAINERS_LOCK:
        return _explainer_for_model_file(str(run.path), run.model_path.stat().st_mtime)


@functools.lru_cache(maxsize=_RUN_EXPLAINERS_KEPT)
def _explainer_for_model_file(run_folder: str, mtime: float) -> Explainer:
    from core.store.runs import Run
    return Explainer(Run(run_folder).load_model())


def heatmap_with_fallback(explainer: Explainer, pixels: np.ndarray, class_index: int) -> tuple[np.ndarray, str]:
    """(map, method): Grad-CAM, or Grad-CAM++ when the Grad-CAM map is empty (see EMPTY_GRADCAM_MESSAGE)."""
    heatmap = explainer.heatmap(pixels, "gradcam", class_index)
    if not is_empty_map(heatmap):
        return heatmap, "gradcam"
    return explainer.heatmap(pixels, "gradcam++", class_index), "gradcam++"


def predicted_class(explainer: Explainer, pixels: np.ndarray) -> int:
    probabilities = explainer.model.predict_on_batch(np.asarray(pixels, dtype=np.float32)[None])
    return int(np.argmax(probabilities[0]))
