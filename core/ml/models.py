"""Model zoo for CXR Lab: the builders of the architectures declared in core.settings.architectures,
plus helpers to build, measure and fine-tune them.

Every model takes raw pixels (float32, 0-255) of shape (size, size, channels),
optionally augments them, rescales them itself, and ends in
    Dense(num_classes, name="logits") -> Activation("softmax", name="probabilities")
so saliency methods can read the logits as the input of the last layer.
"""

import functools
import inspect
import os

import keras
import numpy as np
from keras import layers

from core.settings.architectures import (
    built_params,
    get_architecture,
    uses_pretrained_weights,
)


class WeightsUnavailableError(RuntimeError):
    """A weights file the user gave could not be loaded."""


# -----------------------------------------------------------------------------
# Architectures. Each builder takes the raw 0-255 pixel tensor (after
# augmentation), does its own rescaling and returns the features that feed the
# logits layer.


def rescale_to_unit(pixels):
    return layers.Rescaling(1 / 255)(pixels)


def build_seed_cnn(pixels, activation, dropout, dense_units):
    x = rescale_to_unit(pixels)
    x = layers.Conv2D(32, 3, activation=activation)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Conv2D(64, 3, activation=activation)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Conv2D(64, 3, activation=activation)(x)
    x = layers.Flatten()(x)
    return layers.Dense(dense_units, activation=activation)(x)


POOLING_LAYERS = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}
HEAD_LAYERS = {"flatten": layers.Flatten, "global_average": layers.GlobalAveragePooling2D}


# Keras' default BatchNorm momentum (0.99) needs thousands of steps before the moving statistics
# used at inference fit: after a 3-epoch study (~150 steps) a small ResNet scored 0.73 on the test
# set (every image called PNEUMONIA, though it trained to 95%), and 0.94 with 0.9 (PyTorch's default).
# deep_bn_cnn (the recipes' model) too since 2026-12-06: the same recipe accuracy with 0.9, and at 5
# epochs on 40% of the patients it went from one class guessed (test accuracy 0.73) to 0.94.
BN_MOMENTUM = 0.9


def conv_block(x, filters, kernel_size, convs, batch_norm, pooling, activation, pool_size=2):
    """`convs` conv layers ("same" padding), each with BatchNorm before its activation or not, then
    the pooling (none for a pool size of 1)."""
    for _ in range(convs):
        if batch_norm:
            x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(x)  # BN has the bias
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.Activation(activation)(x)
        else:
            x = layers.Conv2D(filters, kernel_size, padding="same", activation=activation)(x)
    if pooling != "none" and pool_size > 1:
        # "same" pooling rounds up, so even a 32 px input survives many blocks (32 -> 1 after 5)
        x = POOLING_LAYERS[pooling](pool_size=pool_size, padding="same")(x)
    return x


def classifier_head(x, head, dense_layers, dropout, activation, head_dropout="every_dense"):
    """Feature maps -> a vector (flatten or global average), then dense layers, each after a dropout;
    without dense layers, or with head_dropout "before_logits", one dropout just before the logits."""
    x = HEAD_LAYERS[head]()(x)
    for units in dense_layers:
        if head_dropout == "every_dense":
            x = layers.Dropout(dropout)(x)
        x = layers.Dense(units, activation=activation)(x)
    if not dense_layers or head_dropout == "before_logits":
        x = layers.Dropout(dropout)(x)
    return x


def per_block(values, single, blocks):
    """A per-block list as given, or the single value for every block when it is empty."""
    return list(values) if values else [single] * blocks


def build_cnn(pixels, filters, kernel_size, convs_per_block, batch_norm, pooling, activation, dropout,
              dense_layers, head, kernel_sizes=(), activations=(), pool_sizes=(), block_dropout=0.0,
              dropout_after_blocks=(), head_dropout="every_dense"):
    x = rescale_to_unit(pixels)
    blocks = zip(filters, per_block(kernel_sizes, kernel_size, len(filters)),
                 per_block(activations, activation, len(filters)), per_block(pool_sizes, 2, len(filters)))
    for number, (block_filters, block_kernel, block_activation, pool_size) in enumerate(blocks, start=1):
        x = conv_block(x, block_filters, block_kernel, convs_per_block, batch_norm, pooling, block_activation,
                       pool_size)
        if number in dropout_after_blocks:
            x = layers.Dropout(block_dropout)(x)
    return classifier_head(x, head, dense_layers, dropout, activation, head_dropout)


def build_deep_bn_cnn(pixels, width, dense_layers, dropout, activation):
    filters = [max(1, round(f * width)) for f in (16, 32, 64, 128, 128, 256)]
    return build_cnn(pixels, filters, kernel_size=3, convs_per_block=1, batch_norm=True, pooling="max",
                     activation=activation, dropout=dropout, dense_layers=dense_layers, head="flatten")


def conv_bn(x, filters, kernel_size, strides=1):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False)(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM)(x)


def residual_block(x, filters, strides):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides)  # 1x1 projection to the new shape
    x = layers.ReLU()(conv_bn(x, filters, 3, strides))
    x = conv_bn(x, filters, 3)
    return layers.ReLU()(layers.Add()([shortcut, x]))


def build_resnet_small(pixels, width, blocks_per_stage, dropout):
    x = rescale_to_unit(pixels)
    # strided stem: halves the resolution once so large inputs stay affordable
    x = layers.ReLU()(conv_bn(x, width, 3, strides=2))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = residual_block(x, filters, strides)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(dropout)(x)


def build_wide_cnn(pixels, filters, kernel_size, dropout):
    return build_cnn(pixels, [filters, filters], kernel_size, convs_per_block=1, batch_norm=False,
                     pooling="max", activation="relu", dropout=dropout, dense_layers=[],
                     head="global_average")


def build_deep_cnn(pixels, depth, filters, batch_norm, dropout):
    x = rescale_to_unit(pixels)
    for i in range(depth):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        if i % 2 == 1:
            x = layers.MaxPooling2D(padding="same")(x)  # "same": 1x1 maps stay 1x1
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(dropout)(x)


def build_mlp(pixels, hidden_units, activation, dropout):
    x = layers.Flatten()(rescale_to_unit(pixels))
    for units in hidden_units:
        x = layers.Dense(units, activation=activation)(x)
        x = layers.Dropout(dropout)(x)
    return x


def build_logistic(pixels, **_solver_params):
    """Pixels (rescaled to 0-1) straight to the logits: the perceptron, and the graph a scikit-learn
    logistic regression's weights fill (its penalty and C grid are read by core.ml.classic)."""
    return layers.Flatten()(rescale_to_unit(pixels))


# base name -> (keras.applications constructor, the pixels it expects: "raw" 0-255 (it rescales them
# itself), "tf" [-1, 1], or "torch" 0-1 normalised by ImageNet's channel means and deviations)
TRANSFER_BASES = {
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "resnet50_v2": ("ResNet50V2", "tf"),
    "efficientnet_b0": ("EfficientNetB0", "raw"),
    "densenet121": ("DenseNet121", "torch"),
}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
MOBILENET_V2_WEIGHT_SIZES = (96, 128, 160, 192, 224)
IMAGENET_WEIGHT_FILES = {
    "resnet50_v2": "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnet_b0": "efficientnetb0_notop.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_models_dir():
    # keras.config.keras_home() is not public in every Keras 3 release
    keras_home = getattr(keras.config, "keras_home", None)
    home = keras_home() if keras_home else os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return os.path.join(os.path.expanduser(home), "models")


def imagenet_weights_file(base, image_size, alpha=1.0):
    """The file name Keras caches the notop ImageNet weights of `base` under."""
    if base == "mobilenet_v2":
        rows = image_size if image_size in MOBILENET_V2_WEIGHT_SIZES else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return IMAGENET_WEIGHT_FILES[base]


def imagenet_weights_path(base, image_size, alpha=1.0):
    """Where Keras keeps (or would download) the notop ImageNet weights of `base`."""
    return os.path.join(keras_models_dir(), imagenet_weights_file(base, image_size, alpha))


def imagenet_unavailable_note(base, image_size, error, alpha=1.0) -> str:
    """What a run says when it could not get the ImageNet weights and trained its base from scratch."""
    folder = keras_models_dir()
    return (f"ImageNet weights for {base} are not available, so its base was trained from scratch (random "
            f"weights, every layer trainable). Keras could not download or load "
            f"'{imagenet_weights_file(base, image_size, alpha)}' in {folder} (~/.keras/models unless KERAS_HOME is "
            f"set): {error}. To start from ImageNet, copy that file into {folder} (download it on a machine "
            f"with internet access), or give it as the weights file (weights \"file\").")


def make_transfer_base(base, weights, image_size, weights_file="", notes=None, alpha=1.0):
    """The base network and whether it holds pretrained weights. ImageNet weights that cannot be
    had (offline) leave a random base and a note in `notes`; a weights file that cannot be loaded
    raises WeightsUnavailableError (training from scratch is not what its user asked for).
    `alpha`: MobileNetV2's width multiplier (the other bases have none)."""
    application = getattr(keras.applications, TRANSFER_BASES[base][0])
    width = {"alpha": alpha} if base == "mobilenet_v2" else {}
    constructor = functools.partial(application, **width)
    input_shape = (image_size, image_size, 3)
    if weights == "file":
        try:
            return constructor(include_top=False, weights=weights_file, input_shape=input_shape), True
        except Exception as error:  # missing file, another network's weights, ...
            raise WeightsUnavailableError(
                f"The weights file {weights_file!r} could not be loaded into {base}: {error}. It must hold "
                f"the weights of {base} without its top, e.g. Keras' '{imagenet_weights_file(base, image_size, alpha)}'."
            ) from error
    if weights == "imagenet":
        try:
            # MobileNetV2 has weights for 96-224 px only; at other sizes Keras warns and
            # loads the 224 px ones, which work because the base is fully convolutional
            return constructor(include_top=False, weights="imagenet", input_shape=input_shape), True
        except Exception as error:  # offline download, corrupt file, ... all mean "no weights"
            if notes is not None:
                notes.append(imagenet_unavailable_note(base, image_size, error, alpha))
    return constructor(include_top=False, weights=None, input_shape=input_shape), False


def base_inputs(pixels, base):
    """Raw 0-255 pixels (1 or 3 channels) as `base` expects them, in 3 channels."""
    expects = TRANSFER_BASES[base][1]
    x = layers.Rescaling(1 / 127.5, offset=-1)(pixels) if expects == "tf" else pixels
    if x.shape[-1] == 1:
        x = layers.Concatenate()([x, x, x])  # grayscale -> RGB without a Lambda layer
    if expects == "torch":
        x = layers.Normalization(mean=255 * IMAGENET_MEAN, variance=(255 * IMAGENET_STD) ** 2)(x)
    return x


def build_transfer(pixels, base, weights, weights_file, alpha, dropout, dense_layers, notes=None,
                   **_fine_tune_params):
    base_model, pretrained = make_transfer_base(base, weights, pixels.shape[1], weights_file, notes, alpha)
    # freeze pretrained weights; a random base (asked for, or ImageNet offline) has nothing to keep
    base_model.trainable = not pretrained
    # training=False keeps BatchNorm in inference mode, even after unfreezing
    x = base_model(base_inputs(pixels, base), training=False)
    return classifier_head(x, "global_average", dense_layers, dropout, "relu")


# -----------------------------------------------------------------------------
# Building


def build_model(arch, image_size, channels, num_classes, params=None, dropout=None, augmentation=None,
                notes=None):
    """Build `arch` for raw 0-255 images of shape (image_size, image_size, channels).

    `dropout`, if given, overrides the architecture's own dropout param.
    `augmentation` is a keras.Sequential of preprocessing layers, active in training only.
    `notes`, a list, gets what the run should say about how the model was built (ImageNet weights
    unavailable offline: the base trains from scratch). Raises WeightsUnavailableError for a
    weights file that can't be loaded.
    """
    architecture = get_architecture(arch)
    if int(image_size) < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    params = built_params(arch, params, dropout)

    inputs = keras.Input(shape=(int(image_size), int(image_size), channels), name="pixels")
    x = augmentation(inputs) if augmentation is not None else inputs
    builder = globals()[architecture.builder]
    if "notes" in inspect.signature(builder).parameters:
        params["notes"] = notes
    features = builder(x, **params)
    # Saliency (tf-keras-vis) needs logits, and its ReplaceToLinear model modifier
    # is broken on Keras 3, so the logits are the input of the separate softmax layer.
    # Both are float32 so outputs stay float32 under the mixed_float16 policy.
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(features)
    outputs = layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, outputs, name=arch)


def build_to_measure(arch, image_size, channels, num_classes, params=None, dropout=None):
    """The model these settings build, to count its parameters and MACs without downloading: a
    transfer base that would get ImageNet weights gets random ones (the same layers and counts) and
    is frozen as the pretrained one would be."""
    params = dict(params or {})
    pretrained = uses_pretrained_weights(arch, params)
    if pretrained:
        params["weights"] = "none"
    model = build_model(arch, image_size, channels, num_classes, params, dropout)
    if pretrained:
        transfer_base(model).trainable = False
    return model


# -----------------------------------------------------------------------------
# Stats and fine-tuning


def count_weights(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def layer_macs(layer):
    """Multiply-accumulates of one call of `layer` on a single image."""
    if isinstance(layer, layers.DepthwiseConv2D):
        out_h, out_w = layer.output.shape[1:3]
        kh, kw = layer.kernel_size
        return out_h * out_w * kh * kw * layer.input.shape[-1] * layer.depth_multiplier
    if isinstance(layer, layers.SeparableConv2D):
        out_h, out_w, out_c = layer.output.shape[1:4]
        kh, kw = layer.kernel_size
        in_c = layer.input.shape[-1]
        return out_h * out_w * (kh * kw * in_c * layer.depth_multiplier + in_c * layer.depth_multiplier * out_c)
    if isinstance(layer, layers.Conv2D):
        out_h, out_w, out_c = layer.output.shape[1:4]
        kh, kw = layer.kernel_size
        return out_h * out_w * kh * kw * (layer.input.shape[-1] // layer.groups) * out_c
    if isinstance(layer, layers.Dense):
        leading = int(np.prod(layer.input.shape[1:-1]))  # 1 for a flat input
        return leading * layer.input.shape[-1] * layer.units
    return 0


def all_layers(model):
    """Every layer of `model`, recursing into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def model_stats(model):
    return {
        "trainable_params": count_weights(model.trainable_weights),
        "total_params": count_weights(model.weights),
        "macs": int(sum(layer_macs(layer) for layer in all_layers(model))),
    }


def output_shape_text(layer) -> str:
    """'64 x 64 x 32': the output shape of one image (the batch dimension left out)."""
    output = layer.output
    if isinstance(output, (list, tuple)):  # a layer with several outputs: the first one's
        output = output[0]
    return " x ".join(str(d) for d in output.shape[1:]) or "1"


def layer_table(model, prefix: str = "") -> list[dict]:
    """One row per layer (nested models' layers under '<model name>/'): name, type, output shape,
    parameters and MACs per image; the rows add up to model_stats(model)."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            rows += layer_table(layer, f"{prefix}{layer.name}/")
            continue
        rows.append({"layer": prefix + layer.name, "type": type(layer).__name__,
                     "output_shape": output_shape_text(layer), "params": count_weights(layer.weights),
                     "macs": int(layer_macs(layer))})
    return rows


def class_weight_images(model) -> np.ndarray:
    """A linear model's weights (the perceptron, a logistic regression) as one image per class, shape
    (classes, height, width, channels): [k, i, j, c] is the weight of pixel (i, j, c), rescaled to
    0-1, in class k's logit. Raises ValueError for a model whose logits do not read the pixels."""
    kernel = np.asarray(model.get_layer("logits").kernel)
    image_shape = tuple(model.input.shape[1:])
    if kernel.shape[0] != int(np.prod(image_shape)):
        raise ValueError(f"model {model.name!r} has no weight per pixel: its logits read {kernel.shape[0]} "
                         f"values, not the {int(np.prod(image_shape))} pixels of an image")
    return kernel.T.reshape(-1, *image_shape)  # Flatten is row-major over (height, width, channels)


def transfer_base(model):
    """The nested pretrained base of a transfer model (augmentation is a Sequential)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
            return layer
    raise ValueError(f"Model {model.name!r} has no nested base model; only transfer models can be fine-tuned")


def unfreeze_top_layers(model, n_layers):
    """Make the top `n_layers` non-BatchNorm layers of the base trainable, the rest frozen.

    BatchNorm layers stay frozen (as in keras-io's fine-tuning guide) so their
    statistics are not wrecked by small batches. Recompile the model afterwards.
    Returns how many layers of the base are now trainable.
    """
    base = transfer_base(model)
    base.trainable = True  # a frozen parent would override its layers' flags
    candidates = []
    for layer in base.layers:
        layer.trainable = False
        if not isinstance(layer, (layers.BatchNormalization, layers.InputLayer)):
            candidates.append(layer)
    top = candidates[-n_layers:] if n_layers > 0 else []
    for layer in top:
        layer.trainable = True
    if not top:
        base.trainable = False
    return len(top)
