"""The architectures a run can use: names, descriptions and each one's parameters (no TensorFlow).

The builders live in core.ml.models; here is what forms, validation and sweeps need to know, so
checking a config never imports Keras. A parameter is declared like any other setting.
"""
from dataclasses import dataclass

from core.settings.declare import Setting

Param = Setting  # an architecture's parameter: one more declared setting


@dataclass(frozen=True)
class NonEmptyListParam(Setting):
    """A list parameter that needs at least one entry (a CNN needs at least one conv block)."""

    def expected(self) -> str:
        return "a non-empty " + super().expected().removeprefix("a ")

    def check(self, value):
        value = super().check(value)
        if not value:
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        return value


ACTIVATIONS = ("relu", "elu", "leaky_relu", "tanh", "sigmoid", "softmax")
TRANSFER_BASE_NAMES = ("mobilenet_v2", "resnet50_v2", "efficientnet_b0")


@dataclass(frozen=True)
class Architecture:
    name: str  # registry key
    title: str  # human name for the UI
    description: str  # one or two sentences for the UI
    params: tuple[Param, ...]
    builder: str  # the function of core.ml.models that builds it: builder(pixels_0_255, **params)


def dropout_param(default, help="Dropout rate before the classifier."):
    return Param("dropout", default, help, min=0.0, max=0.9)


CNN_POOLINGS = ("max", "average", "none")
CNN_HEADS = ("flatten", "global_average")
CNN_PARAMS = (
    NonEmptyListParam("filters", [32, 64, 64], "Filters of each conv block: one block per entry, each "
                      "followed by the pooling.", min=1, max=1024),
    Param("kernel_size", 3, "Kernel size of every conv layer.", min=1, max=11),
    Param("convs_per_block", 1, "Conv layers in each block (all with the block's filters).", min=1, max=4),
    Param("batch_norm", False, "BatchNormalization after every conv layer (which then has no bias)."),
    Param("pooling", "max", "2x2 pooling after every block; none keeps the resolution.", choices=CNN_POOLINGS),
    Param("activation", "relu", "Activation of the conv and dense layers.", choices=ACTIVATIONS),
    dropout_param(0.25, "Dropout rate before each dense layer (before the logits when there is none)."),
    Param("dense_layers", [64], "Units of each hidden dense layer; empty for none.", min=1, max=4096),
    Param("head", "flatten", "How the last feature maps become a vector: flatten them, or average "
          "each map (global average pooling: far fewer dense weights).", choices=CNN_HEADS),
)


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture(
            "seed_cnn",
            "Seed CNN (3 conv layers)",
            "The classic notebook model: three small conv layers with pooling and "
            "dropout, then one dense layer.",
            (
                Param("activation", "relu", "Activation of all hidden layers.", choices=ACTIVATIONS),
                dropout_param(0.25),
                Param("dense_units", 64, "Units of the hidden dense layer.", min=1, max=4096),
            ),
            "build_seed_cnn",
        ),
        Architecture(
            "cnn",
            "Configurable CNN",
            "Conv blocks from a list of filters (conv layers, optional BatchNorm, pooling), then "
            "flatten or global average pooling and dense layers. Presets give classic layouts.",
            CNN_PARAMS,
            "build_cnn",
        ),
        Architecture(
            "deep_bn_cnn",
            "Deep CNN with BatchNorm (6 blocks)",
            "Six Conv-BatchNorm-activation-pool blocks (16 to 256 filters times width), "
            "then dense layers.",
            (
                Param("width", 1.0, "Multiplier on the filters of every block.", min=0.25, max=4.0),
                Param("dense_layers", [128], "Units of each hidden dense layer.", min=1, max=4096),
                dropout_param(0.3),
                Param("activation", "relu", "Activation of all hidden layers.", choices=ACTIVATIONS),
            ),
            "build_deep_bn_cnn",
        ),
        Architecture(
            "resnet_small",
            "Small ResNet (3 stages)",
            "A strided stem and three stages of residual blocks (width, 2x, 4x filters), "
            "then global average pooling.",
            (
                Param("width", 32, "Filters of the first stage (doubled per stage).", min=4, max=256),
                Param("blocks_per_stage", 2, "Residual blocks in each stage.", min=1, max=8),
                dropout_param(0.2),
            ),
            "build_resnet_small",
        ),
        Architecture(
            "wide_cnn",
            "Wide CNN (2 wide conv layers)",
            "Two wide conv layers with large kernels and pooling, then global average "
            "pooling: few layers, many filters.",
            (
                Param("filters", 128, "Filters of each conv layer.", min=4, max=512),
                Param("kernel_size", 5, "Kernel size of each conv layer.", min=1, max=11),
                dropout_param(0.3),
            ),
            "build_wide_cnn",
        ),
        Architecture(
            "deep_cnn",
            "Deep thin CNN",
            "Many thin 3x3 conv layers with pooling after every second one, then global "
            "average pooling: many layers, few filters.",
            (
                Param("depth", 10, "Number of conv layers.", min=2, max=40),
                Param("filters", 24, "Filters of every conv layer.", min=4, max=256),
                Param("batch_norm", True, "BatchNormalization after every conv layer."),
                dropout_param(0.2),
            ),
            "build_deep_cnn",
        ),
        Architecture(
            "mlp",
            "Multilayer perceptron",
            "Flattened pixels through fully connected hidden layers: a baseline without "
            "convolutions.",
            (
                Param("hidden_units", [256, 128], "Units of each hidden layer.", min=1, max=8192),
                Param("activation", "relu", "Activation of the hidden layers.", choices=ACTIVATIONS),
                dropout_param(0.2),
            ),
            "build_mlp",
        ),
        Architecture(
            "logistic",
            "Logistic regression",
            "Softmax regression on the raw pixels: the simplest possible baseline.",
            (),
            "build_logistic",
        ),
        Architecture(
            "transfer",
            "Transfer learning (Keras Applications)",
            "A MobileNetV2, ResNet50V2 or EfficientNetB0 base, ImageNet-pretrained and "
            "frozen (optionally fine-tuned later) or trained from scratch.",
            (
                Param("base", "mobilenet_v2", "Pretrained base network.", choices=TRANSFER_BASE_NAMES),
                Param(
                    "weights",
                    "imagenet",
                    'Initial weights of the base; "none" trains it from scratch.',
                    choices=("imagenet", "none"),
                ),
                dropout_param(0.2),
                # the fine_tune_* params are read by the trainer, not by the builder
                Param("fine_tune_epochs", 0, "Extra epochs with the top of the base unfrozen.", min=0, max=100),
                Param("fine_tune_layers", 30, "Top base layers to unfreeze when fine-tuning.", min=1, max=1000),
                Param("fine_tune_lr_factor", 0.1, "Learning rate multiplier when fine-tuning.", min=1e-4, max=1.0),
            ),
            "build_transfer",
        ),
    )
}


def get_architecture(arch):
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def default_params(arch):
    params = get_architecture(arch).params
    # copy lists so callers can't mutate the registry defaults
    return {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in params}


def resolve_params(arch, params):
    """The architecture's defaults overlaid with `params`, validated."""
    architecture = get_architecture(arch)
    params = dict(params or {})
    valid = {p.name: p for p in architecture.params}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {', '.join(unknown)} for architecture {arch!r}; "
            f"valid parameters: {', '.join(valid) or '(none)'}"
        )
    resolved = default_params(arch)
    for name, value in params.items():
        resolved[name] = valid[name].check(value)
    return resolved


def built_params(arch, params, dropout=None):
    """Every parameter of `arch` as its model is built: the defaults overlaid with `params`, and
    the run's own dropout (TrainConfig.dropout), when it sets one, in place of the architecture's.
    An architecture without a dropout parameter (logistic) ignores it."""
    params = dict(params or {})
    if dropout is not None and "dropout" in default_params(arch):
        params["dropout"] = dropout
    return resolve_params(arch, params)


def uses_pretrained_weights(arch, params):
    """Whether these settings start from downloaded ImageNet weights (a transfer base)."""
    if "weights" not in default_params(arch):
        return False
    return resolve_params(arch, params)["weights"] == "imagenet"


# ----------------------------------------------------------------------------- presets of the configurable CNN

@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    params: dict  # overrides of the cnn defaults


CNN_PRESETS = {
    preset.name: preset
    for preset in (
        Preset("seed", "Seed CNN layout (3 conv layers)",
               {"filters": [32, 64, 64], "dense_layers": [64], "dropout": 0.25}),
        Preset("vgg", "VGG-style (2 convs per block)",
               {"filters": [32, 64, 128], "convs_per_block": 2, "batch_norm": True}),
        # the defaults of deep_bn_cnn and wide_cnn exactly: the same graph, layer for layer
        Preset("deep_bn", "Deep BatchNorm CNN (as deep_bn_cnn)",
               {"filters": [16, 32, 64, 128, 128, 256], "kernel_size": 3, "convs_per_block": 1,
                "batch_norm": True, "pooling": "max", "activation": "relu", "dropout": 0.3,
                "dense_layers": [128], "head": "flatten"}),
        Preset("wide", "Wide (2 wide layers, as wide_cnn)",
               {"filters": [128, 128], "kernel_size": 5, "convs_per_block": 1, "batch_norm": False,
                "pooling": "max", "activation": "relu", "dropout": 0.3, "dense_layers": [],
                "head": "global_average"}),
        Preset("deep_thin", "Deep and thin (6 blocks of 2 x 16 filters)",
               {"filters": [16] * 6, "convs_per_block": 2, "batch_norm": True, "dense_layers": [],
                "head": "global_average", "dropout": 0.2}),
        Preset("wide_deep", "Wide and deep (4 blocks of 2 convs, 64 to 512 filters)",
               {"filters": [64, 128, 256, 512], "convs_per_block": 2, "batch_norm": True,
                "dense_layers": [256], "head": "global_average", "dropout": 0.4}),
    )
}


def preset_params(name):
    """Every parameter of the configurable CNN under preset `name` (a fresh copy)."""
    if name not in CNN_PRESETS:
        raise ValueError(f"Unknown CNN preset {name!r}; choose one of: {', '.join(CNN_PRESETS)}")
    return resolve_params("cnn", CNN_PRESETS[name].params)
