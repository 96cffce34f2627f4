"""Saliency maps: real models, real gradients. The key test trains a tiny CNN for real on a task
decided by a bright square and checks that the maps point at the square."""
import numpy as np
import pytest
from PIL import Image

from core.ml import explain, maps, saliency_graph
from core.ml.explain import Explainer
from core.ml.saliency_graph import ExplainError
from core.ml.inference import load_model

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
        heat = maps.resize_map(square_explainer.heatmap(image, method, class_index=1), (2 * SIZE, 2 * SIZE))
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
        heat = maps.resize_map(heat, (SIZE, SIZE))
        mask = np.zeros(heat.shape, dtype=bool)
        mask[row:row + SQUARE, col:col + SQUARE] = True
        assert heat[mask].mean() > 2 * heat[~mask].mean()


@pytest.mark.slow
def test_the_feature_map_is_found_automatically_and_can_be_overridden(square_model):
    assert saliency_graph.default_feature_layer(square_model) in saliency_graph.feature_map_candidates(square_model)
    first_conv = next(layer.name for layer in square_model.layers if saliency_graph.has_conv_layer_type(layer))
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
    assert explainer.grid.cells == (2, 2)  # the bases downsample 32x
    assert heat.shape == (64, 64) and np.isfinite(heat).all()  # placed on the input grid


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
    blended = maps.overlay(original, heat, opacity=0.5)
    assert blended.shape == (50, 70, 3) and blended.dtype == np.uint8
    assert np.array_equal(maps.overlay(original, heat, opacity=0.0), np.full((50, 70, 3), 100, np.uint8))
    assert np.array_equal(maps.overlay(original, heat, opacity=1.0),
                          maps.colorize(maps.resize_map(heat, (70, 50))))
    with pytest.raises(ValueError, match="opacity"):
        maps.overlay(original, heat, opacity=1.5)


def test_jet_colormap_runs_from_blue_to_red():
    low, high = maps.colorize(np.array([[0.0, 1.0]]))[0]
    assert low[2] > 100 and low[0] == 0 and high[0] > 100 and high[2] == 0


def test_flat_or_non_finite_maps_normalise_to_zeros():
    assert not maps.normalise_map(np.full((3, 3), 7.0)).any()
    values = maps.normalise_map(np.array([[np.nan, 1.0], [np.inf, 3.0]]))
    assert np.isfinite(values).all() and values.max() == 1.0


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
    assert maps.is_empty_map(np.zeros((4, 4))) and maps.is_empty_map(np.full((4, 4), 0.3))
    assert not maps.is_empty_map(maps.normalise_map(np.arange(16.0).reshape(4, 4)))
    message = explain.empty_map_message("gradcam", "NORMAL", ["NORMAL", "PNEUMONIA"])
    assert message.startswith("The Grad-CAM map of NORMAL is empty for this image")
    assert "ReLU" in message and "mirror images" in message and "absence of what it calls PNEUMONIA" in message
    three = explain.empty_map_message("gradcam", "COVID", ["NORMAL", "COVID", "PNEUMONIA"])
    assert "ReLU" in three and "mirror" not in three  # the mirror argument holds for two classes only
    assert explain.empty_map_message("saliency", "NORMAL", ["NORMAL", "PNEUMONIA"]).startswith(
        "The Vanilla saliency map of NORMAL is empty")


def test_captions_name_the_method_the_class_and_the_fallback():
    shown = explain.Explanation(np.ones((2, 2)), "hirescam", "gradcam", "NORMAL", maps.SanityCheck(0.9))
    assert shown.caption("NORMAL") == ("HiResCAM of NORMAL (the predicted class); Grad-CAM of NORMAL was empty "
                                       "for this image, so HiResCAM is shown")
    same = explain.Explanation(np.ones((2, 2)), "gradcam", "gradcam", "PNEUMONIA", None)
    assert same.caption("NORMAL") == "Grad-CAM of PNEUMONIA"


def test_the_sanity_verdict_says_yes_below_the_limit_and_no_above():
    assert maps.SanityCheck(0.12).verdict() == "map changes when the model is randomised: yes (ρ = 0.12)"
    assert maps.SanityCheck(0.94).verdict() == "map changes when the model is randomised: no (ρ = 0.94)"
    assert maps.SanityCheck(None).changed and "map is empty" in maps.SanityCheck(None).verdict()
    assert "**no**" in maps.SanityCheck(0.94).sentence() and "not read it as evidence" in maps.SanityCheck(0.94).sentence()


# ----------------------------------------------------------------------------- a real model

def empty_gradcam_image(explainer, dataset, rows):
    """(pixels, predicted class) of the first image whose Grad-CAM for its predicted class is empty."""
    for row in rows:
        pixels = dataset.images[row]
        predicted = explain.predicted_class(explainer, pixels)
        if maps.is_empty_map(explainer.heatmap(pixels, "gradcam", predicted)):
            return pixels, predicted
    pytest.fail("no test image with an empty Grad-CAM for this run")


@pytest.fixture(scope="module")
def tiny_run_explained(tiny_run):
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig
    dataset, split = load_data(TrainConfig.from_dict(tiny_run.config()))
    return Explainer(load_model(tiny_run)), dataset, split.test[::3][:150]


def test_an_empty_gradcam_of_a_trained_model_falls_back_to_hirescam(tiny_run_explained):
    explainer, dataset, rows = tiny_run_explained
    pixels, predicted = empty_gradcam_image(explainer, dataset, rows)
    shown = explain.explain_image(explainer, pixels, "gradcam", predicted, dataset.class_names)
    assert shown.method == "hirescam" and shown.requested == "gradcam" and not shown.empty
    assert shown.target == dataset.class_names[predicted] and shown.heatmap.shape == pixels.shape[:2]
    assert "was empty for this image, so HiResCAM is shown" in shown.caption()
    assert shown.sanity is not None
    chosen = explain.explain_image(explainer, pixels, "gradcam++", predicted, dataset.class_names)
    assert chosen.requested == "gradcam++" and chosen.method in explain.CAM_METHODS


def test_the_sanity_check_randomises_only_the_head_and_measures_the_rank_correlation(tiny_run_explained):
    from scipy.stats import spearmanr
    explainer, dataset, rows = tiny_run_explained
    model, randomised = explainer.model, explainer.randomised().model
    head = {layer.name for layer in saliency_graph.head_layers(model)}
    assert len(head) == 2 and "logits" in head  # seed_cnn: flatten -> dense -> logits
    for trained, copy in zip(model.layers, randomised.layers):
        same = all(np.array_equal(a, b) for a, b in zip(trained.get_weights(), copy.get_weights()))
        assert same == (trained.name not in head), trained.name
    assert explainer.randomised() is explainer.randomised()  # built once
    pixels = dataset.images[rows[0]]
    heatmap = explainer.heatmap(pixels, "saliency", 1)
    check = explain.sanity_check(explainer, pixels, "saliency", 1, heatmap)
    expected = spearmanr(heatmap.ravel(), explainer.randomised().heatmap(pixels, "saliency", 1).ravel()).statistic
    assert check.rho == pytest.approx(expected) and -1 <= check.rho < 1
    assert explain.sanity_check(explainer, pixels, "saliency", 1, heatmap) == check  # seeded: repeatable


def test_feature_maps_are_placed_where_their_cells_look():
    from core.ml.models import build_model
    valid = Explainer(build_model("seed_cnn", 64, 1, 2, params={"dense_units": 8}))
    # conv 3x3 (valid) -> pool 2 -> conv -> pool -> conv: cell i of the 12x12 map is centred on pixel 8.5 + 4 i
    assert valid.grid.cells == (12, 12)
    assert valid.grid.first == pytest.approx((8.5, 8.5), abs=0.01) and valid.grid.step == pytest.approx((4, 4), abs=0.01)
    one_cell = np.zeros((12, 12), np.float32)
    one_cell[0, 0] = 1.0
    placed = valid.grid.on_input(one_cell)
    hottest = set(zip(*np.nonzero(placed == placed.max())))
    assert hottest == {(8, 8), (8, 9), (9, 8), (9, 9)}  # around pixel 8.5, not (2, 2) where stretching put it
    assert not placed[:5].any() and not placed[:, 57:].any()  # one cell beyond the outer centres: zero
    same = Explainer(build_model("wide_cnn", SIZE, 1, 2, params={"filters": 4, "kernel_size": 3, "dropout": 0.0}))
    stretched = saliency_graph.stretched_grid(same.grid.cells, SIZE)  # "same" padding: the cells tile the image
    assert same.grid.first == pytest.approx(stretched.first, abs=0.6) and same.grid.step == pytest.approx(stretched.step, abs=0.1)


def test_saliency_graphs_are_traced_without_parsing_python_source(monkeypatch):
    """Autograph parses a function's source when it traces it, from whichever thread traces first (the
    Diagnose warm-up), which can corrupt CPython 3.11's parser state while Streamlit compiles a page."""
    import ast

    from core.ml.models import build_model
    parsed = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *args, **kwargs: parsed.append(1) or real_parse(*args, **kwargs))
    explainer = Explainer(build_model("seed_cnn", SIZE, 1, 2, params={"dense_units": 8}), smooth_samples=2)
    pixels = np.zeros((SIZE, SIZE, 1), np.uint8)
    for method in explainer.methods:
        shown = explain.explain_image(explainer, pixels, method, 0, ["NORMAL", "PNEUMONIA"])
        assert shown.heatmap.shape == (SIZE, SIZE)
    assert parsed == []


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
