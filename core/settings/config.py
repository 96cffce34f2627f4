"""A run's settings, each declared once: `TrainConfig` describes a run completely and is saved with
it as config.json, so any run can be re-run or resumed from its folder.

Each field's `setting(...)` holds its default, range, help text and widget hint; validation, the
forms, the command line's flags and the sweep axes read them (`SETTINGS`). No TensorFlow here.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from core.settings import architectures
from core.settings.declare import Setting, check_all, declared, setting

SOURCES = ("builtin", "folder", "zip", "npz", "cifar", "csv")
TASKS = ("binary", "subtype", "classes")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "cosine", "one_cycle", "plateau")
MONITORS = ("val_loss", "val_accuracy")
IMAGE_SIZES = (32, 48, 64, 96, 128, 160, 192, 224, 256)
LOSSES = ("crossentropy", "focal")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # Keras' dtype policies, and auto
XLA_MODES = ("auto", "on", "off")
XLA_UNSUPPORTED_AUGMENTATION = ("zoom", "shift")  # Keras' RandomZoom and RandomTranslation: supports_jit False


@dataclass
class Augmentation:
    """Random transforms applied while training only (Keras preprocessing layers inside the model)."""
    rotation_degrees: float = setting(0.0, "Rotate by up to this many degrees either way.",
                                      label="Rotation (degrees)", min=0.0, max=45.0, step=1.0, slider=True)
    zoom: float = setting(0.0, "Zoom in or out by up to this fraction (0.1 = 10%).",
                          label="Zoom (fraction)", min=0.0, max=0.5, step=0.05, slider=True)
    shift: float = setting(0.0, "Shift by up to this fraction of the width and height.",
                           label="Shift (fraction)", min=0.0, max=0.5, step=0.05, slider=True)
    horizontal_flip: bool = setting(False, "Off by default for chest X-rays: a flipped film puts the heart on "
                                           "the right (dextrocardia), which real films almost never show, and "
                                           "the side markers read backwards.")
    brightness: float = setting(0.0, "Change brightness by up to this fraction of the 0-255 range.",
                                label="Brightness (fraction)", min=0.0, max=0.5, step=0.05, slider=True)
    contrast: float = setting(0.0, "Change contrast by up to this factor.",
                              label="Contrast (factor)", min=0.0, max=0.9, step=0.05, slider=True)
    shear: float = setting(0.0, "Shear by up to this factor along each axis (0.1: a corner moves by a tenth of "
                                "the side).", label="Shear (factor)", min=0.0, max=0.5, step=0.05, slider=True)
    gaussian_noise: float = setting(0.0, "Add Gaussian noise of this standard deviation, in 0-255 pixel "
                                         "units (film grain, detector noise).", label="Gaussian noise (std)",
                                    min=0.0, max=50.0, step=1.0, slider=True)
    mixup: float = setting(0.0, "Mixup (Zhang et al., ICLR 2018): each training image is blended with another "
                                "of its batch, and its label in the same proportion, by a weight drawn from "
                                "Beta(alpha, alpha); this is alpha, 0 is off (0.1-0.4 is usual). Applied to the "
                                "batches, not a layer of the model.", label="Mixup (alpha)",
                           min=0.0, max=1.0, step=0.05, slider=True)

    def any(self) -> bool:
        return any(bool(v) for v in dataclasses.asdict(self).values())

    def layers(self) -> bool:
        """Whether any of the model's augmentation layers is on (mixup is not a layer)."""
        return any(bool(v) for name, v in dataclasses.asdict(self).items() if name != "mixup")


@dataclass
class TrainConfig:
    """Everything about a run. Saved as config.json; `TrainConfig.from_json` re-creates it exactly."""
    name: str = setting("", "Shown in the runs table; the architecture name when left empty.", label="Run name")
    # data
    data_source: str = setting("builtin", "Where the images come from.", label="Source", choices=SOURCES)
    data_path: str = setting("", "The folder, zip, .npz, CIFAR tarball or CSV of labels (not for the built-in "
                                 "set).", label="Path")
    task: str = setting("binary", "What to tell apart: normal/pneumonia, normal/bacterial/viral, or the "
                                  "dataset's own classes.", choices=TASKS)
    # options of one data format each (core/data/formats.py); the other sources ignore them
    label_column: str = setting("", "CSV of labels: the column to train on (CheXpert style: 1 positive; 0 or "
                                    "empty negative; -1 uncertain, skipped) or a finding of NIH's 'Finding "
                                    "Labels' (that finding against the rest); empty: the CSV's label column, "
                                    "or NIH's rows with a single finding.", label="Target (CSV)")
    images_folder: str = setting("", "CSV of labels: the folder of its images (sub-folders searched too); "
                                     "empty: the CSV's own folder.", label="Images folder (CSV)")
    label_level: str = setting("fine", "CIFAR-100: its 100 fine classes or its 20 coarse superclasses.",
                               label="CIFAR-100 labels", choices=("fine", "coarse"))
    npz_classes: str = setting("auto", "Keras-layout .npz (x_train, y_train, x_test, y_test): the digits 0-9 "
                                       "(MNIST) or Fashion-MNIST's 10 names; auto: the file's class_names "
                                       "array, else Fashion-MNIST when its name says 'fashion' or its labels "
                                       "begin as Fashion-MNIST's do, else the digits.",
                               label="Class names (Keras .npz)", choices=("auto", "digits", "fashion"))
    image_size: int = setting(128, "Images are resized to this square side.", label="Image size (px)",
                              min=32, max=512, options=IMAGE_SIZES)
    color_mode: str = setting("grayscale", "Grayscale (1 channel) or RGB (3).", label="Colour",
                              choices=("grayscale", "rgb"))
    split: str = setting("grouped", "Grouped by patient (no patient in two splits), or the dataset's own "
                                    "train/val/test folders.", choices=("grouped", "own"))
    val_fraction: float = setting(0.15, "Share of the patients held out for validation.",
                                  label="Validation fraction", min=0.02, max=0.5, step=0.01, slider=True)
    test_fraction: float = setting(0.15, "Share of the patients held out for the test.",
                                   label="Test fraction", min=0.02, max=0.5, step=0.01, slider=True)
    train_fraction: float = setting(1.0, "Train on this share of the training patients; validation and test "
                                         "stay the same.", min=0.05, max=1.0, step=0.05)
    cv_folds: int = setting(0, "Patient-grouped k-fold cross-validation; fold `cv_fold` is validation.",
                            label="Cross-validation folds", min=2, max=20, off=0)
    cv_fold: int = setting(0, "The fold used for validation when cross-validating.", min=0, max=19)
    seed: int = setting(42, "Seeds the weights, shuffling and augmentation (and the split, unless split "
                            "seed is set).", label="Training seed", min=0, max=2**31 - 1)
    split_seed: int | None = setting(None, "Fixes the split while seeds vary (the repeats of a sweep point); "
                                           "empty: the training seed.", min=0, max=2**31 - 1)
    # model
    arch: str = setting("seed_cnn", "The network; each has parameters of its own.", label="Architecture",
                        choices=tuple(architectures.ARCHITECTURES))
    arch_params: dict = field(default_factory=dict)  # declared per architecture (core.settings.architectures)
    dropout: float | None = setting(None, "Dropout rate; empty: the architecture's own default.",
                                    min=0.0, max=0.9, step=0.05)
    # optimisation
    optimizer: str = setting("adam", "How the weights are updated.", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "Step size of the optimizer.", min=1e-6, max=1.0, step=1e-4,
                                   format="%.6f")
    momentum: float = setting(0.0, "Momentum of SGD and RMSprop; 0 (none) as in Keras.", min=0.0, max=0.999,
                              step=0.05)
    nesterov: bool = setting(False, "Nesterov momentum (SGD).", label="Nesterov momentum")
    weight_decay: float = setting(0.0, "Decoupled (AdamW-style) weight decay.", min=0.0, max=1.0, step=1e-4,
                                  format="%.5f")
    clipnorm: float = setting(0.0, "Clip each gradient to this norm; 0 = no clipping.",
                              label="Gradient clipping (norm, 0 = off)", min=0.0, max=100.0, step=0.5)
    ema_momentum: float = setting(0.0, "Weight averaging: keep an exponential moving average of the weights "
                                       "(Polyak averaging; Keras' use_ema) and validate, save and test it "
                                       "instead of the last step's weights; each step the average moves "
                                       "1 - this toward the weights. 0 = off; 0.99 averages about the last "
                                       "100 steps.", label="Weight averaging (EMA momentum, 0 = off)",
                                  min=0.5, max=0.9999, step=0.001, format="%.4f", off=0.0)
    label_smoothing: float = setting(0.0, "Soften the one-hot targets by this much.", min=0.0, max=0.5,
                                     step=0.05)
    loss: str = setting("crossentropy", "What training minimises. crossentropy: categorical cross-entropy; "
                                        "focal: Lin et al.'s focal loss (Keras' CategoricalFocalCrossentropy), "
                                        "which down-weights images the model already gets right, so hard "
                                        "ones (e.g. viral pneumonia) count more. Validation loss is "
                                        "cross-entropy either way.", label="Loss", choices=LOSSES)
    focal_gamma: float = setting(2.0, "Focal loss: how strongly confident, correct images are down-weighted "
                                      "(0 is cross-entropy).", label="Focal gamma", min=0.0, max=5.0, step=0.5)
    schedule: str = setting("constant", "How the learning rate changes over training.",
                            label="Learning-rate schedule", choices=SCHEDULES)
    decay_rate: float = setting(0.5, "Step and exponential schedules: multiply the rate by this every "
                                     "N epochs.", min=0.01, max=1.0, step=0.05)
    step_epochs: int = setting(5, "Step and exponential schedules: epochs between decays.",
                               label="Every N epochs", min=1, max=100)
    min_learning_rate: float = setting(1e-6, "Floor of the cosine, one-cycle and plateau schedules.",
                                       label="Minimum learning rate", min=0.0, max=1.0, step=1e-6,
                                       format="%.7f")
    plateau_patience: int = setting(2, "Plateau schedule: epochs without improvement before the rate drops.",
                                    label="Plateau patience (epochs)", min=1, max=50)
    plateau_factor: float = setting(0.5, "Plateau schedule: multiply the rate by this when it drops.",
                                    min=0.05, max=0.95, step=0.05)
    batch_size: int = setting(32, "Images per gradient step (over several devices, split between them).",
                              min=1, max=4096, options=(4, 8, 16, 32, 64, 128, 256))
    epochs: int = setting(10, "Passes over the training images.", min=1, max=500)
    early_stopping: bool = setting(True, "Stop when the monitored value stops improving.")
    patience: int = setting(5, "Early stopping: epochs without improvement before stopping.",
                            label="Patience (epochs)", min=1, max=100)
    restore_best: bool = setting(True, "Evaluate and save the best epoch, not the last.",
                                 label="Keep the best epoch")
    monitor: str = setting("val_loss", "What 'best' and early stopping look at.", choices=MONITORS)
    class_weights: str = setting("none", "Balanced: rare classes count more in the loss.",
                                 choices=("none", "balanced"))
    devices: int = setting(0, "Devices training in sync (MirroredStrategy): each takes its share of every "
                              "batch. 0: every GPU there is (one device without GPUs); more than 1 without "
                              "GPUs splits the CPU (the same code path, no speed-up).",
                           label="Devices (0 = all GPUs)", min=1, max=16, off=0)
    precision: str = setting("auto", "The numbers the network computes in (weights stay float32, probabilities "
                                     "come out float32). auto: mixed_float16 on a GPU, float32 on a CPU "
                                     "(measured: bfloat16 trained no faster there; core/ml/precision.py). "
                                     "mixed_bfloat16 uses the CPU's bfloat16 instructions where it has them "
                                     "(avx512_bf16, AMX). mixed_float16 on a CPU is slow.",
                             label="Precision", choices=PRECISIONS)
    xla: str = setting("auto", "Compile the training step with XLA (Keras' jit_compile), which fuses operations "
                               "into fewer, faster kernels on GPUs. auto: Keras' choice: on a single GPU when "
                               "every layer supports it (zoom and shift augmentation do not), off on a CPU; "
                               "on: always (refused with zoom or shift augmentation; on a CPU it gives up "
                               "TensorFlow's op determinism); off: never.",
                       label="XLA compilation", choices=XLA_MODES)
    augmentation: Augmentation = field(default_factory=Augmentation)
    sweep_id: str = setting("", "Set on the runs of a sweep.")
    halving_rate: int = setting(0, "Successive halving, for the runs of a sweep: at each rung (the minimum "
                                   "epochs times a power of this rate) a run goes on only if it is among the "
                                   "best 1/rate of the sweep's runs that reached that rung; 0 = off.",
                                label="Successive halving rate (0 = off)", min=2, max=8, off=0)
    halving_min_epochs: int = setting(1, "Successive halving: epochs every run trains before its first rung.",
                                      label="Epochs before the first rung", min=1, max=100)
    # resources (do not change results)
    memory_cap_mb: int = setting(0, "The run is stopped cleanly if its training process uses more; "
                                    "0: $CXR_MEMORY_CAP_MB, or no cap.", label="Memory cap (MB, 0 = none)",
                                 min=256, off=0, step=256)
    data_pipeline: str = setting("auto", "Where training reads the decoded images: memory (all in RAM), disk "
                                         "(streamed from the on-disk cache, so memory does not grow with the "
                                         "dataset) or auto (disk when the decoded images would fill more than a "
                                         "quarter of this machine's memory).", choices=("auto", "memory", "disk"))

    def __post_init__(self):
        # One dropout per run: an architecture's dropout parameter lives in `dropout`, the rate the
        # model is built with (it overrides arch_params), so a value left in arch_params would be stale.
        if isinstance(self.arch_params, dict) and "dropout" in self.arch_params:
            params = dict(self.arch_params)
            moved = params.pop("dropout")
            self.dropout = moved if self.dropout is None else self.dropout
            self.arch_params = params

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def with_overrides(self, overrides: dict) -> "TrainConfig":
        """A copy with settings replaced; dotted keys reach into arch_params and augmentation."""
        values = self.to_dict()
        for key, value in overrides.items():
            key = "dropout" if key == "arch_params.dropout" else key  # the one dropout (see __post_init__)
            target = values
            *parents, leaf = key.split(".")
            for parent in parents:
                if not isinstance(target.get(parent, {}), dict):
                    raise ValueError(f"{parent!r} has no sub-settings (in {key!r})")
                target = target.setdefault(parent, {})
            target[leaf] = value
        return TrainConfig.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A TrainConfig from saved or typed values; unknown names are refused (a typo never passes)."""
        values = dict(values)
        refuse_unknown(values, cls, "TrainConfig settings")
        if isinstance(values.get("augmentation"), dict):
            refuse_unknown(values["augmentation"], Augmentation, "augmentation settings")
            values["augmentation"] = Augmentation(**values["augmentation"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def validate(self) -> "TrainConfig":
        """Raise ValueError with a readable message for any setting of the wrong type or out of range."""
        check_all(self)
        if not isinstance(self.augmentation, Augmentation):
            raise ValueError("augmentation must be a set of augmentation settings")
        check_all(self.augmentation, prefix="augmentation.")
        rules = [
            (self.val_fraction + self.test_fraction <= 0.8,
             "validation + test fractions leave less than 20% of the patients for training"),
            (self.cv_fold < max(1, self.cv_folds), "cv_fold must be between 0 and cv_folds - 1"),
            (not (self.cv_folds and self.split == "own"), "cross-validation needs a grouped split, not 'own'"),
            (not (self.xla == "on" and any(getattr(self.augmentation, name) for name in XLA_UNSUPPORTED_AUGMENTATION)),
             "XLA cannot compile the zoom and shift augmentation layers: turn those off, or set xla to auto or off"),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)
        architectures.resolve_params(self.arch, self.arch_params)
        return self


# Defaults that changed: a saved config without the setting was trained with the value it had then.
EARLIER_DEFAULTS = {"momentum": 0.9}  # until SGD and RMSprop took Keras' default, no momentum


def as_trained(saved: dict) -> dict:
    """A saved config (a run's config.json) with the value each setting was trained with where its
    default changed since: a config saved without `momentum` trained SGD and RMSprop with 0.9. Every
    config saved since holds every setting, so this never reads a newer one differently."""
    return {**EARLIER_DEFAULTS, **saved} if isinstance(saved, dict) and saved else saved


def refuse_unknown(values: dict, cls, what: str) -> None:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}")


SETTINGS: dict[str, Setting] = declared(TrainConfig)
AUGMENTATION_SETTINGS: dict[str, Setting] = declared(Augmentation)


def flatten_settings(values: dict, prefix: str = "") -> dict:
    """{'arch_params': {'width': 2}} -> {'arch_params.width': 2}: the dotted keys `setting_for`
    reads; values (lists too) as they are."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def with_used_dropout(config: dict) -> dict:
    """A saved config with exactly one dropout: `dropout` is the rate its model was built with (the
    architecture's default when the run set none; None when the architecture has no dropout) and
    arch_params holds none. Older configs with a dropout in both places read as the one used."""
    params = dict(config.get("arch_params") or {})
    in_params = params.pop("dropout", None)
    dropout = config.get("dropout") if config.get("dropout") is not None else in_params
    try:
        dropout = architectures.built_params(config.get("arch"), {}, dropout).get("dropout")
    except ValueError:  # an architecture this version no longer knows: the value as saved
        pass
    return {**config, "arch_params": params, "dropout": dropout}


def setting_for(key: str, arch: str | None = None) -> Setting | None:
    """The declaration behind a config key: 'epochs', 'augmentation.zoom' or 'arch_params.width'
    (of `arch`); None when nothing declares it."""
    area, _, name = key.partition(".")
    if not name:
        return SETTINGS.get(key)
    if area == "augmentation":
        return AUGMENTATION_SETTINGS.get(name)
    if area == "arch_params" and arch in architectures.ARCHITECTURES:
        return next((p for p in architectures.ARCHITECTURES[arch].params if p.name == name), None)
    return None
