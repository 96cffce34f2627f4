"""Tests for core/ml/models.py with real Keras (CPU, small inputs)."""

import os
import re

import keras
import numpy as np
import pytest
from keras import layers

from core.ml import models
from core.settings import architectures
from core.settings.config import TrainConfig

NUM_CLASSES = 3

# small widths where the defaults would only make the tests slower
SMALL_PARAMS = {
    "seed_cnn": {"dense_units": 16},
    "cnn": {"filters": [8, 16], "dense_layers": [16]},
    "deep_bn_cnn": {"width": 0.25, "dense_layers": [16, 8]},
    "resnet_small": {"width": 8, "blocks_per_stage": 1},
    "wide_cnn": {"filters": 16},
    "deep_cnn": {"depth": 6, "filters": 8},
    "mlp": {"hidden_units": [32, 16]},
    "logistic": {},
    "logistic_regression": {"penalty": "l1", "c_grid": [0.1]},  # the perceptron's graph; the C grid is scikit-learn's
    "transfer": {"weights": "none", "base": "mobilenet_v2"},
}


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Keras's global state (layer names, graph) fresh for every test; without the garbage collection
    clear_session also runs by default, which costs half a second per call in a full session."""
    keras.backend.clear_session(free_memory=False)
    yield
    keras.backend.clear_session(free_memory=False)


def random_batch(image_size, channels, num_classes=NUM_CLASSES, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, image_size, image_size, channels)).astype("float32")
    y = np.arange(batch) % num_classes
    return x, y


def assert_logits_then_softmax(model):
    last = model.layers[-1]
    assert isinstance(last, layers.Activation) and last.name == "probabilities"
    assert last.activation is keras.activations.softmax
    logits = model.get_layer("logits")
    assert isinstance(logits, layers.Dense) and logits.activation is keras.activations.linear
    assert last.input is logits.output


def test_registry_is_complete_and_defaults_resolve():
    expected = {"seed_cnn", "cnn", "deep_bn_cnn", "resnet_small", "wide_cnn", "deep_cnn", "mlp", "logistic",
                "logistic_regression", "transfer"}
    assert set(architectures.ARCHITECTURES) == expected
    for name, arch in architectures.ARCHITECTURES.items():
        assert arch.name == name and arch.title and arch.description
        assert architectures.resolve_params(name, None) == architectures.default_params(name)
        has_dropout = "dropout" in architectures.default_params(name)
        assert has_dropout == (name not in ("logistic", "logistic_regression"))
    assert architectures.ARCHITECTURES["logistic"].params == ()
    assert architectures.default_params("transfer") == {
        "base": "mobilenet_v2",
        "weights": "imagenet",
        "weights_file": "",
        "alpha": 1.0,
        "dropout": 0.2,
        "dense_layers": [],
        "fine_tune_epochs": 0,
        "fine_tune_layers": 30,
        "fine_tune_lr_factor": 0.1,
    }


def test_mobilenet_v2s_width_multiplier_thins_every_layer_and_names_its_own_weights_file():
    thin = models.build_model("transfer", 32, 1, 2, {"weights": "none", "alpha": 0.35})
    full = models.build_model("transfer", 32, 1, 2, {"weights": "none"})
    assert models.transfer_base(thin).count_params() < models.transfer_base(full).count_params() / 3
    assert architectures.resolve_params("transfer", {"alpha": 0.5})["alpha"] == 0.5
    assert models.imagenet_weights_file("mobilenet_v2", 96, 0.35) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")
    with pytest.raises(ValueError, match=r"alpha must be one of 0.35, 0.5"):
        architectures.resolve_params("transfer", {"alpha": 0.6})
    with pytest.raises(ValueError, match="alpha .*MobileNetV2's; resnet50_v2 has none"):
        architectures.resolve_params("transfer", {"base": "resnet50_v2", "alpha": 0.5})


def test_resolve_params_overlays_and_coerces():
    params = architectures.resolve_params("mlp", {"hidden_units": "64, 32", "dropout": 0})
    assert params == {"hidden_units": [64, 32], "activation": "relu", "dropout": 0.0}
    assert architectures.resolve_params("deep_cnn", {"depth": 4.0})["depth"] == 4
    # defaults handed out are copies: mutating them must not touch the registry
    architectures.default_params("mlp")["hidden_units"].append(1)
    assert architectures.default_params("mlp")["hidden_units"] == [256, 128]


# The fast tier builds every small architecture once, grayscale at 32 px; the other shapes and the
# transfer model (a MobileNetV2 in it) are in the slow tier.
SLOW = pytest.mark.slow


@pytest.mark.parametrize("arch", [pytest.param(arch, marks=SLOW) if arch == "transfer" else arch
                                  for arch in architectures.ARCHITECTURES])
@pytest.mark.parametrize("image_size,channels", [(32, 1), pytest.param(32, 3, marks=SLOW),
                                                 pytest.param(64, 1, marks=SLOW), pytest.param(64, 3, marks=SLOW)])
def test_every_architecture_builds_and_trains_one_step(arch, image_size, channels):
    model = models.build_model(arch, image_size, channels, NUM_CLASSES, SMALL_PARAMS[arch])
    assert model.name == arch
    assert tuple(model.input.shape) == (None, image_size, image_size, channels)
    assert tuple(model.output.shape) == (None, NUM_CLASSES)
    assert_logits_then_softmax(model)

    x, y = random_batch(image_size, channels)
    # eager: one step of a traced train function costs ~15 s for MobileNetV2 on CPU
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    probabilities = model.predict_on_batch(x)
    assert probabilities.shape == (len(x), NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@SLOW  # tracing the train step takes seconds; the session's tiny run trains in graph mode too
def test_default_conv_net_trains_in_graph_mode():
    model = models.build_model("deep_bn_cnn", 32, 1, NUM_CLASSES)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(*random_batch(32, 1)))


@SLOW
@pytest.mark.parametrize("base", ["efficientnet_b0", "resnet50_v2", "densenet121"])
def test_larger_transfer_bases_build(base):
    model = models.build_model("transfer", 32, 3, 2, {"base": base, "weights": "none"})
    assert tuple(model.output.shape) == (None, 2)
    assert_logits_then_softmax(model)
    assert models.transfer_base(model).trainable  # random weights: nothing to freeze
    assert models.model_stats(model)["macs"] > 1_000_000  # counted inside the nested base


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"image_size": 31}, "at least 32"),
        ({"channels": 2}, "channels must be 1"),
        ({"num_classes": 1}, "num_classes"),
        ({"arch": "vgg"}, "Unknown architecture 'vgg'.*seed_cnn.*transfer"),
        ({"params": {"dense_unit": 8, "zzz": 1}}, "dense_unit, zzz.*valid parameters: activation, dropout, dense_units"),
        ({"arch": "logistic", "params": {"dropout": 0.1}}, "Unknown parameter.*dropout.*\\(none\\)"),
        ({"params": {"activation": "swishy"}}, "activation.*one of relu"),
        ({"params": {"dropout": 1.5}}, "dropout.*between"),
        ({"params": {"dense_units": 2.5}}, "dense_units must be a whole number.*got 2.5"),
        ({"dropout": -0.1}, "dropout.*between"),
    ],
)
def test_bad_arguments_raise_helpful_value_errors(kwargs, match):
    args = {"arch": "seed_cnn", "image_size": 32, "channels": 1, "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        models.build_model(**args)


def test_imagenet_weights_offline_leave_a_random_base_and_a_note_that_says_so():
    size = 96
    weights_file = os.path.join(models.keras_models_dir(), models.imagenet_weights_file("mobilenet_v2", size))
    if os.path.exists(weights_file):
        pytest.skip(f"{weights_file} is already cached")
    notes = []
    model = models.build_model("transfer", size, 1, 2, {"weights": "imagenet"}, notes=notes)
    if not notes:
        pytest.skip("this machine is online: the weights were downloaded")
    assert_logits_then_softmax(model)
    assert models.transfer_base(model).trainable  # from scratch: nothing to keep frozen
    [message] = notes
    assert "trained from scratch" in message and '"file"' in message
    assert "~/.keras" in message and models.keras_models_dir() in message
    assert os.path.basename(weights_file) in message and "mobilenet_v2" in message


@pytest.mark.parametrize(
    "arch,params,channels",
    [("seed_cnn", {"dense_units": 16}, 1), pytest.param("transfer", {"weights": "none"}, 1, marks=SLOW)],
)
def test_save_and_load_round_trip(tmp_path, arch, params, channels):
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.05)])
    model = models.build_model(arch, 32, channels, NUM_CLASSES, params, augmentation=augmentation)
    x, _ = random_batch(32, channels)
    expected = model.predict_on_batch(x)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)

    np.testing.assert_array_equal(loaded.predict_on_batch(x), expected)
    assert loaded.name == arch
    assert_logits_then_softmax(loaded)
    assert models.model_stats(loaded) == models.model_stats(model)


def test_model_stats_matches_hand_computed_values():
    nested_input = keras.Input((8, 8, 4))
    nested = keras.Model(nested_input, layers.DepthwiseConv2D(3, depth_multiplier=2)(nested_input))

    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 3, padding="same", groups=2)(inputs)  # 8*8 * 3*3*1 * 4 = 2304 MACs, 9*1*4+4 = 40 params
    x = nested(x)  # -> 6x6x8: 6*6 * 3*3 * 4*2 = 2592 MACs, 9*4*2+8 = 80 params
    x = layers.SeparableConv2D(5, 1)(x)  # 6*6*8 + 6*6*8*5 = 288+1440 MACs, 8+40+5 = 53 params
    x = layers.Dense(3)(x)  # per position: 6*6 * 5*3 = 540 MACs, 18 params
    x = layers.Flatten()(x)  # 108 features
    x = layers.BatchNormalization()(x)  # 0 MACs, 4*108 params, half non-trainable
    outputs = layers.Dense(2)(x)  # 108*2 = 216 MACs, 218 params
    model = keras.Model(inputs, outputs)

    stats = models.model_stats(model)
    assert stats == {
        "trainable_params": 40 + 80 + 53 + 18 + 216 + 218,
        "total_params": 40 + 80 + 53 + 18 + 432 + 218,
        "macs": 2304 + 2592 + 288 + 1440 + 540 + 216,
    }
    assert stats["total_params"] == model.count_params()


def test_model_stats_of_seed_cnn():
    model = models.build_model("seed_cnn", 32, 1, NUM_CLASSES)
    stats = models.model_stats(model)
    assert stats["trainable_params"] == stats["total_params"] == model.count_params()
    # conv 30x30x32, conv 13x13x64 on 32 channels, conv 4x4x64 on 64, dense 1024->64, logits 64->3
    assert stats["macs"] == 30 * 30 * 9 * 32 + 13 * 13 * 9 * 32 * 64 + 4 * 4 * 9 * 64 * 64 + 1024 * 64 + 64 * 3


def test_unfreeze_top_layers_keeps_batchnorm_frozen():
    model = models.build_model("transfer", 32, 3, 2, {"weights": "none"})
    base = models.transfer_base(model)
    base.trainable = False
    head_weights = len(model.trainable_weights)
    assert head_weights == 2  # only the logits kernel and bias

    n = 7
    assert models.unfreeze_top_layers(model, n) == n
    unfreezable = [l for l in base.layers if not isinstance(l, (layers.BatchNormalization, layers.InputLayer))]
    assert [l for l in base.layers if l.trainable] == unfreezable[-n:]
    assert any(isinstance(l, layers.BatchNormalization) for l in base.layers[-n:])  # BN among them, still frozen
    assert len(model.trainable_weights) == head_weights + sum(len(l.trainable_weights) for l in unfreezable[-n:])

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    assert np.isfinite(model.train_on_batch(*random_batch(32, 3, num_classes=2)))

    assert models.unfreeze_top_layers(model, 0) == 0
    assert len(model.trainable_weights) == head_weights

    with pytest.raises(ValueError, match="transfer"):
        models.unfreeze_top_layers(models.build_model("seed_cnn", 32, 1, 2), 3)


def dropout_rates(model):
    return [l.rate for l in model.layers if isinstance(l, layers.Dropout)]


def test_dropout_argument_overrides_architecture_param():
    assert dropout_rates(models.build_model("seed_cnn", 32, 1, 2)) == [0.25, 0.25]
    assert dropout_rates(models.build_model("seed_cnn", 32, 1, 2, {"dropout": 0.1}, dropout=0.5)) == [0.5, 0.5]
    assert dropout_rates(models.build_model("transfer", 32, 1, 2, {"weights": "none"}, dropout=0.4)) == [0.4]
    assert dropout_rates(models.build_model("logistic", 32, 1, 2, dropout=0.5)) == []  # no dropout: ignored


def test_the_dropout_on_record_is_the_one_the_built_model_uses():
    from core.settings.config import with_used_dropout
    from tests.test_settings import OLD_CONFIG_WITH_TWO_DROPOUTS as old
    model = models.build_model(old["arch"], 32, 1, 2, params=old["arch_params"], dropout=old["dropout"])
    assert dropout_rates(model) == [with_used_dropout(old)["dropout"]] * 2 == [0.5, 0.5]


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_model("seed_cnn", 32, 1, NUM_CLASSES, {"dense_units": 16})
        conv = next(l for l in model.layers if isinstance(l, layers.Conv2D))
        assert conv.compute_dtype == "float16"  # hidden layers really run in float16
        assert model.get_layer("logits").compute_dtype == "float32"
        assert model.output.dtype == "float32"
        x, y = random_batch(32, 1)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
        assert np.isfinite(model.train_on_batch(x, y))
        assert model.predict_on_batch(x).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------------------- the configurable CNN

def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in models.all_layers(model)]


def layer_rows_without_names(model) -> list[tuple]:
    """Each layer's type, output shape, parameters and MACs (automatic names differ between builds)."""
    return [(r["type"], r["output_shape"], r["params"], r["macs"]) for r in models.layer_table(model)]


def final_map_size(image_size: int, blocks: int, pooling: str) -> int:
    """Side of the last feature maps: "same" 2x2 pooling rounds up after every block."""
    for _ in range(blocks if pooling != "none" else 0):
        image_size = -(-image_size // 2)
    return image_size


SIZES = [32, pytest.param(64, marks=SLOW), pytest.param(128, marks=SLOW)]
SMALL_CNN = {"filters": [8, 16], "dense_layers": [16], "kernel_size": 3}
CNN_VARIANTS = [{"pooling": "none"}, {"pooling": "average"}, {"pooling": "max"}, {"head": "global_average"},
                {"head": "flatten"}, {"batch_norm": True}, {"batch_norm": False}, {"convs_per_block": 1},
                {"convs_per_block": 2}, {"convs_per_block": 3}, {"dense_layers": []},
                {"dense_layers": [32, 16]}]


@pytest.mark.parametrize("image_size", SIZES)
@pytest.mark.parametrize("variant", CNN_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_the_configurable_cnn_builds_the_layers_its_parameters_say(image_size, variant):
    params = architectures.resolve_params("cnn", {**SMALL_CNN, **variant})
    model = models.build_model("cnn", image_size, 1, NUM_CLASSES, params)
    assert tuple(model.output.shape) == (None, NUM_CLASSES)
    assert_logits_then_softmax(model)
    types = layer_types(model)
    convs = len(params["filters"]) * params["convs_per_block"]
    assert types.count("Conv2D") == convs
    assert types.count("BatchNormalization") == (convs if params["batch_norm"] else 0)
    pooling = {"max": "MaxPooling2D", "average": "AveragePooling2D"}
    for kind, layer_type in pooling.items():
        assert types.count(layer_type) == (len(params["filters"]) if params["pooling"] == kind else 0)
    assert types.count("Flatten" if params["head"] == "flatten" else "GlobalAveragePooling2D") == 1
    assert types.count("Dense") == len(params["dense_layers"]) + 1  # + the logits
    assert types.count("Dropout") == max(1, len(params["dense_layers"]))
    side = final_map_size(image_size, len(params["filters"]), params["pooling"])
    last_conv = [l for l in models.all_layers(model) if isinstance(l, layers.Conv2D)][-1]
    assert tuple(last_conv.output.shape[1:]) == (
        final_map_size(image_size, len(params["filters"]) - 1, params["pooling"]),) * 2 + (16,)
    head = next(l for l in model.layers if isinstance(l, (layers.Flatten, layers.GlobalAveragePooling2D)))
    assert head.output.shape[-1] == (side * side * 16 if params["head"] == "flatten" else 16)


@pytest.mark.parametrize("image_size", SIZES)
@pytest.mark.parametrize("preset", list(architectures.CNN_PRESETS))
def test_every_cnn_preset_builds(preset, image_size):
    model = models.build_model("cnn", image_size, 1, NUM_CLASSES, architectures.preset_params(preset))
    assert tuple(model.output.shape) == (None, NUM_CLASSES)
    rows = models.layer_table(model)
    assert sum(r["params"] for r in rows) == models.model_stats(model)["total_params"]


def test_a_batchnorm_conv_has_no_bias_and_a_plain_conv_its_activation():
    with_bn = models.build_model("cnn", 32, 1, 2, {"filters": [4], "batch_norm": True, "activation": "elu"})
    conv = next(l for l in with_bn.layers if isinstance(l, layers.Conv2D))
    assert not conv.use_bias and conv.activation is keras.activations.linear
    assert layer_types(with_bn)[2:5] == ["Conv2D", "BatchNormalization", "Activation"]
    plain = models.build_model("cnn", 32, 1, 2, {"filters": [4], "activation": "elu"})
    conv = next(l for l in plain.layers if isinstance(l, layers.Conv2D))
    assert conv.use_bias and conv.activation is keras.activations.elu and conv.padding == "same"


@pytest.mark.parametrize("image_size", SIZES)
@pytest.mark.parametrize("preset,classic", [("deep_bn", "deep_bn_cnn"), ("wide", "wide_cnn")])
def test_presets_build_the_classic_architectures_layer_for_layer(preset, classic, image_size):
    as_preset = models.build_model("cnn", image_size, 1, NUM_CLASSES, architectures.preset_params(preset))
    as_classic = models.build_model(classic, image_size, 1, NUM_CLASSES)
    assert layer_rows_without_names(as_preset) == layer_rows_without_names(as_classic)
    assert models.model_stats(as_preset) == models.model_stats(as_classic)


# Counts of deep_bn_cnn and wide_cnn (defaults, grayscale, 2 classes) measured with their builders
# before they became calls of build_cnn: the same graph must keep giving them.
CLASSIC_COUNTS = {
    ("deep_bn_cnn", 32): (573_682, 574_930, 4_604_160),
    ("deep_bn_cnn", 64): (573_682, 574_930, 18_317_568),
    ("deep_bn_cnn", 128): (671_986, 673_234, 73_269_504),
    ("wide_cnn", 32): (413_314, 413_314, 108_134_656),
    ("wide_cnn", 128): (413_314, 413_314, 1_730_150_656),
}


@pytest.mark.parametrize("arch,image_size", list(CLASSIC_COUNTS))
def test_the_classic_architectures_keep_their_counts(arch, image_size):
    stats = models.model_stats(models.build_model(arch, image_size, 1, 2))
    assert (stats["trainable_params"], stats["total_params"], stats["macs"]) == CLASSIC_COUNTS[arch, image_size]


def test_wide_cnn_counts_by_hand():
    stats = models.model_stats(models.build_model("wide_cnn", 32, 1, 2, {"filters": 8, "kernel_size": 5}))
    # conv 5x5x1 -> 8 at 32x32, pool, conv 5x5x8 -> 8 at 16x16, pool, average, logits 8 -> 2
    assert stats["total_params"] == (25 * 8 + 8) + (25 * 8 * 8 + 8) + (8 * 2 + 2)
    assert stats["macs"] == 32 * 32 * 25 * 8 + 16 * 16 * 25 * 8 * 8 + 8 * 2


@pytest.mark.parametrize("filters", [0, 2000, "abc", [], [0], [16, 2000], ["abc"]])
def test_bad_filters_are_refused_with_a_clear_message(filters):
    config = TrainConfig(arch="cnn", arch_params={"filters": filters})
    with pytest.raises(ValueError, match=r"filters must be a non-empty list of whole numbers between 1 and 1,024; "
                                         r"got " + re.escape(repr(filters))):
        config.validate()


def test_presets_are_complete_copies():
    for name, preset in architectures.CNN_PRESETS.items():
        params = architectures.preset_params(name)
        assert preset.title and set(params) == set(architectures.default_params("cnn"))
        assert params == {**architectures.default_params("cnn"), **preset.params}
    architectures.preset_params("vgg")["filters"].append(1)
    assert architectures.preset_params("vgg")["filters"] == [32, 64, 128]
    with pytest.raises(ValueError, match="Unknown CNN preset 'vgg16'.*seed, vgg, deep_bn"):
        architectures.preset_params("vgg16")


@pytest.mark.parametrize("arch, params", [("cnn", {"batch_norm": True}), ("resnet_small", {}), ("deep_cnn", {}),
                                          ("deep_bn_cnn", {})])
def test_batchnorm_statistics_follow_short_trainings(arch, params):
    """Momentum 0.9: Keras' 0.99 left a 3-epoch ResNet's inference statistics unfit (every test image
    one class), and a 5-epoch deep_bn_cnn's too (tests/test_recipes.py)."""
    model = models.build_model(arch, 32, 1, 2, params)
    norms = [layer for layer in models.all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {models.BN_MOMENTUM}
