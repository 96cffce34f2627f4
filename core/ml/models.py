"""Model zoo for CXR Lab: the builders of the architectures declared in core.settings.architectures,
plus helpers to build, measure and fine-tune them.

Every model takes raw pixels (float32, 0-255) of shape (size, size, channels),
optionally augments them, rescales them itself, and ends in
    Dense(num_classes, name="logits") -> Activation("softmax", name="probabilities")
so saliency methods can read the logits as the input of the last layer.
"""

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
    """Pretrained weights could not be downloaded or loaded."""


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
BN_MOMENTUM = 0.9
KERAS_BN_MOMENTUM = 0.99  # deep_bn_cnn keeps it: the recipe's measured accuracy was trained with it


def conv_block(x, filters, kernel_size, convs, batch_norm, pooling, activation, bn_momentum=BN_MOMENTUM):
    """`convs` conv layers ("same" padding), each with BatchNorm before its activation or not, then
    the pooling."""
    for _ in range(convs):
        if batch_norm:
            x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(x)  # BN has the bias
            x = layers.BatchNormalization(momentum=bn_momentum)(x)
            x = layers.Activation(activation)(x)
        else:
            x = layers.Conv2D(filters, kernel_size, padding="same", activation=activation)(x)
    if pooling != "none":
        # "same" pooling rounds up, so even a 32 px input survives many blocks (32 -> 1 after 5)
        x = POOLING_LAYERS[pooling](pool_size=2, padding="same")(x)
    return x


def classifier_head(x, head, dense_layers, dropout, activation):
    """Feature maps -> a vector (flatten or global average), then dense layers, each after a dropout;
    without dense layers the dropout comes just before the logits."""
    x = HEAD_LAYERS[head]()(x)
    for units in dense_layers:
        x = layers.Dropout(dropout)(x)
        x = layers.Dense(units, activation=activation)(x)
    if not dense_layers:
        x = layers.Dropout(dropout)(x)
    return x


def build_cnn(pixels, filters, kernel_size, convs_per_block, batch_norm, pooling, activation, dropout,
              dense_layers, head, bn_momentum=BN_MOMENTUM):
    x = rescale_to_unit(pixels)
    for block_filters in filters:
        x = conv_block(x, block_filters, kernel_size, convs_per_block, batch_norm, pooling, activation,
                       bn_momentum)
    return classifier_head(x, head, dense_layers, dropout, activation)


def build_deep_bn_cnn(pixels, width, dense_layers, dropout, activation):
    filters = [max(1, round(f * width)) for f in (16, 32, 64, 128, 128, 256)]
    return build_cnn(pixels, filters, kernel_size=3, convs_per_block=1, batch_norm=True, pooling="max",
                     activation=activation, dropout=dropout, dense_layers=dense_layers, head="flatten",
                     bn_momentum=KERAS_BN_MOMENTUM)


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


def build_logistic(pixels):
    return layers.Flatten()(rescale_to_unit(pixels))


# base name -> (keras.applications constructor, whether it takes raw 0-255 pixels rather than [-1, 1])
TRANSFER_BASES = {
    "mobilenet_v2": ("MobileNetV2", False),
    "resnet50_v2": ("ResNet50V2", False),
    "efficientnet_b0": ("EfficientNetB0", True),  # has its own Rescaling inside
}
MOBILENET_V2_WEIGHT_SIZES = (96, 128, 160, 192, 224)


def keras_models_dir():
    # keras.config.keras_home() is not public in every Keras 3 release
    keras_home = getattr(keras.config, "keras_home", None)
    home = keras_home() if keras_home else os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return os.path.join(os.path.expanduser(home), "models")


def imagenet_weights_file(base, image_size):
    """The file name Keras caches the notop ImageNet weights of `base` under."""
    if base == "mobilenet_v2":
        rows = image_size if image_size in MOBILENET_V2_WEIGHT_SIZES else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    if base == "resnet50_v2":
        return "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return "efficientnetb0_notop.h5"


def imagenet_weights_path(base, image_size):
    """Where Keras keeps (or would download) the notop ImageNet weights of `base`."""
    return os.path.join(keras_models_dir(), imagenet_weights_file(base, image_size))


def make_transfer_base(base, weights, image_size):
    constructor = getattr(keras.applications, TRANSFER_BASES[base][0])
    input_shape = (image_size, image_size, 3)
    if weights == "none":
        return constructor(include_top=False, weights=None, input_shape=input_shape)
    try:
        # MobileNetV2 has weights for 96-224 px only; at other sizes Keras warns and
        # loads the 224 px ones, which work because the base is fully convolutional
        return constructor(include_top=False, weights="imagenet", input_shape=input_shape)
    except Exception as error:  # offline download, corrupt file, ... all mean "no weights"
        folder = keras_models_dir()
        raise WeightsUnavailableError(
            f"ImageNet weights for {base} are not available: Keras could not download or load "
            f"'{imagenet_weights_file(base, image_size)}' in {folder} (~/.keras/models unless "
            f"KERAS_HOME is set). Error: {error}. Copy that file into {folder} (download it on a "
            f"machine with internet access), or set weights to \"none\" to train {base} from scratch."
        ) from error


def build_transfer(pixels, base, weights, dropout, **_fine_tune_params):
    base_model = make_transfer_base(base, weights, pixels.shape[1])
    _, takes_raw_pixels = TRANSFER_BASES[base]
    x = pixels if takes_raw_pixels else layers.Rescaling(1 / 127.5, offset=-1)(pixels)
    if x.shape[-1] == 1:
        x = layers.Concatenate()([x, x, x])  # grayscale -> RGB without a Lambda layer
    # with pretrained weights freeze the base; a random base has nothing to keep
    base_model.trainable = weights == "none"
    # training=False keeps BatchNorm in inference mode, even after unfreezing
    x = base_model(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(dropout)(x)


# -----------------------------------------------------------------------------
# Building


def build_model(arch, image_size, channels, num_classes, params=None, dropout=None, augmentation=None):
    """Build `arch` for raw 0-255 images of shape (image_size, image_size, channels).

    `dropout`, if given, overrides the architecture's own dropout param.
    `augmentation` is a keras.Sequential of preprocessing layers, active in training only.
    Raises WeightsUnavailableError for transfer with ImageNet weights that can't be loaded.
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
    features = globals()[architecture.builder](x, **params)
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
