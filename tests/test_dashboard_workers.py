"""A running dashboard trains the queue from the moment it starts, with no browser tab ever opened.

`streamlit run app.py` serves app.py's st.App, whose lifespan starts the job manager
(core/workers/service.py); before, the manager was created by the first page session, so runs
submitted from the command line stayed queued until someone opened the page.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.store.runs import RunStore
from tests.browser_support import serve_dashboard_process
from tests.conftest import PROJECT, wait_until

pytestmark = pytest.mark.slow


def submit(runs_dir, folder, name: str) -> str:
    """`python -m core train --submit`, as a user queues a run from a terminal; returns the run id."""
    done = subprocess.run(
        [sys.executable, "-m", "core", "train", "--submit", "--name", name, "--arch", "seed_cnn",
         "--data-source", "folder", "--data-path", str(folder), "--image-size", "32", "--batch-size", "8",
         "--epochs", "1", "--runs-dir", str(runs_dir)],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1].split()[-1]


def test_runs_submitted_from_the_cli_train_without_any_browser(tmp_path, runs_dir, chest_folder):
    store = RunStore(runs_dir)
    with serve_dashboard_process(tmp_path / "dashboard.log", {"CXR_RUNS_DIR": str(runs_dir)}) as (_, server):
        ids = [submit(runs_dir, chest_folder, name) for name in ("first", "second")]
        wait_until(lambda: all(store.get(run_id).state() == "done" for run_id in ids), 240,
                   "both runs to be trained by the dashboard")
        # Claimed by the dashboard's own job manager (not by some other worker).
        assert [store.get(run_id).status()["worker"]["pid"] for run_id in ids] == [server.pid, server.pid]
