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

TensorFlow and tf-keras-vis are imported inside functions so importing this module stays fast.
"""
from __future__ import annotations

import functools
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.data.imaging import displayable
from core.ml import keras_graph

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
FEATURE_LAYER = "explain_feature_map"
DEFAULT_OPACITY = 0.45
NO_CONV_MESSAGE = ("Grad-CAM is not defined for this model: it has no convolutional layer, so there is "
                   "no spatial feature map to weight. Use vanilla saliency or SmoothGrad instead.")
EMPTY_CAM_REASON = (
    "{method} keeps only feature-map evidence that raises the score of {target} (a ReLU drops the rest), "
    "and here the weighted evidence speaks against {target} everywhere.")
TWO_CLASS_REASON = (
    " With two classes, evidence for one class is evidence against the other, so the two classes' maps "
    "are close to mirror images and one of them is nearly always empty: the model reads {target} mostly "
    "from the absence of what it calls {other}. An empty map says nothing about whether the prediction is right.")
EMPTY_MAP_MESSAGE = "The {method} map of {target} is empty for this image (no pixel has any positive evidence)."
SANITY_RHO_LIMIT = 0.5  # a map that keeps a rank correlation this high with a randomised model's map is suspect


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
            return keras_graph.producer(inputs[0]).name
    return None


def _spatial_size(model, layer_name: str) -> int:
    shape = _outer_output(model, model.get_layer(layer_name)).shape
    return int(shape[1] or 0) * int(shape[2] or 0)


def _outer_output(model, layer):
    """The output tensor of `layer` in `model`'s own graph.

    For a nested model `layer.output` is the tensor of its inner graph, so it is taken from the
    input of the layer that consumes it instead.
    """
    import keras
    if not isinstance(layer, keras.Model):
        return layer.output
    for consumer in model.layers:
        inputs = consumer.input if isinstance(consumer.input, list) else [consumer.input]
        for tensor in inputs:
            if keras_graph.producer(tensor) is layer:
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


# ----------------------------------------------------------------------------- where the cells look

@dataclass(frozen=True)
class FeatureGrid:
    """Where a feature map's cells sit on the model input: along each axis, cell i is centred on input
    pixel first + i * step (pixel p spans p - 0.5 ... p + 0.5). A "valid"-padded CNN (seed_cnn) sees only the middle of its input: its
    last 12x12 map of a 64 px image is centred on pixels 8.5 ... 52.5, so stretching the map over the
    whole image drew its top row on the neck and its bottom row on the abdomen."""
    cells: tuple[int, int]
    first: tuple[float, float]
    step: tuple[float, float]
    size: int

    def on_input(self, cam: np.ndarray) -> np.ndarray:
        """The (cells) map interpolated bilinearly onto the (size, size) input grid; beyond the outer
        cells' centres it fades to zero over one cell (no cell is centred there), without a hard edge."""
        from scipy.ndimage import map_coordinates
        axes = [(np.arange(self.size) - first) / step for first, step in zip(self.first, self.step)]
        rows, cols = np.meshgrid(*axes, indexing="ij")
        return map_coordinates(np.asarray(cam, np.float32), [rows, cols], order=1, mode="grid-constant",
                               cval=0.0).astype(np.float32)


def stretched_grid(cells: tuple[int, int], size: int) -> FeatureGrid:
    """The usual assumption: the cells tile the whole input evenly."""
    steps = tuple(size / n for n in cells)
    return FeatureGrid(cells, tuple(step / 2 - 0.5 for step in steps), steps, size)


def feature_grid(model, layer_name: str) -> FeatureGrid:
    """Where the cells of `layer_name`'s feature map look, from the geometry (kernel, stride, padding)
    of the layers between it and the input; the even tiling of `stretched_grid` when a layer on the way
    changes the map's size in a way not modelled here."""
    feature = _outer_output(model, model.get_layer(layer_name))
    size, cells = int(model.input_shape[1]), (int(feature.shape[1]), int(feature.shape[2]))
    placement = _placement(feature)
    if placement is None:
        return stretched_grid(cells, size)
    (first_row, step_row), (first_col, step_col) = placement
    return FeatureGrid(cells, (first_row, first_col), (step_row, step_col), size)


def _placement(tensor):
    """((first, step) of rows, (first, step) of columns): where cell i of `tensor` is centred in the
    input of the graph that produced it, walking down through each layer's first input; None if unknown."""
    import keras
    placement = ((0.0, 1.0), (0.0, 1.0))
    while (layer := keras_graph.producer(tensor)) is not None:
        inputs = keras_graph.producer_inputs(tensor)
        if not inputs:  # the Input layer: we are on the input's own pixel grid
            return placement
        below = inputs[0]
        if isinstance(layer, keras.Model):
            inner = _placement(layer.outputs[0])
            per_layer = inner
        else:
            per_layer = _layer_placement(layer, below.shape, tensor.shape)
        if per_layer is None:
            return None
        placement = tuple((first * step_in + offset, step * step_in)
                          for (first, step), (offset, step_in) in zip(placement, per_layer))
        tensor = below
    return placement


def _layer_placement(layer, input_shape, output_shape):
    """((offset, stride) of rows, of columns) of one layer: output cell o is centred on input pixel
    o * stride + offset; None for a layer that changes the map's size in an unknown way."""
    config = layer.get_config()
    if len(input_shape) != 4 or len(output_shape) != 4:
        return None
    if "kernel_size" in config or "pool_size" in config:
        kernel = config.get("kernel_size") or config.get("pool_size")
        strides = config.get("strides") or kernel
        dilation = config.get("dilation_rate", (1, 1))
        result = []
        for axis in (0, 1):
            extent = (kernel[axis] - 1) * dilation[axis] + 1
            size_in, stride = int(input_shape[axis + 1]), strides[axis]
            pad = 0
            if config.get("padding") == "same":  # TensorFlow pads the extra pixel after, not before
                pad = max((-(-size_in // stride) - 1) * stride + extent - size_in, 0) // 2
            result.append(((extent - 1) / 2 - pad, float(stride)))
        return tuple(result)
    if "padding" in config and layer.__class__.__name__ == "ZeroPadding2D":
        return tuple((-float(before), 1.0) for before, _ in config["padding"])
    if "cropping" in config:
        return tuple((float(before), 1.0) for before, _ in config["cropping"])
    if tuple(input_shape[1:3]) == tuple(output_shape[1:3]):
        return ((0.0, 1.0), (0.0, 1.0))
    return None


# ----------------------------------------------------------------------------- empty maps, fallback

def is_empty_map(heatmap: np.ndarray) -> bool:
    """True for a map without any signal (all zero or constant, which `normalise_map` makes all zero)."""
    values = np.asarray(heatmap, dtype=np.float32)
    return values.size == 0 or float(values.max()) <= float(values.min())


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


# ----------------------------------------------------------------------------- a run's explainer

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


# ----------------------------------------------------------------------------- sanity check

@dataclass(frozen=True)
class SanityCheck:
    """Adebayo et al. (2018), "Sanity checks for saliency maps": a map that explains what the model
    learned must change when the learned weights are replaced by random ones. rho is the Spearman rank
    correlation between the map and the same map of the model with a re-initialised classifier head;
    None when the randomised model's map is empty (it changed completely)."""
    rho: float | None

    @property
    def changed(self) -> bool:
        return self.rho is None or self.rho < SANITY_RHO_LIMIT

    def verdict(self) -> str:
        """'map changes when the model is randomised: yes (ρ = 0.12)'."""
        value = "the randomised model's map is empty" if self.rho is None else f"ρ = {self.rho:.2f}"
        return f"map changes when the model is randomised: {'yes' if self.changed else 'no'} ({value})"

    def sentence(self) -> str:
        """The verdict (markdown) and what it means, in one line."""
        verdict = self.verdict().replace(": yes", ": **yes**").replace(": no", ": **no**")
        meaning = ("it depends on what the model learned." if self.changed else
                   "it shows the image's structure more than what the model learned; do not read it as evidence.")
        return f"Sanity check: {verdict}: {meaning}"


def sanity_check(explainer: Explainer, pixels: np.ndarray, method: str, class_index: int,
                 heatmap: np.ndarray) -> SanityCheck:
    """Compare `heatmap` (the `method` map of `class_index`) with the randomised-head model's map."""
    from scipy.stats import spearmanr
    randomised = explainer.randomised().heatmap(pixels, method, class_index)
    if is_empty_map(randomised):
        return SanityCheck(None)
    return SanityCheck(float(spearmanr(np.ravel(heatmap), np.ravel(randomised)).statistic))


def head_layers(model) -> list:
    """The Dense layers after the model's last spatial (batch, h, w, c) output: the classifier head."""
    import keras
    last_spatial = max((i for i, layer in enumerate(model.layers)
                        if len(_outer_output(model, layer).shape) == 4), default=-1)
    return [layer for layer in model.layers[last_spatial + 1:] if isinstance(layer, keras.layers.Dense)]


def randomised_head_copy(model, seed: int = 0):
    """A copy of `model` with the trained weights, except the classifier head: Glorot-uniform kernels
    and zero biases, as Keras initialises a Dense layer (seeded, so the check is repeatable)."""
    import keras
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for layer in head_layers(copy):
        layer.set_weights([_glorot_uniform(rng, w.shape) if w.ndim >= 2 else np.zeros_like(w)
                           for w in layer.get_weights()])
    return copy


def _glorot_uniform(rng, shape) -> np.ndarray:
    limit = np.sqrt(6.0 / (int(np.prod(shape[:-1])) + int(shape[-1])))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def predicted_class(explainer: Explainer, pixels: np.ndarray) -> int:
    probabilities = explainer.model.predict_on_batch(np.asarray(pixels, dtype=np.float32)[None])
    return int(np.argmax(probabilities[0]))
