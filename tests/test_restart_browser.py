"""A dashboard killed the way the OOM killer kills it, with runs queued and one training: after a
restart it trains the whole queue, and the cut-off run resumes from the Train page in Chromium."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from core.store.runs import RunStore
from tests.browser_support import (
    ROOT,
    STEP_TIMEOUT_MS,
    VIEWPORT,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard_process,
    settle,
    snap,
)
from tests.synthetic import make_chest_folder

pytestmark = [requires_chromium, pytest.mark.slow]
QUEUED = 3  # several runs, each a process of its own: enough to show none is lost or trained twice


def submit(store: RunStore, folder, name: str, epochs: int) -> str:
    """Queue a run the way a user at a terminal would: `python -m core train --submit`."""
    done = subprocess.run([sys.executable, "-m", "core", "train", "--runs-dir", str(store.root), "--submit",
                           "--arch", "seed_cnn", "--image-size", "32", "--batch-size", "8",
                           "--epochs", str(epochs), "--name", name, "--set", "early_stopping=false",
                           "--data-source", "folder", "--data-path", str(folder)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def browser():
    with launch_chromium() as chromium:
        yield chromium


def open_train_page(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("heading", name=re.compile("CXR Lab")).wait_for()
    settle(page)
    go_to(page, "Train", "Train")
    return page


def test_a_killed_dashboard_loses_nothing(tmp_path, browser):
    folder = make_chest_folder(tmp_path / "xrays", n_patients=8)
    store = RunStore(tmp_path / "runs")
    env = {"CXR_RUNS_DIR": str(store.root), "CXR_UPLOADS_DIR": str(tmp_path / "uploads"),
           "CXR_DATA_ROOT": str(tmp_path)}  # and the session's dataset cache, from os.environ
    with serve_dashboard_process(tmp_path / "first.log", env) as (url, server):
        page = open_train_page(browser, url)
        long_run = store.get(submit(store, folder, "long", epochs=500))  # the most allowed: it must outlast the restart
        wait_for(lambda: long_run.checkpoint_epoch() >= 2, 180, "the long run to checkpoint two epochs")
        queued = [submit(store, folder, f"q{i}", epochs=1) for i in range(QUEUED)]
        page.get_by_text(re.compile(rf"q{QUEUED - 1} — queued")).wait_for()
        snap(page, "20_queue_before_kill")
        page.close()
        server.send_signal(signal.SIGKILL)
        server.wait()
        wait_for(lambda: long_run.state() == "interrupted", 30, "the cut-off run to be marked interrupted")
        assert [store.get(r).state() for r in queued] == ["queued"] * QUEUED

    with serve_dashboard_process(tmp_path / "second.log", env) as (url, _):
        page = open_train_page(browser, url)
        wait_for(lambda: all(store.get(r).state() == "done" for r in queued), 600, "the queue to finish")
        page.get_by_role("button", name=re.compile("Resume 1 interrupted run")).click()
        settle(page)
        wait_for(lambda: long_run.state() in ("running", "done"), 60, "the resumed run to start")
        # the headline while it trains, or the result caption if it finished first (tiny epochs, busy CPU)
        page.get_by_text(re.compile(r"(state: running.*)?resumed at epoch \d+", re.IGNORECASE)).first.wait_for()
        snap(page, "21_resumed_after_restart")
        assert not page.locator('[data-testid="stException"]').all_inner_texts()
        if long_run.state() == "running":  # no need to train all 500 epochs
            page.get_by_role("button", name=re.compile("Stop this run")).click()
        wait_for(lambda: long_run.state() in ("cancelled", "done"), 120, "the resumed run to end")
    history = [row["epoch"] for row in long_run.history()]
    assert history == list(range(1, len(history) + 1)) and long_run.status()["resumed_at_epochs"]
    assert all(len(store.get(r).history()) == 1 for r in queued)
