"""The architectures a run can use: names, descriptions and each one's parameters (no TensorFlow).

The builders live in core.ml.models; here is what forms, validation and sweeps need to know, so
checking a config never imports Keras. A parameter is declared like any other setting.
"""
from collections.abc import Callable
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


@dataclass(frozen=True)
class ShortListParam(Setting):
    """A list parameter of at most `max_items` entries (a head of 0 to 5 dense layers)."""
    max_items: int = 0

    def expected(self) -> str:
        return f"{super().expected()}, at most {self.max_items} of them"

    def check(self, value):
        value = super().check(value)
        if len(value) > self.max_items:
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        return value


@dataclass(frozen=True)
class NamesParam(Setting):
    """A list of names, each one of `names` ("relu, elu" from a text box): one per conv block. Not
    `choices`, which would make it a single choice."""
    names: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "kind", str)  # drawn as a text box; the value is a list of names

    def expected(self) -> str:
        return "a list of names, each one of " + ", ".join(self.names)

    def check(self, value):
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)) or any(name not in self.names for name in value):
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        return list(value)


@dataclass(frozen=True)
class NumbersParam(Setting):
    """A non-empty list of numbers in [min, max] ("0.01, 1, 100" from a text box), kept sorted without
    repeats: the grid of a setting chosen on validation (a logistic regression's C)."""

    def __post_init__(self):
        object.__setattr__(self, "kind", str)  # drawn as a text box; the value is a list of numbers

    def expected(self) -> str:
        return f"a non-empty list of numbers between {self.min:g} and {self.max:g}"

    def check(self, value):
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        try:
            if not isinstance(items, (list, tuple)) or any(isinstance(item, bool) for item in items):
                raise TypeError
            numbers = sorted({float(item) for item in items})
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}") from None
        if not numbers or any(not self.min <= number <= self.max for number in numbers):
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        return numbers


ACTIVATIONS = ("relu", "elu", "leaky_relu", "tanh", "sigmoid", "softmax")
TRANSFER_BASE_NAMES = ("mobilenet_v2", "resnet50_v2", "efficientnet_b0", "densenet121")
TRANSFER_WEIGHTS = ("imagenet", "file", "none")
# MobileNetV2's width multipliers with ImageNet weights (Sandler et al. 2018, Table 6 and Keras)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
HEAD_DROPOUTS = ("every_dense", "before_logits")
LOGISTIC_PENALTIES = ("l1", "l2")
C_GRID = [0.001, 0.01, 0.1, 1.0, 10.0]
# How an architecture's weights are found: gradient descent in Keras (core.ml.training), or a
# scikit-learn solver run to convergence (core.ml.classic), whose weights then fill the same Keras graph.
FITS = ("keras", "scikit-learn")


@dataclass(frozen=True)
class Architecture:
    name: str  # registry key
    title: str  # human name for the UI
    description: str  # one or two sentences for the UI
    params: tuple[Param, ...]
    builder: str  # the function of core.ml.models that builds it: builder(pixels_0_255, **params)
    check: Callable[[dict], None] | None = None  # raises ValueError when resolved params disagree
    fit: str = "keras"  # one of FITS


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
    # per-block settings: empty keeps the single value above for every block (as before they existed)
    Param("kernel_sizes", [], "Kernel size of each block's conv layers, one per block; empty: kernel "
          "size for every block.", min=1, max=11),
    NamesParam("activations", [], "Activation of each block's conv layers, one per block; empty: "
               "activation for every block (the dense layers use activation).", names=ACTIVATIONS),
    Param("pool_sizes", [], "Pooling window (and stride) after each block, one per block; 1 keeps that "
          "block's resolution; empty: 2 after every block.", min=1, max=8),
    Param("block_dropout", 0.25, "Dropout rate after each conv block listed in dropout after blocks.",
          min=0.0, max=0.9),
    Param("dropout_after_blocks", [], "The conv blocks (numbered from 1) followed by a Dropout at block "
          "dropout; empty: none.", min=1, max=64),
    Param("head_dropout", "every_dense", "Where the head's dropout goes: before every dense layer (before "
          "the logits when there is none), or once, just before the logits.", choices=HEAD_DROPOUTS),
)


def check_cnn_blocks(params: dict) -> None:
    """Per-block lists hold one entry per block (or none); dropout goes after blocks that exist."""
    blocks = len(params["filters"])
    for name in ("kernel_sizes", "activations", "pool_sizes"):
        if params[name] and len(params[name]) != blocks:
            raise ValueError(f"{name} must have one entry per conv block ({blocks}, as filters) or none; "
                             f"got {params[name]!r}")
    beyond = [block for block in params["dropout_after_blocks"] if block > blocks]
    if beyond:
        raise ValueError(f"dropout_after_blocks names block(s) {beyond} but there are {blocks} conv blocks")


def check_transfer(params: dict) -> None:
    if params["weights"] == "file" and not params["weights_file"].strip():
        raise ValueError("weights 'file' needs weights_file: the path of a .h5 or .weights.h5 file of the base")
    if params["alpha"] != 1.0 and params["base"] != "mobilenet_v2":
        raise ValueError(f"alpha (the width multiplier) is MobileNetV2's; {params['base']} has none: leave it at 1.0")


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
            check_cnn_blocks,
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
            "Single-layer perceptron (logistic regression)",
            "One dense layer from the raw pixels to the classes (softmax regression): the simplest "
            "baseline, whose weights can be seen as one image per class.",
            (),
            "build_logistic",
        ),
        Architecture(
            "logistic_regression",
            "Logistic regression (scikit-learn, L1/L2)",
            "The perceptron's model (pixels to class scores) fitted by scikit-learn to convergence, with an "
            "L1 or L2 penalty whose strength C is chosen on the validation patients from a grid: the "
            "classic linear baseline. Epochs, optimizer, batch size and augmentation do not apply.",
            (
                Param("penalty", "l2", "L2 shrinks every weight; L1 sets most of them to zero (a sparse "
                      "weight image).", choices=LOGISTIC_PENALTIES),
                NumbersParam("c_grid", C_GRID, "The inverse penalty strengths C to try: one fit each, the "
                             "one with the lowest validation log-loss is kept.", label="C grid", min=1e-6,
                             max=1e6),
            ),
            "build_logistic",
            fit="scikit-learn",
        ),
        Architecture(
            "transfer",
            "Transfer learning (Keras Applications)",
            "A MobileNetV2, ResNet50V2, EfficientNetB0 or DenseNet121 base, ImageNet-pretrained and "
            "frozen (then optionally fine-tuned: its top layers unfrozen at a lower rate) or trained "
            "from scratch, under a head of 0 to 5 dense layers.",
            (
                Param("base", "mobilenet_v2", "Pretrained base network.", choices=TRANSFER_BASE_NAMES),
                Param(
                    "weights",
                    "imagenet",
                    'Initial weights of the base: ImageNet (downloaded by Keras; offline, the run says so '
                    'and trains the base from scratch), a weights file, or "none" (from scratch).',
                    choices=TRANSFER_WEIGHTS,
                ),
                Param("weights_file", "", "With weights 'file': a .h5 or .weights.h5 file of the base "
                      "without its top (e.g. Keras' ImageNet notop file, downloaded elsewhere)."),
                Param("alpha", 1.0, "MobileNetV2's width multiplier: the filters of every layer times alpha "
                      "(ImageNet weights exist for each choice). Other bases have none: 1.0.",
                      choices=MOBILENET_V2_ALPHAS),
                dropout_param(0.2, "Dropout rate before each dense layer of the head (before the logits "
                                   "when there is none)."),
                ShortListParam("dense_layers", [], "Units of each dense layer of the head, between the "
                               "pooled features and the logits (an MLP on the base's features); empty: "
                               "the logits read the features.", min=1, max=4096, max_items=5),
                # the fine_tune_* params are read by the trainer, not by the builder
                Param("fine_tune_epochs", 0, "Extra epochs with the top of the base unfrozen.", min=0, max=100),
                Param("fine_tune_layers", 30, "Top base layers to unfreeze when fine-tuning.", min=1, max=1000),
                Param("fine_tune_lr_factor", 0.1, "Learning rate multiplier when fine-tuning.", min=1e-4, max=1.0),
            ),
            "build_transfer",
            check_transfer,
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
    if architecture.check:
        architecture.check(resolved)
    return resolved


def built_params(arch, params, dropout=None):
    """Every parameter of `arch` as its model is built: the defaults overlaid with `params`, and
    the run's own dropout (TrainConfig.dropout), when it sets one, in place of the architecture's.
    An architecture without a dropout parameter (logistic) ignores it."""
    params = dict(params or {})
    if dropout is not None and "dropout" in default_params(arch):
        params["dropout"] = dropout
    return resolve_params(arch, params)


def fitted_by_scikit_learn(arch) -> bool:
    return get_architecture(arch).fit == "scikit-learn"


def uses_pretrained_weights(arch, params):
    """Whether these settings start from pretrained weights (a transfer base: ImageNet or a file)."""
    if "weights" not in default_params(arch):
        return False
    return resolve_params(arch, params)["weights"] != "none"


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
