"""What the real-browser tests share: Debian's Chromium, and the dashboard served on a free port."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

requires_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium "
                                       "(apt-get install -y chromium chromium-driver)")


@contextmanager
def launch_chromium():
    """Debian's Chromium driven by Playwright (whose own browser download is not reachable here)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not start in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@contextmanager
def serve_dashboard(log: Path, env: dict):
    """`streamlit run app.py` on a free port with `env` added; yields its URL; always stopped."""
    with serve_dashboard_process(log, env) as (url, _):
        yield url


@contextmanager
def serve_dashboard_process(log: Path, env: dict):
    """Like serve_dashboard, yielding (URL, the server's Popen) for tests that kill it."""
    port = free_port()
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CXR_SPARE_PROCESS": "1", **env}, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield url, process
    finally:
        stop(process)


def screenshot_dir() -> Path:
    """test-artifacts/screenshots/, or $SCREENSHOT_DIR (`make screenshots`: docs/screenshots/)."""
    folder = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------- UI helpers

VIEWPORT = {"width": 1440, "height": 1000}
STEP_TIMEOUT_MS = 180_000   # one UI step (page load, model build, rerun) on a busy machine


@contextmanager
def app_tab(browser, url: str, **context_options):
    """A tab in a fresh browser context, opened at the app's root URL and settled (closed after)."""
    context = browser.new_context(viewport=VIEWPORT, **context_options)
    tab = context.new_page()
    tab.set_default_timeout(STEP_TIMEOUT_MS)
    tab.goto(url)
    tab.get_by_role("heading", name=re.compile("CXR Lab")).wait_for()
    settle(tab)
    try:
        yield tab
    finally:
        context.close()


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


def grid_rows(page, table) -> list[list[str]]:
    """The cells of an st.dataframe as its grid's accessibility table has them (the rows and columns
    in view); the first row is the header."""
    return table.locator("tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.querySelectorAll('th, td')).map(c => c.innerText.trim()))")


def header_row(page, table, timeout_ms: int = 15000) -> list[str]:
    """The grid's header cells, once it has drawn them: a grid that has just mounted has no rows yet."""
    for _ in range(timeout_ms // 200):
        rows = grid_rows(page, table)
        if rows and rows[0]:
            return rows[0]
        page.wait_for_timeout(200)
    raise AssertionError(f"the grid drew no rows within {timeout_ms / 1000:g} s")


def show_column(page, table, title: str) -> None:
    """Scroll the grid sideways until the column `title` is in view, as a person would."""
    for _ in range(30):
        if title in header_row(page, table):
            return
        table.locator(".dvn-scroller").evaluate("s => s.scrollBy(300, 0)")
        page.wait_for_timeout(200)
    raise AssertionError(f"no column {title!r} in {header_row(page, table)}")


def column(page, table, title: str) -> list[str]:
    for _ in range(3):  # a rerun can redraw the grid between finding the column and reading it
        show_column(page, table, title)
        rows = grid_rows(page, table)
        if rows and title in rows[0]:
            index = rows[0].index(title)
            return [row[index] for row in rows[1:] if len(row) > index]
    raise AssertionError(f"the grid kept redrawing before its column {title!r} could be read")


def column_once(page, table, title: str, shows, timeout_ms: int = 20000) -> list[str]:
    """The column `title` once `shows(values)` is true: after a click the page reruns and redraws the
    grid a moment later. Returns the last values read either way, for the test's own assertion."""
    values = column(page, table, title)
    for _ in range(timeout_ms // 250):
        if shows(values):
            break
        page.wait_for_timeout(250)
        values = column(page, table, title)
    return values
