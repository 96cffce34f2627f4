"""The dashboard's logic without Streamlit: run tables, config diffs, estimates, chart specs,
form handling, uploads and the misclassified gallery."""
import json

import numpy as np
import pandas as pd
import pytest

from core.data.datasets import DataError
from core.data.imaging import displayable
from core.present import charts, compare, forms, review
from core.settings.config import TrainConfig
from tests.conftest import fake_predictions

# ----------------------------------------------------------------------------- compare

def test_flatten_nested_config():
    flat = compare.flatten({"arch_params": {"width": 2, "dense_layers": [128, 64]},
                            "augmentation": {"zoom": 0.1}, "epochs": 3})
    assert flat == {"arch_params.width": 2, "arch_params.dense_layers": "128, 64",
                    "augmentation.zoom": 0.1, "epochs": 3}


def test_config_diff_keeps_only_differing_settings():
    a = TrainConfig(name="a", arch_params={"activation": "relu"}).to_dict()
    b = TrainConfig(name="b", arch_params={"activation": "elu"}, dropout=0.3).to_dict()
    b["augmentation"]["zoom"] = 0.2
    diff = compare.config_diff({"a": a, "b": b})
    assert set(diff.index) == {"arch_params.activation", "dropout", "augmentation.zoom"}
    assert diff.loc["arch_params.activation"].tolist() == ["relu", "elu"]
    assert diff.loc["dropout"].tolist() == ["0.25", "0.3"]  # seed_cnn's own 0.25: the rate its model used


def test_runs_table_and_diff_show_the_dropout_the_model_used(make_run):
    from tests.test_settings import OLD_CONFIG_WITH_TWO_DROPOUTS
    old = make_run("done", name="old")
    old.config_path.write_text(json.dumps({**old.config(), **OLD_CONFIG_WITH_TWO_DROPOUTS}))
    assert compare.run_row(old.describe(), old.config())["dropout"] == 0.5
    default = make_run("done", name="default")
    assert compare.run_row(default.describe(), default.config())["dropout"] == 0.25  # seed_cnn's own
    diff = compare.config_diff({"old": old.config(), "default": default.config()})
    assert diff.loc["dropout"].tolist() == ["0.5", "0.25"] and "arch_params.dropout" not in diff.index


def test_config_diff_of_identical_configs_is_empty():
    config = TrainConfig().to_dict()
    assert compare.config_diff({"a": config, "b": dict(config, name="other")}).empty


def test_runs_table_filters_by_state_arch_and_text(make_run):
    runs = [make_run("done", name="relu-run"), make_run("failed", name="elu-run", error="boom", arch="mlp"),
            make_run("running", name="slow")]
    table = compare.runs_table([compare.run_row(r.describe(), r.config()) for r in runs])
    assert list(table.columns) == list(compare.TABLE_COLUMNS)
    assert compare.filter_runs(table, states=["failed"])["name"].tolist() == ["elu-run"]
    assert sorted(compare.filter_runs(table, archs=["seed_cnn"])["name"]) == ["relu-run", "slow"]
    assert compare.filter_runs(table, text="RELU")["name"].tolist() == ["relu-run"]
    assert len(compare.filter_runs(table)) == 3
    failed = table[table["name"] == "elu-run"].iloc[0]
    assert failed["error"] == "boom" and pd.isna(failed["test_accuracy"])
    csv = compare.table_csv(table).decode()
    assert csv.splitlines()[0].startswith("name,state,arch") and "relu-run" in csv


def test_metrics_side_by_side_has_one_column_per_run(make_run):
    a, b = make_run("done", seed=1), make_run("done", seed=2)
    frame = compare.metrics_side_by_side({"a": a.summary(), "b": b.summary()}, "test")
    assert list(frame.columns) == ["a", "b"]
    assert frame.loc["accuracy", "a"] == a.summary()["test"]["accuracy"]
    assert frame.loc["best_val_loss", "b"] == pytest.approx(0.42)


def test_parallel_coordinates_scales_numeric_and_categorical_axes():
    configs = {"a": TrainConfig(learning_rate=1e-3, optimizer="adam").to_dict(),
               "b": TrainConfig(learning_rate=1e-2, optimizer="sgd").to_dict(),
               "c": TrainConfig(learning_rate=1e-4, optimizer="adam").to_dict()}
    frame = compare.parallel_coordinates_frame(configs, {"a": 0.8, "b": 0.6, "c": 0.9})
    lr = frame[frame["axis"] == "learning_rate"].set_index("run")["position"]
    assert lr["c"] == 0 and lr["b"] == 1 and 0 < lr["a"] < 1
    optimizer = frame[frame["axis"] == "optimizer"].set_index("run")
    assert optimizer.loc["a", "position"] == 0 and optimizer.loc["b", "position"] == 1
    assert optimizer.loc["b", "label"] == "sgd"
    assert list(dict.fromkeys(frame["axis"]))[-1] == "metric"
    assert frame[frame["axis"] == "metric"].set_index("run")["position"]["c"] == 1


def test_parallel_coordinates_keeps_a_numeric_axis_numeric_next_to_a_default():
    configs = {"a": TrainConfig(arch_params={"activation": "elu"}).to_dict(),
               "b": TrainConfig(arch_params={"activation": "relu", "dense_units": 32}).to_dict(),
               "c": TrainConfig(arch_params={"activation": "relu", "dense_units": 64}).to_dict()}
    frame = compare.parallel_coordinates_frame(configs, {"a": 0.8, "b": 0.6, "c": 0.9})
    units = frame[frame["axis"] == "arch_params.dense_units"].set_index("run")
    assert units.loc["b", "position"] == 0 and units.loc["c", "position"] == 1  # scaled as numbers
    assert units.loc["a", "position"] == compare.DEFAULT_POSITION < 0  # apart, below the scale
    assert units.loc["a", "label"] == "default" and units["off_scale"].tolist() == [True, False, False]
    spec = _spec(charts.parallel_coordinates_chart(frame, "test_accuracy"))
    assert any(layer["mark"].get("type") == "rect" for layer in spec["layer"])  # the off-scale band


def test_parallel_coordinates_axis_labels_are_never_dropped_at_many_axes():
    overrides = {"learning_rate": 0.01, "batch_size": 64, "dropout": 0.4, "epochs": 4, "optimizer": "sgd",
                 "image_size": 64, "label_smoothing": 0.1, "weight_decay": 0.01, "momentum": 0.5,
                 "augmentation.rotation_degrees": 10}
    configs = {"a": TrainConfig().to_dict(), "b": TrainConfig().with_overrides(overrides).to_dict()}
    frame = compare.parallel_coordinates_frame(configs, {"a": 0.5, "b": 0.7})
    assert frame["axis"].nunique() == len(overrides) + 1
    spec = _spec(charts.parallel_coordinates_chart(frame, "test_accuracy"))
    axis = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")["encoding"]["x"]["axis"]
    assert axis["labelOverlap"] is False and axis["labelLimit"] == 0 and axis["labelAngle"] != 0


def test_metrics_side_by_side_shows_macro_auc_recall_and_never_predicted_classes(make_run):
    run = make_run("done", class_names=("normal", "bacterial", "viral"), task="subtype")
    summary = run.summary()
    frame = compare.metrics_side_by_side({"a": summary}, "test")
    assert frame.loc["macro_ovr_auc", "a"] == summary["test"]["macro_ovr_auc"]
    assert frame.loc["recall: viral", "a"] == summary["test"]["per_class"]["viral"]["recall"]
    assert compare.never_predicted_warnings({"a": summary}) == []
    # A model that folds every viral image into bacterial: viral is never predicted.
    matrix = [[10, 2, 0], [1, 20, 0], [0, 7, 0]]
    summary = {"class_names": ["normal", "bacterial", "viral"], "test": {"confusion_matrix": matrix}}
    assert compare.never_predicted_warnings({"b": summary}) == ["b: viral never predicted (0 of 7 viral images)"]


def test_formatting_helpers():
    assert compare.format_seconds(None) == "—"
    assert compare.format_seconds(42.4) == "42 s"
    assert compare.format_seconds(185) == "3 min 5 s"
    assert compare.format_seconds(3720) == "1 h 2 min"
    assert compare.format_count(1_234_567) == "1.23 M"
    assert compare.format_count(950) == "950"
    assert compare.unique_names(["cnn", "cnn", "mlp"]) == ["cnn", "cnn (2)", "mlp"]


# ----------------------------------------------------------------------------- charts

def test_class_colours_are_fixed_for_chest_classes_and_distinct_otherwise():
    assert charts.class_color("NORMAL") == charts.class_color("normal")
    assert charts.class_colors(["normal", "bacterial", "viral"]) == [
        charts.KNOWN_CLASS_COLORS[c] for c in ("normal", "bacterial", "viral")]
    generic = charts.class_colors(["cat", "dog", "NORMAL"])
    assert len(set(generic)) == 3 and generic[2] == charts.KNOWN_CLASS_COLORS["normal"]


def _spec(chart) -> dict:
    return chart.to_dict()


def _titles(spec) -> list[str]:
    """Every axis title in a (possibly layered) Vega-Lite spec."""
    found = []
    layers = spec.get("layer", [spec])
    for layer in layers:
        for channel in ("x", "y"):
            title = layer.get("encoding", {}).get(channel, {}).get("title")
            if title:
                found.append(title)
    return found


def test_class_counts_chart_uses_class_colours():
    spec = _spec(charts.class_counts_chart({"train": {"NORMAL": 5, "PNEUMONIA": 9}, "val": {"NORMAL": 1, "PNEUMONIA": 2}}))
    assert spec["title"] == "Images per class and split"
    assert spec["encoding"]["color"]["scale"]["range"] == [charts.KNOWN_CLASS_COLORS["normal"],
                                                           charts.KNOWN_CLASS_COLORS["pneumonia"]]
    assert set(_titles(spec)) == {"Split", "Images"}


def test_history_chart_has_train_and_val_curves():
    history = [{"epoch": 1, "loss": 0.9, "val_loss": 1.0}, {"epoch": 2, "loss": 0.5, "val_loss": 0.7}]
    frame = charts.history_frame(history, "loss")
    assert frame.groupby("split")["value"].count().to_dict() == {"train": 2, "val": 2}
    spec = _spec(charts.history_chart(history, "loss"))
    assert "Loss" in spec["title"] and set(_titles(spec)) == {"Epoch", "Loss"}


def test_compare_history_chart_overlays_runs():
    spec = _spec(charts.compare_history_chart({"a": [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.4}],
                                               "b": [{"epoch": 1, "accuracy": 0.6}]}, "accuracy"))
    runs = {row["run"] for row in next(iter(spec["datasets"].values()))}
    assert runs == {"a", "b"}


def test_evaluation_charts_build_from_metrics_results():
    probabilities, labels, _, _ = fake_predictions(60, ["NORMAL", "PNEUMONIA"])
    from core.ml import curves as curves_lib
    results = curves_lib.evaluate_predictions(probabilities, labels, ["NORMAL", "PNEUMONIA"])
    matrix = results["metrics"]["confusion_matrix"]
    built = [charts.confusion_matrix_chart(matrix, ["NORMAL", "PNEUMONIA"]),
             charts.roc_chart({"run": results["roc"]}), charts.pr_chart(results["pr"]),
             charts.f1_threshold_chart(results["f1_threshold"], 0.3),
             charts.calibration_chart(results["calibration"]),
             charts.per_class_chart(results["metrics"]["per_class"])]
    for chart in built:
        spec = _spec(chart)
        assert spec.get("title"), spec
        assert len(_titles(spec)) >= 2
    roc = _spec(built[1])
    assert any("AUC" in str(row.get("curve")) for data in roc["datasets"].values() for row in data)


def test_parallel_coordinates_chart_colours_by_metric():
    frame = compare.parallel_coordinates_frame(
        {"a": TrainConfig(batch_size=16).to_dict(), "b": TrainConfig(batch_size=64).to_dict()},
        {"a": 0.7, "b": 0.9})
    spec = _spec(charts.parallel_coordinates_chart(frame, "test_accuracy"))
    assert spec["title"] == "Settings against test_accuracy"
    assert spec["layer"][0]["encoding"]["color"]["field"] == "metric_value"


# ----------------------------------------------------------------------------- forms

def test_build_config_combines_dataset_settings_and_form_values():
    settings = {**forms.default_dataset_settings(), "image_size": 32, "task": "subtype"}
    config = forms.build_config(settings, {"arch": "seed_cnn", "epochs": 2, "dropout": 0.4,
                                           "arch_params": {"activation": "elu"},
                                           "augmentation": {"zoom": 0.1}})
    assert (config.image_size, config.task, config.epochs, config.dropout) == (32, "subtype", 2, 0.4)
    assert config.augmentation.zoom == 0.1 and config.arch_params == {"activation": "elu"}


def test_the_dataset_pages_split_seed_splits_the_run_and_the_train_pages_seed_trains_it():
    config = forms.build_config({**forms.default_dataset_settings(), "split_seed": 7}, {"arch": "seed_cnn", "seed": 3})
    assert (config.seed, config.split_seed, config.effective_split_seed) == (3, 7, 7)
    # A run saved without a split seed was split by its training seed: re-using its data keeps that split.
    assert forms.dataset_settings_from_config(TrainConfig(seed=5).to_dict())["split_seed"] == 5
    assert forms.dataset_settings_from_config(TrainConfig(seed=5, split_seed=9).to_dict())["split_seed"] == 9
    # Settings saved by an older version (a "seed" instead of a "split_seed") become a full, current set.
    completed = forms.complete_dataset_settings({"seed": 5, "image_size": 64})
    assert set(completed) == set(forms.DATASET_FIELDS) and completed["image_size"] == 64
    assert completed["split_seed"] == TrainConfig().seed


@pytest.mark.parametrize("values, message", [
    ({"epochs": 0}, "epochs"),
    ({"arch_params": {"activation": "nope"}}, "activation"),
    ({"color": "red"}, "unknown TrainConfig settings"),
])
def test_build_config_rejects_bad_values_with_a_message(values, message):
    with pytest.raises(ValueError, match=message):
        forms.build_config(forms.default_dataset_settings(), {"arch": "seed_cnn", **values})


def test_dataset_settings_round_trip_and_label():
    settings = forms.dataset_settings_from_config(TrainConfig(image_size=64, split="own").to_dict())
    assert settings["image_size"] == 64 and set(settings) == set(forms.DATASET_FIELDS)
    assert "64 px" in forms.dataset_label(settings) and "own split" in forms.dataset_label(settings)
    assert forms.default_task("npz") == "classes" and forms.default_task("zip") == "binary"


def test_save_upload_is_content_addressed(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(tmp_path))
    first = forms.save_upload(b"PK-some-bytes", "xrays.zip")
    again = forms.save_upload(b"PK-some-bytes", "renamed.ZIP")
    assert first == again and first.parent == tmp_path and first.read_bytes() == b"PK-some-bytes"
    assert forms.save_upload(b"other", "d.npz").suffix == ".npz"
    with pytest.raises(DataError, match="upload a .zip"):
        forms.save_upload(b"x", "notes.txt")
    with pytest.raises(DataError, match="empty"):
        forms.save_upload(b"", "empty.zip")


# ----------------------------------------------------------------------------- review

def test_misclassified_lists_confident_mistakes_first():
    predictions = {"probabilities": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
                   "labels": np.array([1, 1, 1, 0]), "class_names": ["NORMAL", "PNEUMONIA"],
                   "files": np.array(["a", "b", "c", "d"]), "patient_ids": np.array(["p1", "p2", "p3", "p4"])}
    wrong = review.misclassified(predictions)
    assert [w["file"] for w in wrong] == ["a", "d", "c"]
    assert wrong[0] == {"file": "a", "patient_id": "p1", "true": "PNEUMONIA", "predicted": "NORMAL",
                        "confidence": pytest.approx(0.9)}
    # A low threshold calls 'c' (score 0.4) pneumonia: it is no longer a mistake.
    assert [w["file"] for w in review.misclassified(predictions, threshold=0.3)] == ["a", "d"]
    assert len(review.misclassified(predictions, limit=1)) == 1


def test_images_by_file_and_displayable():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    found = review.images_by_file(np.array(["x.jpeg", "y.jpeg"]), images, ["y.jpeg", "missing"])
    assert list(found) == ["y.jpeg"] and np.array_equal(found["y.jpeg"], images[1])
    assert displayable(found["y.jpeg"]).shape == (4, 4)
    assert displayable(np.zeros((4, 4, 3), np.uint8)).shape == (4, 4, 3)


def test_misclassified_result_is_json_friendly():
    probabilities, labels, patients, files = fake_predictions(20, ["normal", "bacterial", "viral"], skill=0.0)
    wrong = review.misclassified({"probabilities": probabilities, "labels": labels, "patient_ids": patients,
                                  "files": files, "class_names": ["normal", "bacterial", "viral"]})
    assert wrong and json.loads(json.dumps(wrong)) == wrong


def test_display_height_leaves_room_for_titles_and_axes():
    matrix = charts.confusion_matrix_chart([[5, 1], [2, 7]], ["NORMAL", "PNEUMONIA"])
    assert charts.display_height(matrix) > matrix.height >= 160
    assert charts.display_height(charts.history_chart([], "loss")) > charts.CHART_HEIGHT
