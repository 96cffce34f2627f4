"""The model graph a saliency map is computed on (core/ml/explain.py): the logits, the feature map
Grad-CAM weights, and the cut that puts that feature map into the flat graph; where each cell of the
feature map looks in the input image (FeatureGrid); and the copy of a model with a randomised
classifier head that the sanity check compares against. TensorFlow and Keras are imported inside
functions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.ml import keras_graph


FEATURE_LAYER = "explain_feature_map"
NO_CONV_MESSAGE = ("Grad-CAM is not defined for this model: it has no convolutional layer, so there is "
                   "no spatial feature map to weight. Use vanilla saliency or SmoothGrad instead.")


class ExplainError(ValueError):
    """A map that cannot be computed for this model or these settings; the message says why."""


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
