"""Saliency maps: real models, real gradients. The key test trains a tiny CNN for real on a task
decided by a bright square and checks that the maps point at the square."""
import numpy as np
import pytest
from PIL import Image

from core.ml import explain
from core.ml.explain import Explainer, ExplainError

SIZE = 32
SQUARE = 8


def square_images(n: int, seed: int):
    """Noisy dark images; class 1 has a bright SQUARE x SQUARE patch at a random place."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, SIZE, SIZE, 1)).astype(np.uint8)
    labels = np.arange(n) % 2
    corners = rng.integers(0, SIZE - SQUARE, size=(n, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        if label:
            image[row:row + SQUARE, col:col + SQUARE] = 230
    return images, labels, corners


# The square model trains 6 epochs on 600 images: the tests that use it are in the slow tier.
@pytest.fixture(scope="module")
def square_model():
    import keras

    from core.ml.models import build_model
    keras.utils.set_random_seed(0)
    model = build_model("wide_cnn", SIZE, 1, 2, params={"filters": 16, "kernel_size": 3, "dropout": 0.0})
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images, labels, _ = square_images(600, seed=1)
    model.fit(images.astype(np.float32), labels, epochs=6, batch_size=32, verbose=0)
    test_images, test_labels, _ = square_images(100, seed=2)
    accuracy = model.evaluate(test_images.astype(np.float32), test_labels, verbose=0)[1]
    assert accuracy > 0.95, f"the square task did not train (accuracy {accuracy:.2f})"
    return model


@pytest.fixture(scope="module")
def square_explainer(square_model):
    return Explainer(square_model, smooth_samples=8)


def positives(n=6):
    images, labels, corners = square_images(2 * n, seed=3)
    keep = labels == 1
    return images[keep], corners[keep]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(explain.METHODS))
def test_maps_peak_on_the_bright_square(square_explainer, method):
    images, corners = positives()
    hits = 0
    for image, (row, col) in zip(images, corners):
        # rendered at twice the model size, as for an original image larger than the model input
        heat = explain.resize_map(square_explainer.heatmap(image, method, class_index=1), (2 * SIZE, 2 * SIZE))
        assert heat.shape == (2 * SIZE, 2 * SIZE) and np.isfinite(heat).all()
        peak_row, peak_col = np.unravel_index(np.argmax(heat), heat.shape)
        # within the square, allowing half a feature-map cell (4 px at model size) of blur
        inside = (row - 4 <= peak_row / 2 < row + SQUARE + 4) and (col - 4 <= peak_col / 2 < col + SQUARE + 4)
        hits += inside
    assert hits >= len(images) - 1, f"{method}: the peak was on the square in only {hits}/{len(images)} images"


@pytest.mark.slow
def test_heat_is_concentrated_on_the_square(square_explainer):
    images, corners = positives()
    for image, (row, col) in zip(images, corners):
        heat = square_explainer.heatmap(image, "gradcam", class_index=1)
        heat = explain.resize_map(heat, (SIZE, SIZE))
        mask = np.zeros(heat.shape, dtype=bool)
        mask[row:row + SQUARE, col:col + SQUARE] = True
        assert heat[mask].mean() > 2 * heat[~mask].mean()


@pytest.mark.slow
def test_the_feature_map_is_found_automatically_and_can_be_overridden(square_model):
    assert explain.default_feature_layer(square_model) in explain.feature_map_candidates(square_model)
    first_conv = next(layer.name for layer in square_model.layers if explain.has_conv_layer_type(layer))
    explainer = Explainer(square_model, feature_layer=first_conv)
    heat = explainer.heatmap(positives()[0][0], "gradcam", 1)
    assert heat.shape == (SIZE, SIZE)  # the first conv keeps the full resolution ("same" padding)
    with pytest.raises(ExplainError, match="choose one of"):
        Explainer(square_model, feature_layer="logits")


@pytest.mark.slow
def test_every_registry_architecture_gives_finite_maps_of_the_right_shape():
    from core.ml.models import build_model
    small = {"deep_bn_cnn": {"width": 0.25, "dense_layers": [8]}, "resnet_small": {"width": 4, "blocks_per_stage": 1},
             "wide_cnn": {"filters": 8}, "deep_cnn": {"depth": 4, "filters": 4}, "seed_cnn": {"dense_units": 8}}
    pixels = np.random.default_rng(0).integers(0, 255, size=(SIZE, SIZE, 1)).astype(np.uint8)
    for arch, params in small.items():
        explainer = Explainer(build_model(arch, SIZE, 1, 3, params=params))
        for method in ("gradcam", "gradcam++", "saliency"):
            heat = explainer.heatmap(pixels, method, class_index=2)
            assert heat.ndim == 2 and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1, (arch, method)


@pytest.mark.slow
@pytest.mark.parametrize("base", ["mobilenet_v2", "efficientnet_b0", "resnet50_v2"])
def test_transfer_models_use_the_nested_base_output(base):
    from core.ml.models import build_model, transfer_base
    model = build_model("transfer", 64, 1, 2, params={"base": base, "weights": "none"})
    explainer = Explainer(model)
    assert explainer.feature_layer == transfer_base(model).name
    pixels = np.random.default_rng(0).integers(0, 255, size=(64, 64, 1)).astype(np.uint8)
    heat = explainer.heatmap(pixels, "gradcam", 1)
    assert heat.shape == (2, 2) and np.isfinite(heat).all()  # the bases downsample 32x


def test_transfer_at_a_size_with_a_1x1_feature_map_explains_why_gradcam_is_off():
    from core.ml.models import build_model
    model = build_model("transfer", 32, 1, 2, params={"base": "mobilenet_v2", "weights": "none"})
    explainer = Explainer(model)
    assert "1x1" in explainer.cam_unavailable and "gradcam" not in explainer.methods
    with pytest.raises(ExplainError, match="1x1"):
        explainer.heatmap(np.zeros((32, 32, 1), np.uint8), "gradcam", 0)


@pytest.mark.parametrize("arch", ["mlp", "logistic"])
def test_models_without_convolutions_refuse_gradcam_but_give_saliency(arch):
    from core.ml.models import build_model
    params = {"hidden_units": [8]} if arch == "mlp" else None
    explainer = Explainer(build_model(arch, SIZE, 1, 2, params=params), smooth_samples=4)
    assert explainer.methods == ["saliency", "smoothgrad"]
    pixels = np.random.default_rng(0).integers(0, 255, size=(SIZE, SIZE, 1)).astype(np.uint8)
    with pytest.raises(ExplainError, match="no convolutional layer"):
        explainer.heatmap(pixels, "gradcam", 0)
    for method in ("saliency", "smoothgrad"):
        heat = explainer.heatmap(pixels, method, 1)
        assert heat.shape == (SIZE, SIZE) and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_unknown_method_is_a_clear_error(square_explainer):
    with pytest.raises(ExplainError, match="unknown method"):
        square_explainer.heatmap(np.zeros((SIZE, SIZE, 1), np.uint8), "lime", 0)


# ----------------------------------------------------------------------------- rendering

def test_overlay_keeps_the_original_resolution_and_blends_by_opacity():
    original = Image.fromarray(np.full((50, 70), 100, np.uint8))  # 70 wide, 50 high
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    blended = explain.overlay(original, heat, opacity=0.5)
    assert blended.shape == (50, 70, 3) and blended.dtype == np.uint8
    assert np.array_equal(explain.overlay(original, heat, opacity=0.0), np.full((50, 70, 3), 100, np.uint8))
    assert np.array_equal(explain.overlay(original, heat, opacity=1.0),
                          explain.colorize(explain.resize_map(heat, (70, 50))))
    with pytest.raises(ValueError, match="opacity"):
        explain.overlay(original, heat, opacity=1.5)


def test_jet_colormap_runs_from_blue_to_red():
    low, high = explain.colorize(np.array([[0.0, 1.0]]))[0]
    assert low[2] > 100 and low[0] == 0 and high[0] > 100 and high[2] == 0


def test_flat_or_non_finite_maps_normalise_to_zeros():
    assert not explain.normalise_map(np.full((3, 3), 7.0)).any()
    values = explain.normalise_map(np.array([[np.nan, 1.0], [np.inf, 3.0]]))
    assert np.isfinite(values).all() and values.max() == 1.0


@pytest.mark.slow
def test_overlay_for_image_explains_the_predicted_class_on_any_image(square_model):
    image, (row, col) = positives()[0][0], positives()[1][0]
    original = Image.fromarray(image[..., 0]).resize((96, 96))
    blended = explain.overlay_for_image(square_model, image, method="gradcam", image=original, opacity=1.0)
    assert blended.shape == (96, 96, 3)
    red = blended[..., 0].astype(int) - blended[..., 2].astype(int)  # jet: red = hot
    peak_row, peak_col = np.unravel_index(np.argmax(red), red.shape)
    assert row - 4 <= peak_row / 3 < row + SQUARE + 4 and col - 4 <= peak_col / 3 < col + SQUARE + 4
    assert explain.explainer_for(square_model) is explain.explainer_for(square_model)  # built once


@pytest.mark.slow
def test_the_evaluate_gallery_overlay_comes_from_a_saved_run(square_model, tmp_path):
    from core.present.review import explanation_overlay
    from core.store.runs import RunStore
    run = RunStore(tmp_path).create({"arch": "wide_cnn", "image_size": SIZE})
    run.save_model(square_model)
    images, corners = positives()
    gray = images[0][..., 0]  # the gallery passes grayscale images without the channel axis
    blended = explanation_overlay(run, "square.png", gray).image
    assert blended.shape == (SIZE, SIZE, 3) and blended.dtype == np.uint8
    red = blended[..., 0].astype(int) - blended[..., 2].astype(int)
    peak_row, peak_col = np.unravel_index(np.argmax(red), red.shape)
    row, col = corners[0]
    assert row - 4 <= peak_row < row + SQUARE + 4 and col - 4 <= peak_col < col + SQUARE + 4
    assert explain.explainer_for_run(run) is explain.explainer_for_run(run)  # the model is loaded once


# ----------------------------------------------------------------------------- empty maps

def test_empty_maps_are_recognised_and_explained():
    assert explain.is_empty_map(np.zeros((4, 4))) and explain.is_empty_map(np.full((4, 4), 0.3))
    assert not explain.is_empty_map(explain.normalise_map(np.arange(16.0).reshape(4, 4)))
    message = explain.empty_map_message("gradcam")
    assert "empty" in message and "ReLU" in message and "negative everywhere" in message and "Grad-CAM++" in message
    assert explain.empty_map_message("saliency").startswith("The Vanilla saliency map is empty")



def test_run_explainers_are_built_once_across_threads_and_the_least_recent_is_dropped(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from core.ml.models import build_model
    from core.store.runs import RunStore
    model = build_model("wide_cnn", SIZE, 1, 2, params={"filters": 4, "kernel_size": 3, "dropout": 0.0})
    store = RunStore(tmp_path)
    runs = [store.create({"arch": "wide_cnn"}, queued=False) for _ in range(explain._RUN_EXPLAINERS_KEPT + 1)]
    for run in runs:
        run.save_model(model)
    with ThreadPoolExecutor(4) as pool:  # sessions of the Diagnose and Evaluate pages asking at once
        first = list(pool.map(lambda _: explain.explainer_for_run(runs[0]), range(8)))
    assert all(explainer is first[0] for explainer in first)
    for run in runs[1:]:
        explain.explainer_for_run(run)
    assert explain.explainer_for_run(runs[-1]) is explain.explainer_for_run(runs[-1])
    assert explain.explainer_for_run(runs[0]) is not first[0]  # dropped for the newer ones, loaded again
