"""End to end in a real browser: the Diagnose page of the running dashboard gets a real X-ray from
the built-in set and a text file named .jpg; it must show the prediction and the heatmap for the
first and a clear error for the second. Saves a screenshot (test-artifacts/screenshots/diagnose.png,
env SCREENSHOT_DIR overrides). Needs Debian's Chromium at /usr/bin/chromium."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, requires_chromium, screenshot_dir, serve_dashboard

STEP_TIMEOUT_MS = 180_000  # model load, OOD reference and first Grad-CAM on a busy 2-core machine

pytestmark = requires_chromium


@pytest.fixture
def finished_run_dir(tmp_path):
    """A runs folder holding one finished run (seed_cnn, 32 px, 1 epoch, trained for real)."""
    from core.runs import RunStore
    from core.training import TrainConfig, execute_run
    runs_dir = tmp_path / "runs"
    config = TrainConfig(arch="seed_cnn", image_size=32, epochs=1, batch_size=64, name="browser")
    run = RunStore(runs_dir).create(config.to_dict(), name="browser")
    execute_run(run, config)
    assert run.state() == "done", run.status().get("error")
    return runs_dir


@pytest.fixture
def dashboard(finished_run_dir, tmp_path):
    env = {"CXR_RUNS_DIR": str(finished_run_dir), "CXR_UPLOADS_DIR": str(tmp_path / "uploads")}
    with serve_dashboard(tmp_path / "streamlit.log", env) as url:
        yield url


def upload_files(folder: Path) -> list[Path]:
    """A real chest X-ray from the built-in set and a text file with an image extension."""
    from core.data import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        name = next(n for n in sorted(archive.namelist()) if "/PNEUMONIA/" in n and n.endswith(".jpeg"))
        xray = folder / Path(name).name
        xray.write_bytes(archive.read(name))
    notes = folder / "notes.jpg"
    notes.write_text("This is a text file, not a picture.\n")
    return [xray, notes]


def test_diagnose_page_predicts_explains_and_refuses_a_non_image(dashboard, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    xray, notes = upload_files(tmp_path)
    shots = screenshot_dir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 2200})
            page.goto(f"{dashboard}/diagnose", timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_text("not for clinical use").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            page.locator("input[type=file]").set_input_files([str(xray), str(notes)])
            expect(page.get_by_text(f"{xray.name}: predicted").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_text("notes.jpg: cannot be diagnosed").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_text("not an image").first).to_be_visible()
            expect(page.get_by_text("Grad-CAM for").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_text("Class probabilities").first).to_be_attached(timeout=STEP_TIMEOUT_MS)
            assert page.locator("img").count() >= 2  # the original and the overlay (the table draws on a canvas)
            page.screenshot(path=str(shots / "diagnose.png"), full_page=True)
        finally:
            browser.close()
