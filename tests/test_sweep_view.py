"""The Sweeps page's logic without Streamlit: typed values, the sweep spec, the results table,
the chart spec and the time estimate; and the resources a sweep's runs used, on the page too."""
import json

import pytest

from core.present import sweeps as sweep_view
from core.settings.config import TrainConfig
from core.settings.recipes import recipe
from core.files import write_json
from core.store.runs import RunStore
from core.store.sweeps import (
    RESULT_METRICS,
    Sweep,
    SweepAxis,
    sweep_results,
    sweeps_dir,
)

# ----------------------------------------------------------------------------- typed values

def test_values_are_parsed_as_numbers_bools_none_and_words():
    assert sweep_view.parse_values("0.2, 0.4,0.6") == [0.2, 0.4, 0.6]
    assert sweep_view.parse_values("32, 64") == [32, 64]
    assert sweep_view.parse_values("1e-3, 3e-4") == [0.001, 0.0003]
    assert sweep_view.parse_values("relu, leaky_relu, 'tanh'") == ["relu", "leaky_relu", "tanh"]
    assert sweep_view.parse_values("true, False") == [True, False]
    assert sweep_view.parse_values("none, 0.3") == [None, 0.3]
    assert sweep_view.parse_values("[[16, 32], [32, 64]]") == [[16, 32], [32, 64]]


@pytest.mark.parametrize("text, message", [("", "at least one value"), ("0.2,,0.4", "empty value"),
                                           ("1, 1.0", "listed twice"), ("[1, 2", "do not parse"),
                                           ("[]", "empty")])
def test_bad_value_lists_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        sweep_view.parse_values(text)


def test_values_take_the_type_of_the_base_setting():
    base = TrainConfig().to_dict()
    assert sweep_view.coerce_values(base, "image_size", [64.0, 96]) == [64, 96]
    assert sweep_view.coerce_values(base, "learning_rate", [1, 0.5]) == [1.0, 0.5]
    assert sweep_view.coerce_values(base, "augmentation.rotation_degrees", [0, 5]) == [0.0, 5.0]
    assert sweep_view.coerce_values(base, "arch_params.activation", ["relu"]) == ["relu"]
    with pytest.raises(ValueError, match="batch_size must be a whole number between 1 and 4,096; got 0.5"):
        sweep_view.coerce_values(base, "batch_size", [16, 0.5])


def test_sweep_spec_and_run_count():
    axes = [("dropout", [0.2, 0.4]), ("optimizer", ["adam", "sgd", "rmsprop"])]
    seeds = sweep_view.sweep_spec(" study ", {"epochs": 1}, axes, "seeds", 3)
    assert seeds["name"] == "study" and (seeds["repeats"], seeds["cv_folds"]) == (3, 0)
    assert seeds["axes"][1] == {"setting": "optimizer", "values": ["adam", "sgd", "rmsprop"]}
    folds = sweep_view.sweep_spec("", {}, axes, "cv", 5)
    assert (folds["repeats"], folds["cv_folds"]) == (1, 5)
    assert sweep_view.run_count(axes, 3) == 18
    assert len(Sweep(TrainConfig(), [SweepAxis(*a) for a in axes], repeats=3).configs()) == 18  # as core expands


def test_bases_drop_run_identity_and_take_the_chosen_dataset():
    run_config = TrainConfig(name="old run", sweep_id="sweep-1", cv_folds=3, cv_fold=2, dropout=0.3).to_dict()
    base = sweep_view.base_from_run(run_config)
    assert (base["name"], base["sweep_id"], base["cv_folds"], base["cv_fold"]) == ("", "", 0, 0)
    assert base["dropout"] == 0.3
    on_folder = sweep_view.base_with_dataset(recipe("binary"), {"data_source": "folder", "data_path": "/x",
                                                                "image_size": 64, "not_a_field": 1})
    assert (on_folder["arch"], on_folder["data_source"], on_folder["image_size"]) == ("deep_bn_cnn", "folder", 64)


# ----------------------------------------------------------------------------- results

def result_row(point: dict, means: dict, std: float = 0.01, n: int = 3, active: int = 0) -> dict:
    """A row as core.store.sweeps.sweep_results returns it."""
    row = {**point, "runs": 3, "done": n, "active": active, "run_ids": ["a", "b", "c"]}
    for metric in RESULT_METRICS:
        mean = means.get(metric)
        row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_n"] = mean, (std if mean else None), \
            (n if mean else 0)
    return row


GRID = [{"setting": "dropout", "values": [0.2, 0.4]},
        {"setting": "arch_params.activation", "values": ["relu", "tanh", "sigmoid"]}]


def grid_rows():
    rows = []
    for d in GRID[0]["values"]:
        for i, a in enumerate(GRID[1]["values"]):
            done = not (d == 0.4 and a == "sigmoid")  # one point still training
            rows.append(result_row({"dropout": d, "arch_params.activation": a},
                                   {"test_accuracy": 0.7 + d / 10 + i / 100} if done else {},
                                   n=3 if done else 0, active=0 if done else 3))
    return rows


def test_results_frame_has_one_row_per_point_and_every_metric():
    frame = sweep_view.results_frame(grid_rows(), ["dropout", "arch_params.activation"])
    assert len(frame) == 6
    assert list(frame.columns[:6]) == ["dropout", "arch_params.activation", "runs", "done", "active", "stopped"]
    for metric in RESULT_METRICS:
        assert {f"{metric}_mean", f"{metric}_std", f"{metric}_n"} <= set(frame.columns)
    assert "run_ids" not in frame
    assert sweep_view.progress_counts(frame) == {"runs": 18, "done": 15, "active": 3, "stopped": 0}
    shown = sweep_view.display_frame(frame, ["dropout", "arch_params.activation"])
    assert shown.loc[0, "Test accuracy"] == "0.720 ± 0.010"  # n is the 3 runs done: not repeated
    assert shown.loc[5, "Test accuracy"] == "—" and shown.loc[5, "runs done"] == "0/3"
    assert list(shown["dropout"][:2]) == ["0.2", "0.2"]


def test_results_frame_from_a_stored_sweep(store, make_run):
    """sweep_results on runs in the store (two points, two seeds each) -> one row per point."""
    axes = [{"setting": "dropout", "values": [0.2, 0.4]}]
    runs = [make_run("done", seed=seed, dropout=d, sweep_id="sweep-t") for d in (0.2, 0.4) for seed in (1, 2)]
    write_json(sweeps_dir(store) / "sweep-t.json", {
        "id": "sweep-t", "created": 0, "name": "t", "base": {}, "axes": axes, "repeats": 2, "cv_folds": 0,
        "runs": [{"run_id": r.id, "point": {"dropout": r.config()["dropout"]}, "seed": r.config()["seed"],
                  "fold": 0} for r in runs]})
    frame = sweep_view.results_frame(sweep_results(store, "sweep-t"), ["dropout"])
    assert list(frame["dropout"]) == [0.2, 0.4] and list(frame["test_accuracy_n"]) == [2, 2]
    assert frame["test_accuracy_std"].notna().all()
    spec = sweep_view.sweep_chart(frame, axes, "best_val_loss").to_dict()
    assert len(chart_data(spec)) == 2


def chart_data(spec: dict) -> list[dict]:
    return next(iter(spec["datasets"].values()))


# ----------------------------------------------------------------------------- chart

def marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]


def encoding(spec: dict, mark: str) -> dict:
    return spec["layer"][marks(spec).index(mark)]["encoding"]


def test_chart_has_error_bars_x_first_setting_and_colour_second():
    frame = sweep_view.results_frame(grid_rows(), ["dropout", "arch_params.activation"])
    spec = sweep_view.sweep_chart(frame, GRID, "test_accuracy").to_dict()
    assert set(marks(spec)) == {"errorbar", "line"}
    bars = encoding(spec, "errorbar")
    assert (bars["y"]["field"], bars["y2"]["field"]) == ("lower", "upper")
    assert spec["title"] == "Test accuracy against dropout, one line per arch_params.activation"
    for mark in ("errorbar", "line"):
        x, color = encoding(spec, mark)["x"], encoding(spec, mark)["color"]
        assert (x["field"], x["type"], x["title"]) == ("dropout", "quantitative", "dropout")
        # A dotted setting is renamed for Vega-Lite (a dot would mean a nested field), titled as typed.
        assert (color["field"], color["title"]) == ("arch_params_activation", "arch_params.activation")
        assert color["sort"] == ["relu", "tanh", "sigmoid"]
    assert encoding(spec, "line")["y"]["field"] == "mean"
    data = chart_data(spec)
    assert len(data) == 5  # the unfinished point is left out
    first = data[0]
    assert first["lower"] == pytest.approx(first["mean"] - first["std"])


def test_chart_uses_a_categorical_axis_for_words_and_a_log_axis_for_rates():
    axes = [{"setting": "arch_params.activation", "values": ["relu", "elu"]}]
    rows = [result_row({"arch_params.activation": a}, {"val_accuracy": 0.8}) for a in ("relu", "elu")]
    spec = sweep_view.sweep_chart(sweep_view.results_frame(rows, ["arch_params.activation"]), axes,
                                  "val_accuracy").to_dict()
    line = encoding(spec, "line")
    assert line["x"]["type"] == "nominal" and line["x"]["sort"] == ["relu", "elu"]
    assert "color" not in line
    assert line["y"]["title"] == "Validation accuracy (mean ± 1 std)"
    lr = [{"setting": "learning_rate", "values": [0.0003, 0.001, 0.003]}]
    rows = [result_row({"learning_rate": v}, {"test_auc": 0.9}) for v in lr[0]["values"]]
    spec = sweep_view.sweep_chart(sweep_view.results_frame(rows, ["learning_rate"]), lr, "test_auc").to_dict()
    assert encoding(spec, "line")["x"]["scale"]["type"] == "log"


# ----------------------------------------------------------------------------- import summary

def test_import_summary_says_what_was_added_and_what_was_already_here():
    from core.store.portable import ImportResult
    assert sweep_view.import_summary(ImportResult(["a", "b"], [], "sweep-1")) == "Imported 2 runs and sweep `sweep-1`."
    assert sweep_view.import_summary(ImportResult([], ["a", "b", "c"], "sweep-1", True)) == \
        "Nothing new imported; 3 runs already here, skipped; sweep `sweep-1` already here, skipped."
    assert sweep_view.import_summary(ImportResult(["x"], ["a"])) == "Imported 1 run; 1 run already here, skipped."


def test_sweep_label_names_the_sweep_and_counts_its_runs():
    record = {"id": "sweep-1", "created": 0, "name": "", "axes": [{"setting": "dropout"}, {"setting": "optimizer"}],
              "runs": [{}, {}]}
    assert sweep_view.sweep_label(record).startswith("dropout × optimizer · 2 runs · ")


# ----------------------------------------------------------------------------- resources

def used(run, peak_mb: float, images_per_sec: float, wall_s: float):
    """What a real run records: its process's peak memory in status.json (from the worker), speed
    and wall time in summary.json (from the training process)."""
    run.write_summary({**run.summary(), "resources": {"images_per_sec": images_per_sec, "wall_s": wall_s,
                                                      "device": "CPU (2 cores)", "peak_memory_mb": 1.0}})
    run.update_status(resources={"peak_memory_mb": peak_mb})
    return run


def batch_size_sweep(store, make_run, with_resources: bool = True) -> list[dict]:
    """A stored sweep over batch size, two seeds per point; returns its axes."""
    axes = [{"setting": "batch_size", "values": [16, 64]}]
    runs = [make_run("done", seed=seed, batch_size=b, sweep_id="sweep-b") for b in (16, 64) for seed in (1, 2)]
    if with_resources:
        for run, (peak, speed) in zip(runs, ((500, 900), (520, 1100), (900, 2000), (940, 2200))):
            used(run, peak, speed, wall_s=speed / 100)
    write_json(sweeps_dir(store) / "sweep-b.json", {
        "id": "sweep-b", "created": 0, "name": "batch", "base": {}, "axes": axes, "repeats": 2, "cv_folds": 0,
        "runs": [{"run_id": r.id, "point": {"batch_size": r.config()["batch_size"]}, "seed": r.config()["seed"],
                  "fold": 0} for r in runs]})
    return axes


def test_a_sweep_over_batch_size_reads_memory_and_speed(store, make_run):
    axes = batch_size_sweep(store, make_run)
    frame = sweep_view.results_frame(sweep_results(store, "sweep-b"), ["batch_size"])
    # The worker's measure of the whole process (status.json) wins over the process's own.
    assert list(frame["peak_memory_mb_mean"]) == [510.0, 920.0]
    assert list(frame["peak_memory_mb_std"]) == pytest.approx([14.142, 28.284], abs=1e-3)
    assert list(frame["images_per_sec_mean"]) == [1000.0, 2100.0] and list(frame["wall_s_n"]) == [2, 2]
    assert list(frame["test_accuracy_n"]) == [2, 2]  # the scores are still there
    shown = sweep_view.display_frame(frame, ["batch_size"])
    assert list(shown["Peak memory (MB)"]) == ["510 ± 14", "920 ± 28"]
    assert list(shown["Images / s"]) == ["1000 ± 141", "2100 ± 141"]
    spec = sweep_view.sweep_chart(frame, axes, "peak_memory_mb").to_dict()
    assert spec["title"] == "Peak memory (MB) against batch_size"
    assert encoding(spec, "line")["y"]["title"] == "Peak memory (MB) (mean ± 1 std)"
    assert [row["mean"] for row in chart_data(spec)] == [510.0, 920.0]


def test_runs_without_resources_leave_those_columns_out(store, make_run):
    batch_size_sweep(store, make_run, with_resources=False)
    frame = sweep_view.results_frame(sweep_results(store, "sweep-b"), ["batch_size"])
    assert frame["peak_memory_mb_mean"].isna().all() and list(frame["peak_memory_mb_n"]) == [0, 0]
    shown = sweep_view.display_frame(frame, ["batch_size"])
    assert "Peak memory (MB)" not in shown and "Test accuracy" in shown


def test_the_sweeps_page_charts_peak_memory(app_env, store, make_run, monkeypatch):
    from tests.apptest_support import assert_clean, open_page
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")  # no idle training process for a page that trains nothing
    batch_size_sweep(store, make_run)
    at = open_page("pages/sweeps.py")
    assert "Peak memory (MB)" in at.selectbox(key="sweep_metric").options
    at.selectbox(key="sweep_metric").set_value("peak_memory_mb").run()
    assert_clean(at)
    [chart] = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["title"] == "Peak memory (MB) against batch_size"
    table = next(d.value for d in at.dataframe if "runs done" in d.value.columns)
    assert list(table["Peak memory (MB)"]) == ["510 ± 14", "920 ± 28"]


# ----------------------------------------------------------------------------- the sweep's runs

def mixed_sweep(store, make_run) -> dict:
    """A stored two-point sweep, two seeds each: one point done, one with a queued run, and a deleted run."""
    done = [make_run("done", seed=seed, dropout=0.2, sweep_id="sweep-m") for seed in (1, 2)]
    queued = store.create(TrainConfig(seed=1, dropout=0.4).to_dict(), name="queued")  # as JobManager.submit
    gone = make_run("done", seed=2, dropout=0.4)
    store.delete(gone.id)
    record = {"id": "sweep-m", "created": 0, "name": "mixed", "base": {}, "repeats": 2, "cv_folds": 0,
              "axes": [{"setting": "dropout", "values": [0.2, 0.4]}],
              "runs": [{"run_id": r.id, "point": {"dropout": d}, "seed": s, "fold": 0}
                       for r, d, s in zip([*done, queued, gone], (0.2, 0.2, 0.4, 0.4), (1, 2, 1, 2))]}
    write_json(sweeps_dir(store) / "sweep-m.json", record)
    return record


def test_the_state_of_a_sweeps_runs(store, make_run):
    record = mixed_sweep(store, make_run)
    assert sweep_view.run_states(store, record) == ["done", "done", "queued", "deleted"]
    assert sweep_view.is_active(store, record)
    share, text = sweep_view.launch_progress(record, sweep_view.run_states(store, record))
    assert share == 0.75 and text == "Sweep mixed: 3 of 4 runs ended, 1 queued or running"
    assert sweep_view.launch_progress(record, ["done", "failed"]) == \
        (None, "Sweep mixed finished: 1 of 2 runs done. Results below.")
    assert sweep_view.sweep_caption(record) == "`sweep-m` · dropout (0.2, 0.4) · 2 seed(s) per point"
    assert sweep_view.sweep_caption({**record, "cv_folds": 5}).endswith("· 5-fold cross-validation")


def test_stopping_a_sweep_stops_only_its_active_runs(store, make_run):
    record = mixed_sweep(store, make_run)
    queued = record["runs"][2]["run_id"]
    stopped = sweep_view.stop_sweep(store, record, lambda run_id: store.request_stop(store.get(run_id), "test"))
    assert stopped == [queued] and store.get(queued).state() == "cancelled"
    assert not sweep_view.is_active(store, record)
    assert sweep_view.stop_sweep(store, record, lambda run_id: store.request_stop(store.get(run_id), "test")) == []


def test_the_sweeps_runs_offered_for_comparison(store, make_run):
    record = mixed_sweep(store, make_run)
    members = sweep_view.member_table(store, record)
    assert list(members["state"]) == ["done", "done", "queued", "deleted"]
    assert list(members["point"]) == ["dropout=0.2"] * 2 + ["dropout=0.4"] * 2
    assert list(members["repeat"]) == ["seed 1", "seed 2", "seed 1", "seed 2"]
    ids = list(members["run_id"])
    labels = sweep_view.compare_labels(members)
    assert labels == {ids[0]: "dropout=0.2 · seed 1", ids[1]: "dropout=0.2 · seed 2", ids[2]: "dropout=0.4 · seed 1"}
    offer = sweep_view.compare_offer(members, limit=6)
    assert offer == [ids[0]]  # the first finished run of each point
    # A first visit takes the offer; while the user keeps it, a new offer replaces it; their own pick stays.
    assert sweep_view.compare_pick(None, None, offer, labels) == ([ids[0]], [ids[0]])
    assert sweep_view.compare_pick([ids[0]], [ids[0]], [ids[0], ids[2]], labels) == ([ids[0], ids[2]],
                                                                                   [ids[0], ids[2]])
    assert sweep_view.compare_pick([ids[1], ids[3]], [ids[0]], [ids[0]], labels) == ([ids[1]], [ids[0]])


def test_an_uploaded_zip_is_imported_or_refused(store, make_run, tmp_path):
    from core.store.portable import ImportRefused
    record = mixed_sweep(store, make_run)
    other = RunStore(tmp_path / "other")
    result = sweep_view.import_zip_bytes(other, sweep_view.sweep_zip_bytes(store, record["id"]))
    assert result.sweep_id == "sweep-m" and len(result.imported) == 3  # the deleted run is not in the zip
    with pytest.raises(ImportRefused, match="not a zip file"):
        sweep_view.import_zip_bytes(other, b"not a zip at all")


def test_a_third_setting_draws_one_panel_per_value_readable_in_a_report():
    from core.present import study_report
    axes = GRID + [{"setting": "epochs", "values": [5, 10, 20, 40]}]
    rows = [result_row({"dropout": d, "arch_params.activation": a, "epochs": e}, {"test_accuracy": 0.7 + e / 1000})
            for d in GRID[0]["values"] for a in GRID[1]["values"] for e in axes[2]["values"]]
    frame = sweep_view.results_frame(rows, [axis["setting"] for axis in axes])
    spec = sweep_view.sweep_chart(frame, axes, "test_accuracy").to_dict()
    assert spec["facet"] == {"field": "epochs", "type": "nominal", "title": "epochs", "sort": ["5", "10", "20", "40"],
                             "header": {"labelFontSize": 12, "labelFontWeight": "bold", "titleFontSize": 12}}
    assert spec["columns"] == 3  # four panels: three a row, the fourth below
    assert spec["title"].endswith("one line per arch_params.activation, one panel per epochs")
    assert set(marks(spec["spec"])) == {"errorbar", "line"}
    assert "scale" not in spec.get("resolve", {})  # one y scale: panels compare at a glance
    assert {row["epochs"] for row in chart_data(spec)} == {"5", "10", "20", "40"}
    drawn = study_report.report_spec(sweep_view.sweep_chart(frame, axes, "test_accuracy"))
    assert "width" not in drawn and drawn["spec"]["width"] == sweep_view.PANEL_WIDTH
    assert study_report.chart_svg(sweep_view.sweep_chart(frame, axes, "test_accuracy")).startswith("<svg")
