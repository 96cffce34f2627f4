"""Overfitting measured: every run's summary holds its train accuracy and loss at the evaluated
(best) epoch and the train-validation gap; the Runs table offers them as optional columns, sweeps
and studies as metrics."""
import pytest

from core.ml.training import fit_at_epoch
from core.present import compare, run_query
from core.present import studies as studies_view
from core.present import sweeps as sweep_view
from core.files import write_json
from core.store.sweeps import RESULT_METRICS, Sweep, sweep_results, sweeps_dir
from tests.conftest import write_run

HISTORY = [{"epoch": 1, "loss": 0.60, "accuracy": 0.70, "val_loss": 0.50, "val_accuracy": 0.75},
           {"epoch": 2, "loss": 0.30, "accuracy": 0.90, "val_loss": 0.45, "val_accuracy": 0.80},
           {"epoch": 3, "loss": 0.10, "accuracy": 0.98, "val_loss": 0.70, "val_accuracy": 0.78}]


def test_the_fit_is_read_at_the_evaluated_epoch_with_its_gaps():
    fit = fit_at_epoch(HISTORY, 2)
    assert (fit["epoch"], fit["train_accuracy"], fit["train_loss"]) == (2, 0.90, 0.30)
    assert fit["accuracy_gap"] == pytest.approx(0.10) and fit["loss_gap"] == pytest.approx(0.15)
    assert fit_at_epoch(HISTORY, 3)["accuracy_gap"] == pytest.approx(0.20)  # trained on: it overfits more
    assert fit_at_epoch(HISTORY, None) == {} and fit_at_epoch(HISTORY[:1] + [{"epoch": 2}], 2)["accuracy_gap"] is None


def test_a_trained_run_stores_its_fit_at_the_best_epoch_in_its_summary(tiny_run):
    summary, history = tiny_run.summary(), tiny_run.history()
    fit = summary["overfitting"]
    best = next(row for row in history if row["epoch"] == summary["best_epoch"])
    assert fit["epoch"] == summary["best_epoch"]
    assert (fit["train_accuracy"], fit["train_loss"]) == (best["accuracy"], best["loss"])
    assert fit["accuracy_gap"] == pytest.approx(best["accuracy"] - best["val_accuracy"])
    described = tiny_run.describe()
    assert (described["train_accuracy"], described["accuracy_gap"]) == (fit["train_accuracy"], fit["accuracy_gap"])


def overfit_run(store, gap: float, **config):
    run = write_run(store, **config)
    summary = run.summary()
    summary["overfitting"] = {"epoch": 2, "train_accuracy": 0.8 + gap, "train_loss": 0.2, "val_accuracy": 0.8,
                              "val_loss": 0.4, "accuracy_gap": gap, "loss_gap": 0.2}
    write_json(run.summary_path, summary)
    return run


def test_the_runs_table_has_the_fit_as_optional_columns(store):
    run = overfit_run(store, 0.12)
    table = compare.runs_table([compare.run_row(run.describe(), run.config())])
    assert table.loc[0, "accuracy_gap"] == 0.12 and table.loc[0, "train_accuracy"] == pytest.approx(0.92)
    assert set(compare.OPTIONAL_COLUMNS) <= set(compare.TABLE_COLUMNS)
    assert not set(compare.OPTIONAL_COLUMNS) & set(compare.SHOWN_COLUMNS)  # offered by the column menu
    assert compare.RUN_COLUMNS["accuracy_gap"][0] == "train − val acc"
    assert run_query.query_runs(table, "accuracy_gap > 0.1")["run_id"].tolist() == [run.id]


def test_sweeps_and_studies_chart_the_gap(store):
    sweep = Sweep.from_dict({"base": {"epochs": 3}, "axes": [{"setting": "dropout", "values": [0.2, 0.6]}]})
    record = {"id": "sweep-20260101-000000", "created": 0, **sweep.to_dict(), "runs": [
        {"run_id": overfit_run(store, gap, dropout=dropout).id, "point": {"dropout": dropout}, "seed": 0, "fold": 0}
        for gap, dropout in ((0.15, 0.2), (0.05, 0.6))]}
    write_json(sweeps_dir(store) / f"{record['id']}.json", record)  # as submit_sweep records it
    rows = sweep_results(store, record["id"])
    assert [row["accuracy_gap_mean"] for row in rows] == [0.15, 0.05]
    assert "accuracy_gap" in RESULT_METRICS and "accuracy_gap" in studies_view.SCORE_METRICS
    assert "accuracy_gap" in studies_view.LOWER_IS_BETTER
    frame = sweep_view.results_frame(rows, ["dropout"])
    shown = sweep_view.display_frame(frame, ["dropout"])
    assert shown[sweep_view.METRIC_TITLES["accuracy_gap"]].tolist() == ["0.150 ± 0.000", "0.050 ± 0.000"]
    chart = sweep_view.sweep_chart(frame, sweep.to_dict()["axes"], "accuracy_gap").to_dict()
    assert chart["title"].startswith("Train − validation accuracy @ argmax (best epoch) against dropout")
