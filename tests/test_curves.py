"""Training curves: per-epoch validation AUC and macro-F1, the first epoch batch by batch, smoothing
and log scale as TensorBoard has them, and runs from before any of it."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from core.ml import metrics as metrics_lib
from core.present import charts, train_view
from core.settings.config import TrainConfig
from core.store.runs import RunStore
from tests.browser_support import requires_chromium
from tests.conftest import tiny_folder_config

# ----------------------------------------------------------------------------- smoothing


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = [1.0, 0.0, 1.0]
    w = 0.5
    # TensorBoard: last = last * w + (1 - w) * v, shown as last / (1 - w ** steps)
    expected = [0.5 / 0.5, 0.25 / 0.75, 0.625 / 0.875]
    assert charts.smoothed(values, w) == pytest.approx(expected)
    assert charts.smoothed(values, w)[0] == 1.0  # debiased: the first point is not pulled toward 0


def test_smoothing_weight_zero_gives_the_raw_values_and_gaps_stay_gaps():
    values = [0.9, 0.4, 0.7, 0.1]
    assert charts.smoothed(values, 0.0) == pytest.approx(values)
    gapped = charts.smoothed([1.0, None, float("nan"), 3.0], 0.5)
    assert gapped[0] == 1.0 and gapped[1] is None and math.isnan(gapped[2])
    assert gapped[3] == pytest.approx((0.5 * 0.5 + 0.5 * 3.0) / 0.75)  # the gaps did not enter the average


def test_smoothing_outside_its_range_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="smoothing must be between 0 and 0.99"):
        charts.smoothed([1.0], 1.0)
    with pytest.raises(ValueError, match="smoothing must be between 0 and 0.99"):
        charts.smoothed([1.0], -0.1)


def test_a_smoothed_chart_draws_the_raw_curve_faint_behind_the_smoothed_one():
    history = [{"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e} for e in range(1, 6)]
    spec = charts.history_chart(history, "loss", smoothing=0.6).to_dict()
    raw, smooth = spec["layer"]
    assert raw["mark"]["opacity"] == charts.RAW_OPACITY and raw["encoding"]["y"]["field"] == "value"
    assert smooth["encoding"]["y"]["field"] == "smoothed"
    rows = next(iter(spec["datasets"].values()))
    train = [r for r in rows if r["split"] == "train"]
    assert [r["smoothed"] for r in train] == pytest.approx(charts.smoothed([1 / e for e in range(1, 6)], 0.6))
    assert "smoothed 0.60" in spec["title"]


# ----------------------------------------------------------------------------- log scale and the curves


def test_log_scale_gives_a_log_y_axis_and_leaves_out_values_it_cannot_show():
    history = [{"epoch": 1, "loss": 2.0, "val_loss": 0.0}, {"epoch": 2, "loss": 0.02, "val_loss": 0.5}]
    spec = charts.history_chart(history, "loss", log_scale=True).to_dict()
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    rows = next(iter(spec["datasets"].values()))
    assert sorted(r["value"] for r in rows) == [0.02, 0.5, 2.0]  # the 0 cannot sit on a log axis
    linear = charts.history_chart(history, "loss").to_dict()
    assert linear["encoding"]["y"]["scale"].get("type") is None


def test_the_learning_rate_curve_is_on_a_log_axis_and_val_curves_have_one_series():
    history = [{"epoch": e, "learning_rate": 1e-3 * 0.1 ** e, "val_auc": 0.8 + e / 100,
                "val_macro_f1": 0.7} for e in range(1, 4)]
    lr = charts.curve_chart("learning_rate", {"run": history}, {}).to_dict()
    assert lr["encoding"]["y"]["scale"]["type"] == "log" and lr["encoding"]["y"]["title"] == "Learning rate"
    auc = charts.history_chart(history, "val_auc").to_dict()
    assert auc["title"] == "Validation AUC"
    assert {r["split"] for r in next(iter(auc["datasets"].values()))} == {"val"}


def test_compare_curves_overlay_runs_and_smooth_each_series_on_its_own():
    histories = {"a": [{"epoch": e, "loss": 1.0, "val_loss": 2.0} for e in (1, 2)],
                 "b": [{"epoch": e, "loss": 3.0} for e in (1, 2)]}
    spec = charts.curve_chart("loss", histories, {}, smoothing=0.9).to_dict()
    rows = next(iter(spec["datasets"].values()))
    # Constant series stay constant when smoothed: no series leaks into another.
    assert {(r["run"], r["split"], round(r["smoothed"], 9)) for r in rows} == {
        ("a", "train", 1.0), ("a", "val", 2.0), ("b", "train", 3.0)}


def test_first_epoch_batches_chart_shows_each_batchs_loss_and_the_running_mean():
    batches = [{"batch": 1, "loss": 0.9, "running_loss": 0.9, "accuracy": 0.5, "learning_rate": 1e-3},
               {"batch": 2, "loss": 0.5, "running_loss": 0.7, "accuracy": 0.75, "learning_rate": 1e-3}]
    spec = charts.curve_chart(charts.FIRST_EPOCH_BATCHES, {"run": []}, {"run": batches, "old": []}).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert {(r["series"], r["batch"], r["value"]) for r in rows} == {
        ("batch loss", 1, 0.9), ("batch loss", 2, 0.5), ("running mean", 1, 0.9), ("running mean", 2, 0.7)}
    assert spec["encoding"]["x"]["title"] == "Batch of the first epoch"


def test_runs_from_before_have_only_the_curves_they_recorded_and_no_error():
    old = [{"epoch": 1, "loss": 0.7, "val_loss": 0.8, "accuracy": 0.5, "val_accuracy": 0.5, "learning_rate": 1e-3}]
    options = charts.available_curves([old], with_batches=False)
    assert options == ["loss", "accuracy", "learning_rate"]
    assert "Validation AUC" in train_view.missing_curves_note(options)
    assert "First-epoch loss per batch" in train_view.missing_curves_note(options)
    assert charts.history_frame(old, "val_auc").empty  # asked anyway: an empty chart, not an error
    charts.curve_chart("val_auc", {"old": old, "new": old}, {}).to_dict()
    new = [{**old[0], "val_auc": 0.9, "val_macro_f1": 0.8}]
    both = charts.available_curves([old, new], with_batches=True)
    assert both == ["loss", "accuracy", "val_auc", "val_macro_f1", "learning_rate", charts.FIRST_EPOCH_BATCHES]
    assert train_view.missing_curves_note(both) is None
    assert [both[train_view.default_curve(both, side)] for side in (0, 1)] == ["loss", "accuracy"]


# ----------------------------------------------------------------------------- recovering each batch's values


def test_each_batchs_value_is_recovered_from_running_means_weighted_by_batch_size():
    own, sizes = [0.9, 0.3, 0.6, 0.2], [4, 4, 4, 1]
    running = [sum(v * n for v, n in zip(own[:k + 1], sizes[:k + 1])) / sum(sizes[:k + 1]) for k in range(4)]
    assert charts_free_recovery(running, sizes) == pytest.approx(own)


def charts_free_recovery(running, sizes):
    from core.ml.callbacks import own_batch_values
    return own_batch_values(running, sizes)


def test_batch_sizes_end_with_the_short_batch():
    from core.ml.callbacks import batch_sizes
    assert batch_sizes(10, 4) == [4, 4, 2] and batch_sizes(8, 4) == [4, 4]


@pytest.mark.slow
def test_batches_json_holds_each_batchs_own_loss_and_accuracy_as_computed_directly(tmp_path):
    """Learning rate 0 keeps the weights fixed, so each batch's loss can be computed independently
    with the model; the JobCallback must recover exactly these from Keras' running means."""
    import keras

    from core.ml import callbacks, run_control, training
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=10)
    y = np.eye(3, dtype=np.float32)[labels]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    config = TrainConfig(learning_rate=0.0)
    training._compile(model, config, 0.0)
    run = RunStore(tmp_path).create(config.to_dict(), queued=False)
    scoring = callbacks.EpochScoring(train_examples=10, learning_rate=0.0)
    callback = callbacks._make_job_callback(run, run_control.RunControl(), steps_per_epoch=3, batch_size=4,
                                            total_epochs=1, monitor="loss", scoring=scoring)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    rows = run.first_epoch_batches()
    assert [r["batch"] for r in rows] == [1, 2, 3]
    for row, start in zip(rows, (0, 4, 8)):
        xb, yb = x[start:start + 4], y[start:start + 4]
        probabilities = np.asarray(model(xb, training=False))
        assert row["loss"] == pytest.approx(float(model.loss(yb, probabilities)), rel=1e-5)
        assert row["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels[start:start + 4]))
        assert row["learning_rate"] == 0.0
    assert rows[-1]["running_loss"] == pytest.approx(run.history()[0]["loss"])


def test_first_epoch_rows_leave_accuracy_out_under_class_weights_and_follow_the_schedule():
    from keras.optimizers import schedules

    from core.ml.callbacks import first_epoch_rows
    logged = {0: {"loss": 1.0, "accuracy": 0.5}, 1: {"loss": 0.8, "accuracy": 0.5}}
    schedule = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    rows = first_epoch_rows(logged, examples=6, batch_size=4, learning_rate=schedule, class_weighted=True)
    assert [r["accuracy"] for r in rows] == [None, None]
    assert [r["loss"] for r in rows] == pytest.approx([1.0, (0.8 * 6 - 4.0) / 2])
    assert [r["learning_rate"] for r in rows] == pytest.approx([0.1, 0.05])  # the rate applied at that step


# ----------------------------------------------------------------------------- per-epoch validation metrics


def test_the_tiny_runs_epoch_metrics_and_batches_agree_with_its_summary(tiny_run):
    """tiny_run trains 1 epoch: its epoch row's validation scores are the final model's, decided by
    argmax as every epoch's are (the summary decides at the threshold chosen after training)."""
    (row,) = tiny_run.history()
    summary, saved = tiny_run.summary(), tiny_run.predictions("val")
    by_argmax = metrics_lib.classification_metrics(saved["probabilities"], saved["labels"], summary["class_names"])
    assert row["val_auc"] == pytest.approx(summary["val"]["auc"])
    assert row["val_macro_f1"] == pytest.approx(by_argmax["macro_f1"])
    assert row["val_accuracy"] == pytest.approx(by_argmax["accuracy"])
    at_threshold = metrics_lib.classification_metrics(saved["probabilities"], saved["labels"], summary["class_names"],
                                                      summary["threshold"])
    assert summary["val"]["accuracy"] == pytest.approx(at_threshold["accuracy"])
    batches = tiny_run.first_epoch_batches()
    train_images = sum(tiny_run.summary()["split"]["counts"]["train"].values())
    assert len(batches) == math.ceil(train_images / tiny_run.config()["batch_size"])
    assert batches[-1]["running_loss"] == pytest.approx(row["loss"])
    assert all(b["loss"] > 0 and 0 <= b["accuracy"] <= 1 for b in batches)


@pytest.mark.slow
def test_every_epochs_validation_scores_are_classification_metrics_of_that_epochs_model(tmp_path, chest_folder):
    """restore_best keeps the best epoch's model: its row must hold that model's val metrics; with it
    off, the last row must hold the final model's."""
    from core.ml.training import execute_run
    store = RunStore(tmp_path)
    for restore_best in (False, True):
        config = tiny_folder_config(chest_folder, epochs=3, restore_best=restore_best, learning_rate=0.003)
        run = store.create(config.to_dict(), queued=False)
        execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
        history, summary = run.history(), run.summary()
        epoch = summary["best_epoch"] if restore_best else len(history)
        row = history[epoch - 1]
        saved = run.predictions("val")
        scores = metrics_lib.classification_metrics(saved["probabilities"], saved["labels"], summary["class_names"])
        assert row["val_auc"] == pytest.approx(scores["auc"]) and row["val_macro_f1"] == pytest.approx(scores["macro_f1"])
        assert row["val_loss"] == pytest.approx(scores["log_loss"], rel=1e-4)  # no label smoothing: the same NLL
        assert all("val_auc" in r and "val_macro_f1" in r for r in history)


# ----------------------------------------------------------------------------- in Chromium

CHART = '[data-testid="stVegaLiteChart"]'


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests.browser_support import serve_dashboard
    folder = tmp_path_factory.mktemp("curves")
    env = {"CXR_RUNS_DIR": str(folder / "runs"), "CXR_UPLOADS_DIR": str(folder / "uploads")}
    with serve_dashboard(folder / "streamlit.log", env) as url:
        yield {"url": url, "runs_dir": folder / "runs"}


@requires_chromium
@pytest.mark.slow
def test_the_train_pages_live_curves_offer_any_curve_smoothed_and_on_a_log_scale(app):
    from tests.browser_support import (
        app_tab,
        choose,
        go_to,
        launch_chromium,
        settle,
        snap,
        type_into,
    )
    from tests.test_journey import assert_no_error, set_slider
    with launch_chromium() as browser, app_tab(browser, app["url"]) as page:
        go_to(page, "Dataset", "Dataset")
        choose(page, "Image size (px)", "32")
        page.get_by_role("button", name=re.compile("Apply")).click()
        settle(page)
        go_to(page, "Train", "Train")
        type_into(page, "Epochs", "3")
        type_into(page, "Run name", "curves")
        page.get_by_role("button", name=re.compile("Launch")).click()
        page.get_by_text(re.compile(r"state: \*?\*?done|state: done")).first.wait_for(timeout=300_000)
        settle(page)
        assert [r.state() for r in RunStore(app["runs_dir"]).list()] == ["done"]
        choose(page, "Left chart", "Validation AUC")
        choose(page, "Right chart", "First-epoch loss per batch")
        assert set_slider(page, "Smoothing", 0.05) == pytest.approx(0.05)
        page.locator('[data-testid="stCheckbox"]').filter(has_text="Log scale").locator("label").click()
        settle(page)
        main = page.locator('[data-testid="stMain"]')
        assert page.locator(CHART).count() == 2
        text = main.inner_text()
        assert "Validation AUC" in text and "First-epoch loss per batch" in text and "smoothed 0.05" in text
        snap(page, "curves_train_live")
        assert_no_error(page)


# ----------------------------------------------------------------------------- Runs & Compare (AppTest)


def test_compare_curves_mix_an_old_run_and_a_new_one_with_every_control(app_env, make_run):
    from core.files import write_json
    from tests.apptest_support import assert_clean, open_page, texts
    make_run("done", name="old", seed=1, image_size=32)
    new = make_run("done", name="new", seed=2, image_size=32)
    rows = [{**row, "val_auc": 0.8 + row["epoch"] / 100, "val_macro_f1": 0.7} for row in new.history()]
    new.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_json(new.batches_path, [{"batch": b, "loss": 1 / b, "running_loss": 1 / b, "accuracy": 0.5,
                                   "learning_rate": 1e-3} for b in range(1, 6)])
    at = open_page("pages/runs.py")
    assert_clean(at)
    left, right = at.selectbox(key="runs_compare_curve_0"), at.selectbox(key="runs_compare_curve_1")
    assert left.value == "loss" and right.value == "accuracy"
    assert set(left.options) >= {charts.metric_title(name) for name in ("val_auc", charts.FIRST_EPOCH_BATCHES)}
    left.set_value("val_auc")
    right.set_value(charts.FIRST_EPOCH_BATCHES)
    at.slider(key="runs_compare_curve_smoothing").set_value(0.6)
    at.toggle(key="runs_compare_curve_log").set_value(True)
    at.run()
    assert_clean(at)
    assert train_view.missing_curves_note(charts.available_curves([new.history()], True)) is None
    assert "Not recorded" not in texts(at)  # the new run has them all, so every curve is offered
