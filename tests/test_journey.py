"""A person's whole journey through the real app (issue 8), in Debian's Chromium.

The dashboard is served as `make run` serves it (`streamlit run app.py`); the journey enters at the
root URL and moves through the sidebar: choose a dataset -> train (reload mid-run, a second tab,
Stop) -> compare two runs -> evaluate (threshold, Grad-CAM) -> diagnose (a real X-ray, a photo and
broken files) -> a tiny sweep (export, import twice) -> a bookmarked link to every page on a freshly
started server. The steps share one server, one runs folder and one browser tab, in that order.

Any error box a step did not expect fails it. Every step saves a screenshot NN_name.png to
test-artifacts/screenshots/ (env SCREENSHOT_DIR overrides). Training stays tiny: 32 px, 1-3 epochs.
"""
from __future__ import annotations

import json
import re
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.store.runs import RunStore
from core.store.sweeps import list_sweeps
from tests import journey_files
from tests.browser_support import (
    STEP_TIMEOUT_MS,
    VIEWPORT,
    app_tab,
    choose,
    go_to,
    launch_chromium,
    requires_chromium,
    screenshot_dir,
    serve_dashboard,
    settle,
    snap,
    type_into,
)

TRAINING_TIMEOUT_S = 600  # a 3-epoch 32 px run takes seconds on an idle 2-core machine; it is rarely idle
CHART = '[data-testid="stVegaLiteChart"]'
UPLOAD = 'input[type="file"]'
NAVIGATION = {"Home": ("/", "CXR Lab"), "Dataset": ("/dataset", "Dataset"), "Train": ("/train", "Train"),
              "Sweeps": ("/sweeps", "Sweeps"), "Studies": ("/studies", "Studies"),
              "Runs & Compare": ("/runs", "Runs & Compare"),
              "Evaluate": ("/evaluate", "Evaluate"), "Diagnose": ("/diagnose", "Diagnose")}
BASELINE, VARIANT, STOPPED = "journey-baseline", "journey-elu", "journey-stopped"

pytestmark = [requires_chromium, pytest.mark.slow]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The dashboard on a free port with its own runs and uploads folders."""
    folder = tmp_path_factory.mktemp("journey")
    env = {"CXR_RUNS_DIR": str(folder / "runs"), "CXR_UPLOADS_DIR": str(folder / "uploads")}  # + the session's cache
    with serve_dashboard(folder / "streamlit.log", env) as url:
        yield {"url": url, "runs_dir": folder / "runs", "folder": folder, "env": env,
               "log": folder / "streamlit.log"}


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(browser, app):
    """The one tab the journey walks in, opened at the root URL."""
    with app_tab(browser, app["url"], accept_downloads=True) as tab:
        yield tab


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads-to-try")
    xray = journey_files.real_xray(folder)
    return {"xray": xray, "photo": journey_files.photo(folder), "empty": journey_files.empty_file(folder),
            "text": journey_files.text_named_jpg(folder), "truncated": journey_files.truncated_jpeg(folder, xray),
            "16bit": journey_files.png_16bit(folder, xray), "rgba": journey_files.png_rgba(folder, xray),
            "bomb": journey_files.decompression_bomb(folder)}


@contextmanager
def step(page, app, name: str):
    """On failure: a screenshot FAILED_<name>.png and the end of the server's log; on success the
    FAILED_ screenshot of an earlier attempt is removed, so the folder tells the latest story."""
    failed = screenshot_dir() / f"FAILED_{name}.png"
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(failed), full_page=True)
        finally:
            print(app["log"].read_text()[-4000:])
        raise
    failed.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- checks

def assert_no_error(page, expected: tuple[str, ...] = ()) -> None:
    """Fail on a Streamlit exception box, and on an error alert unless it names one of `expected`.
    Streamlit 1.67 marks an alert's kind as [data-testid=stAlertContentError|Warning|Info|Success]."""
    exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    unexpected = [text for text in errors if not any(wanted in text for wanted in expected)]
    assert not exceptions, f"exception on the page: {exceptions}"
    assert not unexpected, f"unexpected error message(s): {unexpected}"


def snap_clean(page, name: str) -> None:
    """The end of a step: no error on the page, then its screenshot."""
    assert_no_error(page)
    snap(page, name)


def sidebar_titles(page) -> list[str]:
    """The sidebar's page links as a person reads them (each link's text ends with its title,
    after the icon's ligature name)."""
    return [text.strip().splitlines()[-1].strip()
            for text in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]


def slider(page, label: str):
    """The slider's thumb: Streamlit 1.67 draws it around a hidden <input type=range>."""
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]')


def set_slider(page, label: str, target: float, step_size: float = 0.01) -> float:
    """Move a slider with the arrow keys, as a person can, one press (and one rerun) at a time;
    returns the value it shows at the end."""
    thumb = slider(page, label)
    for _ in range(round(abs(float(thumb.input_value()) - target) / step_size) + 3):
        value = float(thumb.input_value())
        if abs(value - target) < step_size / 2:
            break
        thumb.focus()
        thumb.press("ArrowRight" if value < target else "ArrowLeft")
        settle(page)
    return float(thumb.input_value())


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]').filter(has_text=re.compile(f"^{re.escape(label)}$")))
    return metric.locator('[data-testid="stMetricValue"]').first.inner_text().strip()


def run_named(runs_dir: Path, name: str):
    matches = [run for run in RunStore(runs_dir).list() if run.config().get("name") == name]
    assert len(matches) == 1, f"{len(matches)} runs named {name}"
    return matches[0]


def wait_until_ended(runs_dir: Path, name: str, timeout: float = TRAINING_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_named(runs_dir, name)
        if run.state() not in ("queued", "running"):
            return run
        time.sleep(1)
    raise TimeoutError(f"{name} still active after {timeout} s")


def live_line(page, name: str, state: str):
    """The live view's headline: '<name> · <id> · state: <state>'."""
    return page.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text=re.compile(rf"{re.escape(name)} · .* · state: {state}")).first


def launch(page, name: str, epochs: int) -> None:
    type_into(page, "Epochs", str(epochs))
    type_into(page, "Run name", name)
    page.get_by_role("button", name=re.compile("Launch")).click()
    settle(page)


# ----------------------------------------------------------------------------- 1. dataset

def test_01_home_and_dataset(page, app):
    with step(page, app, "dataset"):
        assert page.get_by_text("not for clinical use").first.is_visible()
        snap_clean(page, "01_home")

        go_to(page, "Dataset", "Dataset")
        choose(page, "Image size (px)", "32")
        assert set_slider(page, "Validation fraction", 0.20) == pytest.approx(0.20)
        assert set_slider(page, "Test fraction", 0.10) == pytest.approx(0.10)
        page.get_by_role("button", name=re.compile("Apply")).click()  # the settings form
        settle(page)
        page.get_by_text("Overlap check passed").wait_for()
        page.get_by_text(re.compile(r"Ready to train on: .*32 px grayscale · val 20% / test 10%")).wait_for()
        page.locator(CHART).first.wait_for()
        # The page decodes into the cache, then reads it: the report still says how long decoding took.
        page.get_by_text(re.compile(r"Load report: 4,488 images, decoded in \d+\.\d s")).wait_for()
        snap_clean(page, "02_dataset")


# ----------------------------------------------------------------------------- 2. train

def test_02_train_live_survives_a_reload_and_shows_in_a_second_tab(page, app):
    runs_dir = app["runs_dir"]
    with step(page, app, "train_reload"):
        go_to(page, "Train", "Train")
        page.get_by_text(re.compile("32 px grayscale · val 20% / test 10%")).first.wait_for()
        page.locator('[data-testid="stMetricLabel"]').filter(has_text="Trainable parameters").wait_for()
        launch(page, BASELINE, 2)
        page.get_by_role("button", name=re.compile("Stop this run")).wait_for()
        snap_clean(page, "03_train_live")

        page.reload()
        page.get_by_role("heading", name="Train").first.wait_for()
        settle(page)
        live_line(page, BASELINE, "(queued|running|done)").wait_for()
        # Stop is offered while it trains; once it evaluates, the view says it is finishing.
        page.get_by_role("button", name=re.compile("Stop this run")).or_(
            page.get_by_text(re.compile("Finishing: evaluating|state: done"))).first.wait_for()
        # The chosen settings came back with the page.
        page.get_by_text(re.compile("32 px grayscale · val 20% / test 10%")).first.wait_for(timeout=10_000)
        assert page.get_by_label("Epochs", exact=True).input_value() == "2"
        assert page.get_by_label("Run name", exact=True).input_value() == BASELINE
        snap_clean(page, "04_train_after_reload")

    with step(page, app, "train_second_tab"):
        second = page.context.new_page()
        try:
            second.set_default_timeout(STEP_TIMEOUT_MS)
            second.goto(app["url"])
            second.get_by_role("heading", name=re.compile("CXR Lab")).wait_for()
            opening = time.time()
            go_to(second, "Train", "Train")
            settle(second)
            opened = time.time()
            # A new tab shows the active run; a run that ended before the tab opened is not live any
            # more (the tiny run can finish first): then the tab shows none. A run that ended while
            # the page was being drawn may be either.
            baseline = run_named(runs_dir, BASELINE)
            finished = baseline.status().get("finished") if baseline.state() not in ("queued", "running") else None
            shown = live_line(second, BASELINE, "(queued|running|done)")
            if finished is None or finished > opened:
                shown.wait_for()
            elif finished < opening:
                assert not shown.count(), "a run that ended before the tab opened is shown as live"
            snap_clean(second, "05_train_second_tab")
        finally:
            second.close()

    with step(page, app, "train_done"):
        assert wait_until_ended(runs_dir, BASELINE).state() == "done"
        live_line(page, BASELINE, "done").wait_for()
        page.locator('[data-testid="stMetricLabel"]').filter(has_text="Test accuracy").first.wait_for()
        page.locator(CHART).first.wait_for()
        snap_clean(page, "06_train_done")


def test_03_train_a_variant_and_stop_a_run(page, app):
    runs_dir = app["runs_dir"]
    with step(page, app, "train_variant"):
        go_to(page, "Train", "Train")
        choose(page, "Activation", "elu")
        type_into(page, "Weight averaging (EMA momentum, 0 = off)", "0.9")
        launch(page, VARIANT, 1)
        assert wait_until_ended(runs_dir, VARIANT).state() == "done"
        assert run_named(runs_dir, VARIANT).config()["ema_momentum"] == 0.9
        live_line(page, VARIANT, "done").wait_for()
        assert_no_error(page)

    with step(page, app, "train_stop"):
        launch(page, STOPPED, 3)
        page.get_by_role("button", name=re.compile("Stop this run")).click()
        assert wait_until_ended(runs_dir, STOPPED, timeout=120).state() == "cancelled"
        live_line(page, STOPPED, "cancelled").wait_for()
        snap_clean(page, "07_train_stopped")


# ----------------------------------------------------------------------------- 3. compare

def test_04_compare_two_runs(page, app):
    with step(page, app, "compare"):
        go_to(page, "Runs & Compare", "Runs & Compare")
        picked = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
        for name in (BASELINE, VARIANT):  # the two latest finished runs are picked to start with
            picked.get_by_text(re.compile(re.escape(name))).first.wait_for()
        page.get_by_role("heading", name="Settings that differ").wait_for()
        page.get_by_role("heading", name="Settings against a metric").wait_for()
        page.wait_for_function(f"() => document.querySelectorAll('{CHART}').length >= 5")
        snap_clean(page, "08_runs_compare")


# ----------------------------------------------------------------------------- 4. evaluate

def test_05_evaluate_threshold_and_gradcam(page, app):
    baseline = run_named(app["runs_dir"], BASELINE)
    with step(page, app, "evaluate"):
        go_to(page, "Evaluate", "Evaluate")
        choose(page, "Run", f"{BASELINE} ({baseline.id})")
        label = "Decision threshold"
        start = float(slider(page, label).input_value())
        moved = round(start - 0.10 if start >= 0.5 else start + 0.10, 2)
        assert set_slider(page, label, moved) == pytest.approx(moved)
        assert_no_error(page)

        page.get_by_role("heading", name="Misclassified images").wait_for()
        gallery = page.locator('[data-testid="stImage"] img')
        gallery.first.wait_for()
        plain = gallery.first.get_attribute("src")
        page.get_by_text("Show Grad-CAM overlays").click()
        settle(page)
        page.wait_for_function(
            "src => { const img = document.querySelector('[data-testid=\"stImage\"] img');"
            " return img && img.getAttribute('src') !== src; }", arg=plain)
        snap_clean(page, "09_evaluate_gradcam")


# ----------------------------------------------------------------------------- 5. diagnose

def on_page(page, title: str) -> None:
    """Go to the page through the sidebar unless the journey is already there."""
    if not page.get_by_role("heading", name=re.compile(title)).count():
        go_to(page, title, title)


def clear_uploads(page) -> None:
    delete = page.locator('[data-testid="stFileChipDeleteBtn"] button')
    while delete.count():
        delete.first.click()
        settle(page)


def upload(page, path: Path) -> None:
    clear_uploads(page)
    page.locator(UPLOAD).set_input_files(str(path))
    settle(page)


def still_working(page) -> None:
    """The page answered and can take the next file."""
    page.get_by_role("heading", name=re.compile("Diagnose")).wait_for()
    assert page.locator(UPLOAD).count() == 1


def test_06_diagnose_an_xray_shows_probabilities_and_a_heatmap(page, app, files):
    with step(page, app, "diagnose_xray"):
        go_to(page, "Diagnose", "Diagnose")
        upload(page, files["xray"])
        page.get_by_text(re.compile(rf"{files['xray'].name}: predicted")).first.wait_for()
        page.get_by_text(re.compile(r"Grad-CAM.* for ")).first.wait_for()  # the heatmap's caption
        page.locator(CHART).first.wait_for()  # the class probabilities
        assert page.locator('[data-testid="stImage"] img').count() >= 2  # the original and the heatmap
        snap_clean(page, "10_diagnose_xray_heatmap")


def test_07_diagnose_a_photo_warns_it_is_unlike_an_xray(page, app, files):
    with step(page, app, "diagnose_photo"):
        on_page(page, "Diagnose")
        upload(page, files["photo"])
        warning = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text="unlike the training X-rays")
        warning.first.wait_for()
        assert "colour" in warning.first.inner_text()
        page.get_by_text(re.compile(rf"{files['photo'].name}: predicted")).first.wait_for()
        snap_clean(page, "11_diagnose_photo_ood_warning")


@pytest.mark.parametrize("kind, reason", [
    ("empty", "empty"),
    ("text", "not an image"),
    ("truncated", "damaged or truncated"),
    ("bomb", "(too large|decompression bomb)"),
])
def test_08_diagnose_refuses_a_broken_file_clearly(page, app, files, kind, reason):
    path = files[kind]
    with step(page, app, f"diagnose_{kind}"):
        on_page(page, "Diagnose")
        upload(page, path)
        message = page.locator('[data-testid="stAlertContentError"]').filter(has_text=path.name)
        message.first.wait_for()
        assert re.search(reason, message.first.inner_text()), message.first.inner_text()
        assert_no_error(page, expected=(path.name,))
        still_working(page)
        snap(page, f"12_diagnose_refuses_{kind}")


@pytest.mark.parametrize("kind", ["16bit", "rgba"])
def test_09_diagnose_a_16bit_or_rgba_png(page, app, files, kind):
    path = files[kind]
    with step(page, app, f"diagnose_{kind}"):
        on_page(page, "Diagnose")
        upload(page, path)
        page.get_by_text(re.compile(rf"{re.escape(path.name)}: predicted")).first.wait_for()
        page.get_by_text(re.compile(r"Grad-CAM.* for ")).first.wait_for()
        assert_no_error(page)
        still_working(page)
        snap(page, f"13_diagnose_{kind}_png")
    clear_uploads(page)


# ----------------------------------------------------------------------------- 6. sweeps

def test_10_sweep_export_and_import_twice(page, app):
    runs_dir = app["runs_dir"]
    with step(page, app, "sweep"):
        go_to(page, "Sweeps", "Sweeps")
        page.get_by_text(re.compile("^Base settings \\(JSON\\)")).click()
        editor = page.locator('[data-testid="stTextArea"] textarea').first
        base = json.loads(editor.input_value())
        base.update(epochs=1, image_size=32)
        editor.fill(json.dumps(base, indent=2))
        editor.press("Control+Enter")
        settle(page)
        page.get_by_text(re.compile(r"Base:.* 1 epochs")).first.wait_for()
        type_into(page, "Values of setting 1 (comma-separated)", "0.2, 0.5")
        type_into(page, "Seeds per point", "1")
        type_into(page, "Sweep name", "journey-sweep")
        assert metric_value(page, "Runs") == "2"
        runs_before = len(RunStore(runs_dir).list())
        page.get_by_role("button", name=re.compile("Launch sweep")).click()
        page.get_by_text(re.compile("2 of 2 runs (ended|done)")).first.wait_for(timeout=TRAINING_TIMEOUT_S * 1000)
        settle(page)
        store = RunStore(runs_dir)
        sweep_runs = store.list()[: len(store.list()) - runs_before]
        assert [run.state() for run in sweep_runs] == ["done", "done"]
        assert all(run.config()["image_size"] == 32 and run.config()["epochs"] == 1 for run in sweep_runs)
        snap_clean(page, "14_sweep_done")

    with step(page, app, "sweep_export_import"):
        with page.expect_download() as download:
            page.get_by_role("button", name=re.compile("Export the whole sweep")).click()
        exported = app["folder"] / "journey-sweep.zip"
        download.value.save_as(exported)
        with zipfile.ZipFile(exported) as archive:
            assert any(name.endswith("config.json") for name in archive.namelist())
        counts = len(RunStore(runs_dir).list()), len(list_sweeps(RunStore(runs_dir)))

        page.get_by_text("Import runs or a sweep (zip)").click()
        page.locator(UPLOAD).set_input_files(str(exported))
        settle(page)
        for attempt in ("first", "second"):
            page.get_by_role("button", name="Import", exact=True).click()
            settle(page)
            page.locator('[data-testid="stAlert"]').filter(has_text=exported.name).first.wait_for()
            assert_no_error(page)
            store = RunStore(runs_dir)
            assert (len(store.list()), len(list_sweeps(store))) == counts, \
                f"the {attempt} import of the same zip added runs or sweeps"
        snap(page, "15_sweep_imported_twice")


# ----------------------------------------------------------------------------- 7. bookmarks

def test_11_bookmarked_link_to_every_page_on_a_fresh_server(browser, app):
    """A second server on the same runs folder; each page is opened by its URL, first thing,
    in a fresh browser session (Diagnose first: the very first request to the new server)."""
    log = app["folder"] / "streamlit-fresh.log"
    order = ["Diagnose", *[title for title in NAVIGATION if title != "Diagnose"]]
    with serve_dashboard(log, app["env"]) as url:
        for index, title in enumerate(order):
            path, heading = NAVIGATION[title]
            context = browser.new_context(viewport=VIEWPORT)
            tab = context.new_page()
            tab.set_default_timeout(STEP_TIMEOUT_MS)
            try:
                with step(tab, {"log": log}, f"bookmark_{path.strip('/') or 'home'}"):
                    tab.goto(url + path)
                    tab.get_by_role("heading", name=re.compile(re.escape(heading))).first.wait_for()
                    settle(tab)
                    titles = sidebar_titles(tab)
                    assert titles == list(NAVIGATION), f"{path}: the sidebar shows {titles}"
                    snap_clean(tab, f"{16 + index:02d}_bookmark_{path.strip('/') or 'home'}")
            finally:
                context.close()
