"""End to end in a real browser: start the dashboard, train two tiny models through the UI, watch
the live curves, compare the runs and open Evaluate, saving a screenshot of every page.

Screenshots go to test-artifacts/screenshots/ (env SCREENSHOT_DIR overrides; `make screenshots`
writes docs/screenshots/). Needs Debian's Chromium at /usr/bin/chromium (`.ci/run` installs it).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from core.runs import RunStore
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, requires_chromium, screenshot_dir, serve_dashboard

VIEWPORT = {"width": 1440, "height": 1000}
STEP_TIMEOUT_MS = 180_000   # one UI step (page load, model build, rerun) on a busy machine
TRAINING_TIMEOUT_S = 600    # two tiny runs take well under a minute on an idle 2-core machine
CHART = '[data-testid="stVegaLiteChart"]'

pytestmark = requires_chromium


@pytest.fixture
def dashboard(tmp_path):
    """The app served on a free port with its own runs folder and dataset cache; always stopped."""
    runs_dir, log = tmp_path / "runs", tmp_path / "streamlit.log"
    env = {"CXR_RUNS_DIR": str(runs_dir), "CXR_CACHE_DIR": str(tmp_path / "cache"),
           "CXR_UPLOADS_DIR": str(tmp_path / "uploads")}
    with serve_dashboard(log, env) as url:
        yield {"url": url, "runs_dir": runs_dir, "log": log}


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(STEP_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


# ----------------------------------------------------------------------------- UI helpers

def settle(page) -> None:
    """Wait until Streamlit has finished its current run: no script running, nothing greyed out."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') !== 'running'"
        " && !document.querySelector('[data-stale=\"true\"]'); }", timeout=STEP_TIMEOUT_MS)
    page.wait_for_timeout(300)


def snap(page, name: str) -> None:
    """A screenshot of the whole page: the viewport is stretched to the page's height first,
    because Streamlit scrolls inside its main area rather than the document."""
    settle(page)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height + 160)})
    page.wait_for_timeout(800)  # charts re-layout to the new size
    settle(page)
    page.screenshot(path=str(screenshot_dir() / f"{name}.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)


def go_to(page, title: str, heading: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    page.get_by_role("heading", name=re.compile(heading)).first.wait_for()
    settle(page)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    box = page.get_by_role("combobox", name=label, exact=True)
    for _ in range(5):  # a live-view rerun can close the list before the click lands: retry
        box.click()
        box.fill(option)  # typing filters the list and opens it
        try:
            page.get_by_role("option", name=option, exact=True).first.click(timeout=5000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    settle(page)
    assert box.input_value() == option


def type_into(page, label: str, text: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(text)
    field.press("Enter")
    settle(page)


def wait_for_runs(runs_dir: Path, count: int, timeout: float = TRAINING_TIMEOUT_S) -> list:
    """All `count` runs of the store once they have finished; fails on a run that did not end 'done'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = RunStore(runs_dir).list() if runs_dir.exists() else []
        if len(runs) >= count and all(r.state() not in ("queued", "running") for r in runs):
            assert [r.state() for r in runs] == ["done"] * count, [r.status() for r in runs]
            return runs
        time.sleep(1)
    raise TimeoutError(f"runs still active after {timeout} s")


# ----------------------------------------------------------------------------- the journey

def test_train_compare_and_evaluate_in_a_browser(dashboard, browser_page):
    page = browser_page
    try:
        journey(page, dashboard["url"], dashboard["runs_dir"])
    except BaseException:
        page.screenshot(path=str(screenshot_dir() / "failure.png"), full_page=True)
        print(dashboard["log"].read_text()[-3000:])
        raise


def journey(page, url: str, runs_dir: Path) -> None:
    page.goto(url)
    page.get_by_role("heading", name=re.compile("CXR Lab")).wait_for()
    assert page.get_by_text("not for clinical use").first.is_visible()
    snap(page, "01_home_empty")

    go_to(page, "Dataset", "Dataset")
    choose(page, "Image size (px)", "32")
    page.get_by_text("Overlap check passed").wait_for()
    page.locator(CHART).first.wait_for()
    snap(page, "02_dataset")

    go_to(page, "Train", "Train")
    page.get_by_text("32 px grayscale").first.wait_for()  # the Dataset page's choice carried over
    page.locator('[data-testid="stMetricLabel"]').filter(has_text="Trainable parameters").wait_for()
    type_into(page, "Epochs", "3")
    type_into(page, "Run name", "relu-baseline")
    page.get_by_role("button", name=re.compile("Launch")).click()

    # Live: the loss curve is drawn after the first epoch, while the run still trains.
    stop = page.get_by_role("button", name=re.compile("Stop this run"))
    stop.wait_for()
    page.locator(CHART).first.wait_for(timeout=TRAINING_TIMEOUT_S * 1000)
    assert stop.is_visible(), "the curve should appear while the run is still training"

    # Queue a second run (another activation) while the first one trains.
    choose(page, "Activation", "elu")
    type_into(page, "Run name", "elu-variant")
    type_into(page, "Epochs", "1")
    page.get_by_role("button", name=re.compile("Launch")).click()
    settle(page)
    snap(page, "03_train_live")

    runs = wait_for_runs(runs_dir, 2)
    assert sorted(len(r.history()) for r in runs) == [1, 3]
    page.locator('[data-testid="stMetricLabel"]').filter(has_text="Test accuracy").first.wait_for()
    snap(page, "04_train_done")

    go_to(page, "Runs & Compare", "Runs & Compare")
    page.get_by_role("heading", name="Settings that differ").wait_for()
    page.get_by_role("heading", name="Settings against a metric").wait_for()
    wait_for_charts(page, 5)  # 2 curves, 2 confusion matrices, ROC, parallel coordinates
    snap(page, "05_runs_compare")

    go_to(page, "Evaluate", "Evaluate")
    page.get_by_role("heading", name="Misclassified images").wait_for()
    page.locator('[data-testid="stImage"]').first.wait_for()
    wait_for_charts(page, 6)
    snap(page, "06_evaluate")

    go_to(page, "Home", "CXR Lab")
    page.get_by_role("heading", name="Recent runs").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    snap(page, "07_home_with_runs")
    assert {r.config()["name"] for r in runs} == {"relu-baseline", "elu-variant"}


def wait_for_charts(page, count: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('{CHART}').length >= {count}")
