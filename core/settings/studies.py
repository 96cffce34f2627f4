"""The classic studies of our users' reports, each a ready sweep on the built-in set (no TensorFlow).

A study asks one question by varying one setting; every value is repeated over seeds (or the folds
of a patient-grouped cross-validation), so its answer comes with its uncertainty. Each study has
two variants:
- quick: about 10 minutes or less on a 2-core CPU (64 px, a few epochs, half the training patients);
- full: what a GPU affords (the built-in set's 128 px, every training patient, more epochs, 3 seeds).

    spec = study_spec("dropout", "quick")   # a sweep in its JSON form: Sweep.from_dict(spec)
    python -m core sweep --study dropout --variant quick
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

VARIANTS = ("quick", "full")
# What every study starts from: the configurable CNN on the built-in set, binary task.
COMMON = {"data_source": "builtin", "task": "binary", "arch": "cnn", "optimizer": "adam",
          "learning_rate": 1e-3, "batch_size": 32}
VARIANT_SETTINGS = {
    # a run trains in about half a minute on 2 cores, so 8-12 runs fit in 10 minutes
    "quick": {"image_size": 64, "epochs": 3, "train_fraction": 0.5, "early_stopping": False},
    "full": {"image_size": 128, "epochs": 30, "train_fraction": 1.0, "early_stopping": True, "patience": 5},
}
VARIANT_REPEATS = {"quick": 2, "full": 3}
MILD_AUGMENTATION = {"rotation_degrees": 7.0, "zoom": 0.1, "shift": 0.05}
STRONG_AUGMENTATION = {"rotation_degrees": 15.0, "zoom": 0.2, "shift": 0.1, "brightness": 0.1, "contrast": 0.2}


@dataclass(frozen=True)
class Variant:
    """How a variant differs from the study: settings on top, other values, repeats, folds."""
    settings: dict = field(default_factory=dict)
    values: tuple | None = None   # a subset of the study's values (None: all of them)
    repeats: int | None = None    # seeds per value (None: the variant's default)
    cv_folds: int = 0             # k-fold cross-validation grouped by patient instead of seeds


@dataclass(frozen=True)
class Study:
    key: str
    title: str
    question: str
    setting: str                  # the swept setting (dotted for arch_params / augmentation)
    values: tuple
    labels: tuple | None = None   # how to show each value (same order), when str(value) is unclear
    settings: dict = field(default_factory=dict)  # on top of COMMON for both variants
    metric: str = "test_accuracy"  # what the conclusion compares
    measures_resources: bool = False  # speed and memory against the setting
    needs_imagenet_weights: bool = False
    quick: Variant = field(default_factory=Variant)
    full: Variant = field(default_factory=Variant)

    def variant(self, name: str) -> Variant:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose quick or full")
        return getattr(self, name)

    def label(self, value) -> str:
        if self.labels is None:
            return str(value)
        return self.labels[[_key(v) for v in self.values].index(_key(value))]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


STUDIES = {study.key: study for study in (
    Study("activation", "Hidden activation",
          "Which activation of the hidden layers learns best: relu, sigmoid, softmax, tanh or elu?",
          "arch_params.activation", ("relu", "sigmoid", "softmax", "tanh", "elu")),
    Study("image_size", "Image size",
          "How much does the image size matter: do small images lose what the model needs?",
          "image_size", (32, 64, 96, 128), quick=Variant(values=(32, 64, 96))),
    Study("dropout", "Dropout", "How much dropout before the classifier works best?",
          "dropout", (0.2, 0.4, 0.6, 0.8)),
    Study("epochs", "Number of epochs", "How long must the model train: when does more training stop paying?",
          "epochs", (1, 3, 6, 12, 24, 48), quick=Variant(values=(1, 3, 6)),
          full=Variant(settings={"early_stopping": False}, values=(3, 6, 12, 24, 48))),
    Study("optimizer", "Optimizers",
          "Which optimizer trains best at the same learning rate (0.001): SGD, RMSprop, Adam, AdamW or Adagrad?",
          "optimizer", ("sgd", "rmsprop", "adam", "adamw", "adagrad")),
    Study("augmentation", "Augmentation", "Does augmenting the training images help, and how strongly?",
          "augmentation", ({}, MILD_AUGMENTATION, STRONG_AUGMENTATION),
          labels=("off", "mild (rotate 7°, zoom 10%, shift 5%)",
                  "strong (rotate 15°, zoom 20%, shift 10%, brightness, contrast)"),
          quick=Variant(settings={"epochs": 4})),
    Study("conv_layers", "Number of conv layers", "How many convolutional layers does the model need?",
          "arch_params.filters", ([32], [32, 64], [32, 64, 64], [32, 64, 64, 128]),
          labels=("1 conv layer (32)", "2 conv layers (32, 64)", "3 conv layers (32, 64, 64)",
                  "4 conv layers (32, 64, 64, 128)")),
    Study("train_fraction", "Training-set size",
          "How does the score grow with the share of training patients used?",
          "train_fraction", (0.1, 0.25, 0.5, 1.0), quick=Variant(settings={"train_fraction": 1.0})),
    Study("batch_size", "Batch size: speed and memory",
          "How do training speed and memory grow with the batch size, and what does it cost in score?",
          "batch_size", (16, 32, 64, 128), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(values=(16, 32, 64, 128), settings={"epochs": 10,
                                                                                           "early_stopping": False})),
    Study("image_size_speed", "Image size: speed and memory",
          "How do training speed and memory grow with the image size?",
          "image_size", (32, 64, 96, 128), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(settings={"epochs": 10, "early_stopping": False})),
    Study("devices", "Devices: training in sync",
          "How much faster does training go on 2 devices in sync (MirroredStrategy: each takes half of every "
          "batch) than on 1, and does the score change? (Without GPUs the 2 devices are the CPU split in two: "
          "the same code path, no speed-up to expect.)",
          "devices", (1, 2), labels=("1 device", "2 devices in sync"), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(settings={"epochs": 10, "early_stopping": False})),
    Study("test_fraction", "Train/test proportion",
          "How does the share of patients held out for the test change the score and its uncertainty? "
          "(Each share scores on test patients of its own: the other studies share theirs.)",
          "test_fraction", (0.1, 0.2, 0.3, 0.4)),
    Study("schedule", "Learning-rate schedules",
          "Which learning-rate schedule trains best: constant, step, exponential, cosine, one-cycle or "
          "reduce-on-plateau?",
          "schedule", ("constant", "step", "exponential", "cosine", "one_cycle", "plateau"),
          settings={"decay_rate": 0.5},
          quick=Variant(settings={"step_epochs": 1, "plateau_patience": 1}),
          full=Variant(settings={"early_stopping": False, "step_epochs": 10})),
    Study("batch_norm", "BatchNorm", "Does BatchNormalization after every convolution help?",
          "arch_params.batch_norm", (False, True), labels=("without BatchNorm", "with BatchNorm"),
          settings={"arch_params": {"filters": [32, 64, 64], "convs_per_block": 2}}),
    Study("wide_deep", "Wide vs deep",
          "Few wide layers, many thin ones, or both: which CNN shape learns best for its parameters and MACs?",
          "arch_params.filters", ([96, 96], [16, 16, 32, 32, 64, 64], [32, 64, 128, 128, 256]),
          labels=("wide (2 layers of 96)", "deep (6 thin layers, 16 to 64)", "wide and deep (5 layers, 32 to 256)"),
          settings={"arch_params": {"head": "global_average", "dense_layers": []}}),
    Study("model_family", "Logistic regression vs MLP vs CNN vs ResNet",
          "How much do convolutions (and residual connections) add over a linear model and an MLP?",
          "arch", ("logistic", "mlp", "cnn", "resnet_small"),
          labels=("logistic regression", "MLP", "CNN", "ResNet (small)")),
    Study("transfer", "Transfer learning ± fine-tuning",
          "Does fine-tuning the top of an ImageNet-pretrained MobileNetV2 beat keeping it frozen?",
          "arch_params.fine_tune_epochs", (0, 3, 10), labels=("frozen base", "fine-tuned 3 epochs",
                                                                "fine-tuned 10 epochs"),
          settings={"arch": "transfer", "arch_params": {"base": "mobilenet_v2", "weights": "imagenet"}},
          needs_imagenet_weights=True,
          quick=Variant(settings={"image_size": 96}, values=(0, 3)),
          full=Variant(values=(0, 10))),
    Study("kfold", "k-fold cross-validation",
          "Is the CNN better than the MLP when every patient is tested once (k-fold grouped by patient)?",
          "arch", ("mlp", "cnn"), labels=("MLP", "CNN"),
          quick=Variant(cv_folds=3), full=Variant(cv_folds=5)),
)}


def get_study(key: str) -> Study:
    if key not in STUDIES:
        raise ValueError(f"unknown study {key!r}; choose one of: {', '.join(STUDIES)}")
    return STUDIES[key]


def study_base(study: Study, variant: str, dataset: dict | None = None) -> dict:
    """The base settings of the study's runs: common, variant, study, then the variant's own;
    `dataset` (e.g. the task) goes on top of the common settings."""
    own = study.variant(variant)
    base = {**COMMON, **(dataset or {}), **VARIANT_SETTINGS[variant]}
    for layer in (study.settings, own.settings):
        for key, value in layer.items():
            base[key] = {**base.get(key, {}), **value} if key == "arch_params" else value
    return base


def study_spec(key: str, variant: str = "quick", dataset: dict | None = None) -> dict:
    """The study as a sweep in its JSON form (core.store.sweeps.Sweep.from_dict validates it)."""
    study = get_study(key)
    own = study.variant(variant)
    values = [_copy(v) for v in (own.values or study.values)]
    axis = {"setting": study.setting, "values": values}
    if study.labels:
        axis["labels"] = [study.label(v) for v in values]
    return {"name": f"{study.title} ({variant})", "base": study_base(study, variant, dataset), "axes": [axis],
            "repeats": 1 if own.cv_folds else (own.repeats or VARIANT_REPEATS[variant]),
            "cv_folds": own.cv_folds, "study": key, "variant": variant}


def _copy(value):
    return json.loads(json.dumps(value))  # lists and dicts of the declaration stay untouched
