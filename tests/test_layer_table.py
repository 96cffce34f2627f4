"""The per-layer table: core.ml.models.layer_table on real Keras models (it adds up to model_stats),
its presentation (core.present.layers), layers.json saved by a real training run, read by
Run.layer_table and carried by exports, and its expander on Runs & Compare."""
import zipfile

import keras
import pytest
from keras import layers

from core.ml import models
from core.ml.training import execute_run
from core.present import layers as layers_view
from core.settings.architectures import ARCHITECTURES
from core.store import portable
from core.store.runs import RunStore
from tests.apptest_support import assert_clean, open_page
from tests.conftest import tiny_folder_config
from tests.test_runs_page_resources import select


@pytest.fixture(autouse=True)
def fresh_keras_session():
    keras.backend.clear_session(free_memory=False)
    yield
    keras.backend.clear_session(free_memory=False)


def sums(rows: list[dict]) -> tuple[int, int]:
    return sum(r["params"] for r in rows), sum(r["macs"] for r in rows)


# ----------------------------------------------------------------------------- the table of a model

@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a == "transfer" else a
                                  for a in ARCHITECTURES])
def test_the_table_adds_up_to_the_model_stats_for_every_architecture(arch):
    params = {"weights": "none"} if arch == "transfer" else {}
    model = models.build_model(arch, 64, 1, 2, params)
    rows = models.layer_table(model)
    stats = models.model_stats(model)
    assert sums(rows) == (stats["total_params"], stats["macs"])
    assert rows[-2]["layer"] == "logits" and rows[-1]["layer"] == "probabilities"
    assert {r["layer"] for r in rows if r["params"]} >= {
        l.name for l in model.layers if l.weights and not isinstance(l, keras.Model)}
    if arch == "transfer":  # the base's layers, under its name
        base = models.transfer_base(model).name
        assert sum(r["layer"].startswith(base + "/") for r in rows) == len(models.transfer_base(model).layers)


def test_rows_by_hand_with_a_nested_model():
    nested_input = keras.Input((8, 8, 4))
    nested = keras.Model(nested_input, layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(nested_input),
                         name="base")
    inputs = keras.Input((8, 8, 2), name="pixels")
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8*8*9*2*4 = 4608 MACs, 9*2*4+4 params
    x = nested(x)  # 6*6*9*4*2 = 2592 MACs, 9*4*2+8 params
    x = layers.MaxPooling2D(name="pool")(x)  # 3x3x8
    x = layers.Flatten(name="flat")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    outputs = layers.Dense(2, name="out")(x)  # 72*2 MACs, 146 params
    rows = models.layer_table(keras.Model(inputs, outputs))
    assert rows == [
        {"layer": "pixels", "type": "InputLayer", "output_shape": "8 x 8 x 2", "params": 0, "macs": 0},
        {"layer": "conv", "type": "Conv2D", "output_shape": "8 x 8 x 4", "params": 76, "macs": 4608},
        {"layer": f"base/{nested.layers[0].name}", "type": "InputLayer", "output_shape": "8 x 8 x 4",
         "params": 0, "macs": 0},
        {"layer": "base/depthwise", "type": "DepthwiseConv2D", "output_shape": "6 x 6 x 8", "params": 80,
         "macs": 2592},
        {"layer": "pool", "type": "MaxPooling2D", "output_shape": "3 x 3 x 8", "params": 0, "macs": 0},
        {"layer": "flat", "type": "Flatten", "output_shape": "72", "params": 0, "macs": 0},
        {"layer": "drop", "type": "Dropout", "output_shape": "72", "params": 0, "macs": 0},
        {"layer": "out", "type": "Dense", "output_shape": "2", "params": 146, "macs": 144},
    ]


def test_a_pretrained_transfer_base_is_measured_offline_and_frozen():
    measured = models.build_to_measure("transfer", 32, 1, 2, {"weights": "imagenet"})
    random_base = models.build_model("transfer", 32, 1, 2, {"weights": "none"})
    stats, random_stats = models.model_stats(measured), models.model_stats(random_base)
    assert stats["total_params"] == random_stats["total_params"] and stats["macs"] == random_stats["macs"]
    assert stats["trainable_params"] == 1280 * 2 + 2  # frozen base: only the logits learn
    assert random_stats["trainable_params"] > stats["trainable_params"]


# ----------------------------------------------------------------------------- presentation

ROWS = [{"layer": "pixels", "type": "InputLayer", "output_shape": "32 x 32 x 1", "params": 0, "macs": 0},
        {"layer": "conv2d", "type": "Conv2D", "output_shape": "32 x 32 x 32", "params": 320, "macs": 294_912},
        {"layer": "dense", "type": "Dense", "output_shape": "64", "params": 1_048_640, "macs": 1_048_576}]


def test_the_frame_has_readable_counts_and_a_totals_line():
    frame = layers_view.layer_frame(ROWS)
    assert list(frame.columns) == ["Layer", "Type", "Output shape", "Parameters", "MACs per image", "Share of MACs"]
    assert frame["Parameters"].tolist() == ["0", "320", "1,048,640", "1,048,960"]
    assert frame["MACs per image"].tolist() == ["0", "294.91 k", "1.05 M", "1.34 M"]
    assert frame["Share of MACs"].tolist() == ["", "22.0%", "78.0%", "100.0%"]
    assert frame.iloc[-1]["Layer"] == "Total (3 layers)"
    assert layers_view.totals_text(ROWS) == "3 layers · 1,048,960 parameters · 1.34 M MACs per image"
    assert layers_view.layer_frame([]).empty


def test_tiny_shares_and_models_without_macs():
    assert layers_view.macs_share(1, 10_000) == "<0.1%"
    assert layers_view.macs_share(0, 10_000) == "" and layers_view.macs_share(5, 0) == ""


def test_the_caption_says_when_counts_come_without_pretrained_weights():
    assert "random weights" in layers_view.counts_caption("transfer", {})
    assert "random weights" in layers_view.counts_caption("transfer", {"weights": "imagenet"})
    assert layers_view.counts_caption("transfer", {"weights": "none"}) is None
    assert layers_view.counts_caption("cnn", {}) is None


# ----------------------------------------------------------------------------- saved with each run

def test_older_runs_have_no_table(store):
    run = store.create({"arch": "seed_cnn"}, queued=False)
    assert run.layer_table() == []
    run.write_layer_table(ROWS)
    assert run.layer_table() == ROWS


def test_exports_carry_the_table(store, tmp_path):
    run = store.create({"arch": "seed_cnn"}, queued=False)
    run.update_status(state="done")
    run.write_layer_table(ROWS)
    archive = portable.export_runs(store, [run.id], tmp_path / "export.zip")
    assert any(name.endswith(f"{run.id}/layers.json") for name in zipfile.ZipFile(archive).namelist())
    other = RunStore(tmp_path / "other")
    [imported] = portable.import_archive(other, archive).imported
    assert other.get(imported).layer_table() == ROWS


@pytest.mark.slow  # trains for real (one epoch at 32 px)
def test_a_training_run_saves_its_table(chest_folder, tmp_path):
    config = tiny_folder_config(chest_folder, arch="cnn", epochs=1,
                                arch_params={"filters": [8, 16], "dense_layers": [16], "batch_norm": True})
    run = RunStore(tmp_path / "runs").create(config.to_dict(), queued=False)
    execute_run(run, config)
    assert run.state() == "done", run.status().get("error")
    rows = run.layer_table()
    stats = run.summary()["model"]
    assert sums(rows) == (stats["total_params"], stats["macs"])
    assert [r["type"] for r in rows if r["type"] in ("Conv2D", "BatchNormalization")] == \
        ["Conv2D", "BatchNormalization"] * 2


def test_runs_page_shows_the_selected_runs_table(app_env, make_run):
    with_layers = make_run("done", name="with-layers")
    with_layers.write_layer_table(ROWS)
    older = make_run("done", name="older")  # from before layers.json: nothing to show for it
    at = open_page("pages/runs.py")
    assert_clean(at)
    assert not layer_expanders(at)
    at = select(at, at.dataframe(key="runs_table").value, [with_layers.id])
    assert_clean(at)
    [expander] = layer_expanders(at)
    assert expander.label == "Layers of with-layers: output shape, parameters and MACs"
    assert "3 layers · 1,048,960 parameters" in expander.caption[0].value
    assert expander.dataframe[0].value["Parameters"].tolist() == ["0", "320", "1,048,640", "1,048,960"]
    at = select(at, at.dataframe(key="runs_table").value, [older.id])
    assert_clean(at)
    assert not layer_expanders(at)


def layer_expanders(at) -> list:
    return [e for e in at.expander if e.label.startswith("Layers of")]
