"""The models of the classic chest X-ray reports (core.ml.models, core.settings.architectures), with
real Keras at 32 px: transfer bases with a dense head and a weights file, the configurable CNN's
per-block settings, and the single-layer perceptron's weight images."""

import keras
import numpy as np
import pytest
from keras import layers

from core.ml import models
from core.settings import architectures
from core.settings.config import TrainConfig
from tests.test_models import assert_logits_then_softmax, layer_types


@pytest.fixture(autouse=True)
def fresh_keras_session():
    keras.backend.clear_session(free_memory=False)
    yield
    keras.backend.clear_session(free_memory=False)


def dense_layers_of(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, layers.Dense)]


# ----------------------------------------------------------------------------- transfer learning

def test_a_transfer_head_of_dense_layers_is_an_mlp_on_the_pooled_features():
    model = models.build_model("transfer", 32, 1, 2, {"weights": "none", "dense_layers": [32, 16]})
    assert_logits_then_softmax(model)
    assert [layer.units for layer in dense_layers_of(model)] == [32, 16, 2]
    features = models.transfer_base(model).output.shape[-1]  # 1280 for MobileNetV2
    head = (features * 32 + 32) + (32 * 16 + 16) + (16 * 2 + 2)
    base = models.count_weights(models.transfer_base(model).weights)
    assert models.model_stats(model)["total_params"] == base + head
    assert [l.rate for l in model.layers if isinstance(l, layers.Dropout)] == [0.2, 0.2]  # before each dense


def test_a_transfer_head_has_at_most_five_dense_layers():
    architectures.resolve_params("transfer", {"dense_layers": [8] * 5})
    with pytest.raises(ValueError, match=r"dense_layers must be .*at most 5 of them; got \[8, 8, 8, 8, 8, 8\]"):
        TrainConfig(arch="transfer", arch_params={"dense_layers": [8] * 6}).validate()


def test_a_weights_file_is_loaded_into_the_base_and_frozen(tmp_path):
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "base.weights.h5")
    source.save_weights(path)
    model = models.build_model("transfer", 32, 1, 2, {"weights": "file", "weights_file": path})
    base = models.transfer_base(model)
    assert not base.trainable  # pretrained: frozen for the first phase
    for loaded, saved in zip(base.weights, source.weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))


def test_a_weights_file_that_does_not_load_fails_clearly_and_an_empty_one_is_refused(tmp_path):
    with pytest.raises(models.WeightsUnavailableError, match="could not be loaded into mobilenet_v2.*notop|no_top"):
        models.build_model("transfer", 32, 1, 2, {"weights": "file", "weights_file": str(tmp_path / "gone.h5")})
    with pytest.raises(ValueError, match="weights 'file' needs weights_file"):
        TrainConfig(arch="transfer", arch_params={"weights": "file"}).validate()


def test_densenet_inputs_are_normalised_as_imagenet_was():
    pixels = keras.Input((32, 32, 1))
    prepare = keras.Model(pixels, models.base_inputs(pixels, "densenet121"))
    gray = np.full((1, 32, 32, 1), 128.0, dtype=np.float32)
    expected = (128 / 255 - models.IMAGENET_MEAN) / models.IMAGENET_STD
    np.testing.assert_allclose(prepare.predict(gray, verbose=0)[0, 0, 0], expected, rtol=1e-5)


# ----------------------------------------------------------------------------- the configurable CNN

def test_per_block_kernels_activations_and_pools_build_what_they_say():
    params = {"filters": [4, 8], "kernel_sizes": [5, 3], "activations": "tanh, elu", "pool_sizes": [4, 1],
              "dense_layers": []}
    model = models.build_model("cnn", 32, 1, 2, params)
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3)]
    assert [c.activation for c in convs] == [keras.activations.tanh, keras.activations.elu]
    pools = [l for l in model.layers if isinstance(l, layers.MaxPooling2D)]
    assert [p.pool_size for p in pools] == [(4, 4)]  # a pool size of 1 is no pooling
    assert tuple(convs[1].output.shape[1:]) == (8, 8, 8)
    # conv 5x5x1 -> 4, conv 3x3x4 -> 8 at 8x8 (not pooled), flatten 512 -> logits
    assert models.model_stats(model)["total_params"] == (25 * 4 + 4) + (9 * 4 * 8 + 8) + (8 * 8 * 8 * 2 + 2)


def test_dropout_goes_after_the_named_blocks_and_where_the_head_says():
    params = {"filters": [4, 4, 4], "dropout_after_blocks": [1, 3], "block_dropout": 0.1,
              "dense_layers": [8, 8], "head_dropout": "before_logits"}
    model = models.build_model("cnn", 32, 1, 2, params, dropout=0.5)
    types = layer_types(model)
    rates = [l.rate for l in model.layers if isinstance(l, layers.Dropout)]
    assert rates == [0.1, 0.1, 0.5]
    first_block = types.index("MaxPooling2D")
    assert types[first_block + 1] == "Dropout"  # right after block 1's pooling
    assert types[-4:] == ["Dense", "Dropout", "Dense", "Activation"]  # one dropout, just before the logits
    every = models.build_model("cnn", 32, 1, 2, {**params, "head_dropout": "every_dense"}, dropout=0.5)
    assert [l.rate for l in every.layers if isinstance(l, layers.Dropout)] == [0.1, 0.1, 0.5, 0.5]


@pytest.mark.parametrize("params,match", [
    ({"kernel_sizes": [3, 3]}, r"kernel_sizes must have one entry per conv block \(3, as filters\)"),
    ({"activations": ["relu"]}, "activations must have one entry per conv block"),
    ({"activations": "relu, swish, relu"}, "activations must be a list of names, each one of relu"),
    ({"pool_sizes": [2, 2, 2, 2]}, "pool_sizes must have one entry per conv block"),
    ({"dropout_after_blocks": [4]}, r"dropout_after_blocks names block\(s\) \[4\] but there are 3"),
])
def test_per_block_settings_that_do_not_fit_the_blocks_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(arch="cnn", arch_params=params).validate()


def test_the_new_cnn_settings_leave_the_default_graph_as_it_was():
    """Empty per-block lists and no block dropout: the same layers as before they existed."""
    model = models.build_model("cnn", 32, 1, 2)
    assert layer_types(model) == ["InputLayer", "Rescaling"] + ["Conv2D", "MaxPooling2D"] * 3 + \
        ["Flatten", "Dropout", "Dense", "Dense", "Activation"]


def test_architecture_settings_round_trip_through_the_saved_config():
    config = TrainConfig(arch="cnn", arch_params={"filters": [8, 16], "activations": ["elu", "tanh"],
                                                  "kernel_sizes": [5, 3], "pool_sizes": [2, 3],
                                                  "dropout_after_blocks": [2], "block_dropout": 0.3,
                                                  "head_dropout": "before_logits"}).validate()
    again = TrainConfig.from_json(config.to_json()).validate()
    assert again == config
    as_typed = architectures.resolve_params("cnn", {**config.arch_params, "activations": "elu, tanh"})
    assert as_typed == architectures.resolve_params("cnn", again.arch_params)  # a text box's "elu, tanh"
    transfer = TrainConfig(arch="transfer", arch_params={"base": "densenet121", "dense_layers": [64, 32],
                                                          "weights": "file", "weights_file": "/w/d.h5"})
    assert TrainConfig.from_json(transfer.validate().to_json()).validate() == transfer


# ----------------------------------------------------------------------------- the perceptron

def test_the_perceptron_weight_images_are_each_class_logit_as_an_image():
    model = models.build_model("logistic", 32, 1, 3)
    images = models.class_weight_images(model)
    assert images.shape == (3, 32, 32, 1)
    # the logit of class k is the image (rescaled to 0-1) times its weight image, plus the bias
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    logits = keras.Model(model.input, model.get_layer("logits").output).predict(x, verbose=0)
    bias = np.asarray(model.get_layer("logits").bias)
    by_hand = np.einsum("nhwc,khwc->nk", x / 255, images) + bias
    np.testing.assert_allclose(logits, by_hand, rtol=1e-4, atol=1e-4)
    assert models.class_weight_images(models.build_model("logistic", 32, 3, 2)).shape == (2, 32, 32, 3)


def test_a_model_with_hidden_layers_has_no_weight_images():
    with pytest.raises(ValueError, match="no weight per pixel"):
        models.class_weight_images(models.build_model("mlp", 32, 1, 2, {"hidden_units": [8]}))


def test_weight_pictures_share_one_scale_red_up_blue_down():
    from core.present import weight_images
    weights = np.zeros((2, 4, 4, 1))
    weights[0, 0, 0, 0], weights[1, 0, 0, 0], weights[1, 1, 1, 0] = 2.0, -2.0, 1.0
    first, second = weight_images.class_pictures(weights)
    assert first.shape == (4, 4, 3) and first.dtype == np.uint8
    assert tuple(first[0, 0]) == tuple(weight_images.RED) and tuple(second[0, 0]) == tuple(weight_images.BLUE)
    assert tuple(first[3, 3]) == (255, 255, 255)
    assert 0 < second[1, 1, 1] < 255  # half the largest weight: half way to red on the shared scale


def test_evaluate_shows_a_perceptron_runs_weights_per_class(app_env, make_run):
    from tests.apptest_support import assert_clean, open_page
    run = make_run("done", name="perceptron", arch="logistic", image_size=32)
    run.save_model(models.build_model("logistic", 32, 1, 2))
    at = open_page("pages/evaluate.py", {"eval_run": run.id})
    assert_clean(at)
    assert "What the perceptron weighs" in [h.value for h in at.subheader]
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert captions[-2:] == run.summary()["class_names"]  # one picture per class, after the gallery
    other = make_run("done", name="cnn", image_size=32)
    other_page = open_page("pages/evaluate.py", {"eval_run": other.id})
    assert "What the perceptron weighs" not in [h.value for h in other_page.subheader]
    assert len(other_page.get("image")) == len(at.get("image")) - 2
