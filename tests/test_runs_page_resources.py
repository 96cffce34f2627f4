"""The Runs page with the worker-process design, through app.py: what every run used (peak memory,
images/s, device) in the table, why a selected run failed and what its training process printed,
and resuming an interrupted run from its checkpoint."""
import pytest

from core.store.run_folder import ACTIVE_STATES
from tests.apptest_support import assert_clean, assert_no_exception, open_page, texts
from tests.test_train_page import interrupted_after_one_epoch, wait_for_an_empty_queue


@pytest.fixture(autouse=True)
def no_spare_process(monkeypatch):
    """The job manager the page starts keeps no idle training process waiting in these tests."""
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")


def used(run, peak_mb: float, images_per_sec: float, device: str):
    """Resources as a real run records them: speed and device in summary.json (the training process),
    the peak memory of the whole process in status.json (the worker that watched it)."""
    run.write_summary({**run.summary(), "resources": {"images_per_sec": images_per_sec, "wall_s": 31.5,
                                                      "device": device, "peak_memory_mb": 700.0}})
    run.update_status(resources={"peak_memory_mb": peak_mb})
    return run


def select(at, table, run_ids):
    """Select rows of the runs table (AppTest cannot click rows; the selection state is what a click
    would report)."""
    rows = [i for i, run_id in enumerate(table["run_id"]) if run_id in run_ids]
    at.session_state["runs_table"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_the_runs_table_shows_what_each_run_used(app_env, make_run):
    small = used(make_run("done", name="batch16", batch_size=16), 812.4, 1234.0, "CPU (2 cores)")
    big = used(make_run("done", name="batch128", batch_size=128), 2048.0, 3500.5, "1 GPU: NVIDIA H100")
    make_run("done", name="before")  # a run from before resources were measured
    at = open_page("pages/runs.py")
    assert_clean(at)
    table = at.dataframe(key="runs_table").value.set_index("name")
    columns = list(table.columns)
    assert columns.index("peak_memory_mb") == columns.index("duration_s") + 1
    assert table.loc["batch16", "peak_memory_mb"] == 812.4 and table.loc["batch128", "peak_memory_mb"] == 2048.0
    assert table.loc["batch16", "images_per_sec"] == 1234.0 and table.loc["batch128", "device"] == "1 GPU: NVIDIA H100"
    assert table.loc["before", ["peak_memory_mb", "images_per_sec", "device"]].isna().all()
    assert {small.id, big.id} <= set(table["run_id"])


def test_a_selected_failed_run_shows_why_and_what_its_process_printed(app_env, make_run):
    reason = "stopped at 1900 MB: above this run's memory cap of 1536 MB"
    failed = make_run("failed", name="capped")
    failed.update_status(error=reason, stderr_tail="Epoch 2/5\nallocating the batch")
    at = open_page("pages/runs.py")
    at = select(at, at.dataframe(key="runs_table").value, [failed.id])
    assert_no_exception(at)
    assert f"**capped** failed: {reason}" in [e.value for e in at.error]
    [printed] = [x for x in at.expander if x.label == "What the training process of capped printed"]
    assert "allocating the batch" in printed.code[0].value
    assert not [b for b in at.button if b.key == "runs_resume_button"]  # it never completed an epoch


@pytest.mark.slow
def test_an_interrupted_run_is_resumed_from_the_runs_page(app_env, store, make_run, tmp_path, monkeypatch):
    make_run("done", name="other")
    run = interrupted_after_one_epoch(store, tmp_path, monkeypatch)
    at = open_page("pages/runs.py")
    at = select(at, at.dataframe(key="runs_table").value, [run.id])
    assert "**resumable** interrupted: the process training this run stopped" in at.error[0].value
    resume = at.button(key="runs_resume_button")
    assert resume.label == "Resume 1 selected from their last completed epoch"
    resume.click().run()
    assert_clean(at)
    status = run.status()
    assert status["resume"] is True and status["state"] in ACTIVE_STATES and not status.get("error")
    assert "Queued 1 run(s) to resume" in texts(at)
    wait_for_an_empty_queue(store)
    assert run.state() == "done", run.status().get("error")
    assert run.status()["resumed_at_epochs"] == [1]
    at.run()
    row = at.dataframe(key="runs_table").value.set_index("run_id").loc[run.id]
    assert row["state"] == "done" and row["peak_memory_mb"] > 0 and row["images_per_sec"] > 0
