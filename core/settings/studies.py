"""The classic studies of our users' reports, each a ready sweep (no TensorFlow): on the built-in
chest X-rays by default, or on the loaded dataset when the study fits it (`FITS`).

A study asks one question by varying one setting (a grid study: two or three, e.g. optimizer x
learning rate x epochs); every point is repeated over seeds (or the folds of a patient-grouped
cross-validation), so its answer comes with its uncertainty. It names what such reports found
(`Reference`), so its page and report put this run's answer beside it. Each study has two variants:
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


# Which datasets a study fits; it runs on the loaded dataset when it fits, else on the built-in set.
FITS = {"any": "any image set",
        "grouped": "any image set split by patient (not by its own train/val/test folders)"}


@dataclass(frozen=True)
class Axis:
    """One more setting a grid study sweeps, after its first."""
    setting: str
    values: tuple
    labels: tuple | None = None   # how to show each value (same order), when str(value) is unclear


@dataclass(frozen=True)
class Variant:
    """How a variant differs from the study: settings on top, other values, repeats, folds."""
    settings: dict = field(default_factory=dict)
    values: tuple | None = None   # a subset of the study's values (None: all of them)
    repeats: int | None = None    # seeds per value (None: the variant's default)
    cv_folds: int = 0             # k-fold cross-validation grouped by patient instead of seeds
    grid: tuple | None = None     # the other swept settings (Axis, ...); None: the study's own


@dataclass(frozen=True)
class Figure:
    """A figure such reports gave: what they measured, its value (a fraction), and the labels of this
    study's values it corresponds to (none when this study has no such value)."""
    what: str
    value: float
    matches: tuple = ()


@dataclass(frozen=True)
class Reference:
    """What such reports found on the study's question, in careful words, and where it comes from.
    Figures are of their data (`measured_on`), not of this app's runs: a trend to compare, not a score."""
    finding: str
    source: str
    figures: tuple = ()           # Figure, ...
    measured_on: str = ""


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
    grid: tuple = ()              # a grid study's other swept settings (Axis, ...), in both variants
    reference: Reference | None = None
    fits: str = "any"             # a key of FITS

    def variant(self, name: str) -> Variant:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose quick or full")
        return getattr(self, name)

    def axes(self, variant: str | None = None) -> list[Axis]:
        """Every swept setting: the study's own, then the grid's (of `variant`, else the study's)."""
        own = self.variant(variant) if variant else Variant()
        first = Axis(self.setting, own.values or self.values, self.labels and tuple(
            self.label(v) for v in (own.values or self.values)))
        return [first, *(self.grid if own.grid is None else own.grid)]

    def label(self, value) -> str:
        if self.labels is None:
            return str(value)
        return self.labels[[_key(v) for v in self.values].index(_key(value))]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


# Figures such reports published (their data, not ours: a trend to compare, not a target).
WIDE_DEEP_CIFAR10 = (Figure("wide CNN", 0.76, ("wide (2 layers of 96)",)),
                     Figure("deep CNN", 0.65, ("deep (6 thin layers, 16 to 64)",)),
                     Figure("wide-and-deep CNN", 0.74, ("wide and deep (5 layers, 32 to 256)",)))
RESNET50V2_KERMANY = (Figure("ResNet50V2, ImageNet base frozen", 0.910, ("frozen base",)),
                      Figure("ResNet50V2, then fine-tuned", 0.931, ("fine-tuned 3 epochs", "fine-tuned 10 epochs")))
CNN_FILTERS = (32, 64, 64)  # the configurable CNN's default filters, which the width study multiplies
WIDTHS = (0.25, 0.5, 1.0, 2.0)


def _widened(width: float) -> list[int]:
    return [max(1, round(width * f)) for f in CNN_FILTERS]


def _width_label(width: float) -> str:
    return f"×{width:g} ({', '.join(map(str, _widened(width)))})"


TRANSFER_BASES = ("mobilenet_v2", "efficientnet_b0", "resnet50_v2", "densenet121")
TRANSFER_BASE_LABELS = ("MobileNetV2", "EfficientNetB0", "ResNet50V2", "DenseNet121")

# Howard et al. 2017 (MobileNets), Table 6: ImageNet top-1 of MobileNet-224 at width 1, 0.75, 0.5, 0.25.
MOBILENET_WIDTHS = (Figure("MobileNet width 1", 0.706, (_width_label(1.0),)), Figure("MobileNet width 0.75", 0.684),
                    Figure("MobileNet width 0.5", 0.637, (_width_label(0.5),)),
                    Figure("MobileNet width 0.25", 0.506, (_width_label(0.25),)))


STUDIES = {study.key: study for study in (
    Study("activation", "Hidden activation",
          "Which activation of the hidden layers learns best: relu, sigmoid, softmax, tanh or elu?",
          "arch_params.activation", ("relu", "sigmoid", "softmax", "tanh", "elu"),
          reference=Reference("Rectified linear units trained deep networks as well as or better than tanh, "
                              "without the saturation that slows sigmoid and tanh; ReLU became the default of CNNs.",
                              "Glorot, Bordes & Bengio, AISTATS 2011")),
    Study("image_size", "Image size",
          "How much does the image size matter: do small images lose what the model needs?",
          "image_size", (32, 64, 96, 128), quick=Variant(values=(32, 64, 96)),
          reference=Reference("Chest X-ray classifiers are commonly trained at 224 px, the size ImageNet networks "
                              "expect; reports shrink the images further to train small CNNs faster, at a cost this "
                              "study measures.", "common practice (ImageNet input size)")),
    Study("dropout", "Dropout", "How much dropout before the classifier works best?",
          "dropout", (0.2, 0.4, 0.6, 0.8),
          reference=Reference("Dropout reduces overfitting; dropping hidden units with probability 0.5 was close to "
                              "optimal across a wide range of networks and tasks.",
                              "Srivastava et al., JMLR 2014")),
    Study("epochs", "Number of epochs", "How long must the model train: when does more training stop paying?",
          "epochs", (1, 3, 6, 12, 24, 48), quick=Variant(values=(1, 3, 6)),
          full=Variant(settings={"early_stopping": False}, values=(3, 6, 12, 24, 48)),
          reference=Reference("Validation error falls, then rises again as a network starts to overfit: training "
                              "past that minimum stops paying, which is why training is stopped early.",
                              "Prechelt, 'Early Stopping — But When?', 1998")),
    Study("optimizer", "Optimizers",
          "Which optimizer trains best at the same learning rate (0.001), each as Keras sets it up (SGD and "
          "RMSprop without momentum): SGD, RMSprop, Adam or Adagrad?",
          "optimizer", ("sgd", "rmsprop", "adam", "adagrad"), settings={"momentum": 0.0},
          reference=Reference("Adaptive methods (Adam, RMSprop, Adagrad) make fast early progress, but often "
                              "generalize worse than well-tuned SGD with momentum.",
                              "Wilson et al., NeurIPS 2017")),
    Study("momentum", "SGD momentum",
          "How much does momentum speed up plain SGD (learning rate 0.01): none, 0.5, 0.9 or 0.99?",
          "momentum", (0.0, 0.5, 0.9, 0.99), settings={"optimizer": "sgd", "learning_rate": 0.01},
          reference=Reference("Momentum of 0.9 to 0.99, with a good initialization, lets plain SGD train deep "
                              "networks that had been thought to need second-order methods.",
                              "Sutskever, Martens, Dahl & Hinton, ICML 2013")),
    Study("learning_rate", "Learning rate",
          "Which learning rate trains best (Adam): where does too slow end and too unstable begin?",
          "learning_rate", (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), quick=Variant(values=(1e-4, 1e-3, 1e-2)),
          reference=Reference("The learning rate is often the single most important hyper-parameter: always make "
                              "sure it has been tuned.", "Bengio, 'Practical recommendations for gradient-based "
                                                         "training of deep architectures', 2012")),
    Study("optimizer_lr", "Optimizer × learning rate",
          "Does the best optimizer depend on the learning rate (and, in the full variant, on how long it trains)? "
          "Each optimizer as Keras sets it up, SGD and RMSprop without momentum.",
          "optimizer", ("sgd", "rmsprop", "adam", "adagrad"), settings={"momentum": 0.0},
          grid=(Axis("learning_rate", (0.01, 0.001, 0.0001)),),
          quick=Variant(values=("sgd", "rmsprop", "adam"), grid=(Axis("learning_rate", (0.01, 0.001)),),
                        settings={"epochs": 2}),
          full=Variant(grid=(Axis("learning_rate", (0.01, 0.001, 0.0001)), Axis("epochs", (10, 30))),
                       settings={"early_stopping": False}),
          reference=Reference("The optimizers' best learning rates differ by orders of magnitude, so a comparison "
                              "at one rate favours some of them: each method's rate was tuned before comparing.",
                              "Wilson et al., NeurIPS 2017")),
    Study("patience", "Early-stopping patience",
          "How patient should early stopping be: how much accuracy does stopping sooner cost, and how many "
          "epochs does it save? (The best epoch is kept.)",
          "patience", (1, 3, 5, 10), settings={"early_stopping": True, "restore_best": True},
          quick=Variant(values=(1, 3), settings={"epochs": 8}), full=Variant(settings={"epochs": 50}),
          reference=Reference("Slower stopping criteria (more patience) gained a little generalization on average, "
                              "for much longer training.", "Prechelt, 'Early Stopping — But When?', 1998")),
    Study("augmentation", "Augmentation", "Does augmenting the training images help, and how strongly?",
          "augmentation", ({}, MILD_AUGMENTATION, STRONG_AUGMENTATION),
          labels=("off", "mild (rotate 7°, zoom 10%, shift 5%)",
                  "strong (rotate 15°, zoom 20%, shift 10%, brightness, contrast)"),
          quick=Variant(settings={"epochs": 4}),
          reference=Reference("Geometric and photometric augmentation is a standard remedy for overfitting when "
                              "training images are few.", "Shorten & Khoshgoftaar, Journal of Big Data 2019")),
    Study("conv_layers", "Number of conv layers", "How many convolutional layers does the model need?",
          "arch_params.filters", ([32], [32, 64], [32, 64, 64], [32, 64, 64, 128]),
          labels=("1 conv layer (32)", "2 conv layers (32, 64)", "3 conv layers (32, 64, 64)",
                  "4 conv layers (32, 64, 64, 128)"),
          reference=Reference("Depth improved ImageNet accuracy up to 16 to 19 weight layers of small 3x3 "
                              "convolutions.", "Simonyan & Zisserman (VGG), ICLR 2015")),
    Study("width", "Width multiplier",
          "How wide must the network be: what does shrinking (or doubling) the filters of every conv layer cost "
          "in accuracy, parameters and MACs? (The configurable CNN's 32, 64, 64 filters times the multiplier.)",
          "arch_params.filters", tuple(_widened(w) for w in WIDTHS),
          labels=tuple(_width_label(w) for w in WIDTHS),
          quick=Variant(values=tuple(_widened(w) for w in WIDTHS[:3])),
          reference=Reference("Shrinking every layer's width cost accuracy smoothly while the MACs fell about with "
                              "the square of the width.", "Howard et al. (MobileNets), 2017, Table 6",
                              figures=MOBILENET_WIDTHS, measured_on="ImageNet (top-1)")),
    Study("dense_layers", "Number of dense layers",
          "How many hidden dense layers does the classifier need after the convolutions: none, one, two or three?",
          "arch_params.dense_layers", ([], [64], [64, 64], [64, 64, 64]),
          labels=("no hidden dense layer", "1 dense layer (64)", "2 dense layers (64, 64)", "3 dense layers (64, 64, 64)"),
          reference=Reference("Global average pooling in place of the dense layers lost little accuracy, removed "
                              "most of the weights and overfitted less.", "Lin, Chen & Yan (Network in Network), "
                                                                          "ICLR 2014")),
    Study("class_weights", "Class weights",
          "Does weighting the rarer class in the loss (balanced) help, or does it only trade one class's recall "
          "for the other's? (Compared on macro-F1, which weighs both classes equally.)",
          "class_weights", ("none", "balanced"), labels=("unweighted", "balanced"), metric="test_macro_f1",
          quick=Variant(repeats=3),
          reference=Reference("Cost-sensitive weighting raises the rarer class's recall, often at some cost to "
                              "overall accuracy.", "He & Garcia, 'Learning from Imbalanced Data', IEEE TKDE 2009")),
    Study("train_fraction", "Training-set size",
          "How does the score grow with the share of training patients used?",
          "train_fraction", (0.1, 0.25, 0.5, 1.0), quick=Variant(settings={"train_fraction": 1.0}),
          reference=Reference("Error falls as a power law of the training-set size: each doubling of the data "
                              "helps, by less each time.", "Hestness et al., 'Deep Learning Scaling is Predictable, "
                                                           "Empirically', 2017")),
    Study("batch_size", "Batch size: speed and memory",
          "How do training speed and memory grow with the batch size, and what does it cost in score?",
          "batch_size", (16, 32, 64, 128), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(values=(16, 32, 64, 128), settings={"epochs": 10,
                                                                                           "early_stopping": False}),
          reference=Reference("Large-batch training tends to reach sharp minima and generalize worse than "
                              "small-batch training.", "Keskar et al., ICLR 2017")),
    Study("image_size_speed", "Image size: speed and memory",
          "How do training speed and memory grow with the image size?",
          "image_size", (32, 64, 96, 128), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(settings={"epochs": 10, "early_stopping": False}),
          reference=Reference("A convolution's work grows with the number of pixels: twice the side, about four "
                              "times the MACs per image.", "the arithmetic of convolutions")),
    Study("devices", "Devices: training in sync",
          "How much faster does training go on 2 devices in sync (MirroredStrategy: each takes half of every "
          "batch) than on 1, and does the score change? (Without GPUs the 2 devices are the CPU split in two: "
          "the same code path, no speed-up to expect.)",
          "devices", (1, 2), labels=("1 device", "2 devices in sync"), measures_resources=True,
          quick=Variant(settings={"epochs": 2}), full=Variant(settings={"epochs": 10, "early_stopping": False}),
          reference=Reference("Synchronous data-parallel SGD trained ResNet-50 on ImageNet across 256 GPUs in one "
                              "hour with no loss of accuracy, scaling the learning rate with the total batch.",
                              "Goyal et al., 'Accurate, Large Minibatch SGD', 2017")),
    Study("test_fraction", "Train/test proportion",
          "How does the share of patients held out for the test change the score and its uncertainty? "
          "(Each share scores on test patients of its own: the other studies share theirs.)",
          "test_fraction", (0.1, 0.2, 0.3, 0.4), fits="grouped",
          reference=Reference("Hold-out splits of 70/30 or 80/20 are common; the fewer the test images, the wider "
                              "the uncertainty of their score.", "common practice; binomial confidence intervals")),
    Study("schedule", "Learning-rate schedules",
          "Which learning-rate schedule trains best: constant, step, exponential, cosine, one-cycle or "
          "reduce-on-plateau?",
          "schedule", ("constant", "step", "exponential", "cosine", "one_cycle", "plateau"),
          settings={"decay_rate": 0.5},
          quick=Variant(settings={"step_epochs": 1, "plateau_patience": 1}),
          full=Variant(settings={"early_stopping": False, "step_epochs": 10}),
          reference=Reference("Cosine annealing and the one-cycle policy reached good accuracy in fewer epochs than "
                              "a constant or step rate in their authors' experiments.",
                              "Loshchilov & Hutter, ICLR 2017; Smith & Topin, 2019")),
    Study("batch_norm", "BatchNorm", "Does BatchNormalization after every convolution help?",
          "arch_params.batch_norm", (False, True), labels=("without BatchNorm", "with BatchNorm"),
          settings={"arch_params": {"filters": [32, 64, 64], "convs_per_block": 2}},
          reference=Reference("Batch normalization matched the accuracy of an Inception network with 14 times "
                              "fewer training steps.", "Ioffe & Szegedy, ICML 2015")),
    Study("wide_deep", "Wide vs deep",
          "Few wide layers, many thin ones, or both: which CNN shape learns best for its parameters and MACs?",
          "arch_params.filters", ([96, 96], [16, 16, 32, 32, 64, 64], [32, 64, 128, 128, 256]),
          labels=("wide (2 layers of 96)", "deep (6 thin layers, 16 to 64)", "wide and deep (5 layers, 32 to 256)"),
          settings={"arch_params": {"head": "global_average", "dense_layers": []}},
          reference=Reference("The wide CNN scored best, the wide-and-deep one close behind and the deep, thin one "
                              "last.", "classic CNN-shape course reports on CIFAR-10",
                              figures=WIDE_DEEP_CIFAR10, measured_on="CIFAR-10 (test accuracy)")),
    Study("model_family", "Logistic regression vs MLP vs CNN vs ResNet",
          "How much do convolutions (and residual connections) add over a linear model and an MLP?",
          "arch", ("logistic_regression", "mlp", "cnn", "resnet_small"),
          labels=("logistic regression", "MLP", "CNN", "ResNet (small)"),
          reference=Reference("An ImageNet-pretrained CNN (Inception V3) told pneumonia from normal chest X-rays "
                              "with 92.8% accuracy.", "Kermany et al., Cell 2018",
                              figures=(Figure("pretrained Inception V3, pneumonia vs normal", 0.928),),
                              measured_on="the Kermany chest X-rays (test accuracy)")),
    Study("transfer", "Transfer learning ± fine-tuning",
          "Does fine-tuning the top of an ImageNet-pretrained MobileNetV2 beat keeping it frozen?",
          "arch_params.fine_tune_epochs", (0, 3, 10), labels=("frozen base", "fine-tuned 3 epochs",
                                                                "fine-tuned 10 epochs"),
          settings={"arch": "transfer", "arch_params": {"base": "mobilenet_v2", "weights": "imagenet"}},
          needs_imagenet_weights=True,
          quick=Variant(settings={"image_size": 96}, values=(0, 3)),
          full=Variant(values=(0, 10)),
          reference=Reference("With a ResNet50V2 base (not this study's MobileNetV2), the frozen base scored 91.0% "
                              "and fine-tuning its top raised it to 93.1%.",
                              "classic transfer-learning reports on the Kermany chest X-rays",
                              figures=RESNET50V2_KERMANY, measured_on="the Kermany chest X-rays (test accuracy)")),
    Study("transfer_base", "Transfer learning: which base",
          "Which ImageNet-pretrained base, kept frozen under the same head, transfers best to the X-rays: "
          "MobileNetV2, EfficientNetB0, ResNet50V2 or DenseNet121?",
          "arch_params.base", TRANSFER_BASES, labels=TRANSFER_BASE_LABELS,
          settings={"arch": "transfer", "arch_params": {"weights": "imagenet"}},
          needs_imagenet_weights=True,
          quick=Variant(settings={"image_size": 96, "train_fraction": 0.15, "epochs": 2}),
          reference=Reference("CheXNet, an ImageNet-pretrained DenseNet121 fine-tuned on ChestX-ray14, detected "
                              "pneumonia with an F1 of 0.435, above the 0.387 of four radiologists on the same test "
                              "images: F1 of the pneumonia class, not this study's accuracy.",
                              "Rajpurkar et al., CheXNet, 2017",
                              figures=(Figure("DenseNet121 (CheXNet), F1 of pneumonia", 0.435),),
                              measured_on="ChestX-ray14 (F1 of pneumonia)")),
    Study("transfer_head", "MLP on a frozen base's features",
          "How many dense layers does a classifier on a frozen ImageNet base's features need: none (a logistic "
          "regression on the features), one, two or five?",
          "arch_params.dense_layers", ([], [128], [128, 128], [128] * 5),
          labels=("no dense layer", "1 dense layer (128)", "2 dense layers (128, 128)", "5 dense layers of 128"),
          settings={"arch": "transfer", "arch_params": {"base": "mobilenet_v2", "weights": "imagenet"}},
          needs_imagenet_weights=True,
          quick=Variant(settings={"image_size": 96, "epochs": 2}, values=([], [128], [128, 128])),
          reference=Reference("Features of an ImageNet-trained network, read by a simple classifier, beat "
                              "hand-engineered features on other image tasks: the pretrained layers carry over and "
                              "the head can stay small.", "Razavian et al., 'CNN Features off-the-shelf', CVPR "
                              "Workshops 2014; Yosinski et al., NeurIPS 2014")),
    Study("kfold", "k-fold cross-validation",
          "Is the CNN better than the MLP when every patient is tested once (k-fold grouped by patient)?",
          "arch", ("mlp", "cnn"), labels=("MLP", "CNN"), fits="grouped",
          quick=Variant(cv_folds=3), full=Variant(cv_folds=5),
          reference=Reference("Cross-validation gives a less variable estimate than one hold-out split; stratified "
                              "10-fold cross-validation was recommended for choosing between models.",
                              "Kohavi, IJCAI 1995")),
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
    return {"name": f"{study.title} ({variant})", "base": study_base(study, variant, dataset),
            "axes": [_axis_spec(axis) for axis in study.axes(variant)],
            "repeats": 1 if own.cv_folds else (own.repeats or VARIANT_REPEATS[variant]),
            "cv_folds": own.cv_folds, "study": key, "variant": variant}


def _axis_spec(axis: Axis) -> dict:
    spec = {"setting": axis.setting, "values": [_copy(v) for v in axis.values]}
    return {**spec, "labels": list(axis.labels)} if axis.labels else spec


def misfit(study: Study, dataset: dict) -> str | None:
    """Why the study does not fit a dataset (its settings: split, source...), or None when it does."""
    if study.fits == "grouped" and dataset.get("split") == "own":
        return (f"{study.title} varies the patient split, so it needs {FITS['grouped']}; this dataset uses its "
                "own train/val/test folders")
    return None


def _copy(value):
    return json.loads(json.dumps(value))  # lists and dicts of the declaration stay untouched
