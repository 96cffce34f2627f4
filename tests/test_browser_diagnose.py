"""End to end in a real browser, entering through app.py: the dashboard is served with two real tiny
runs (a seed CNN trained for 2 epochs and an mlp), the user opens the root URL, clicks "Diagnose" in
the sidebar, uploads a real X-ray from the built-in set and a text file named .jpg, then a colour
photo, then switches the run. The prediction, the heatmap and the probability chart must appear with
no exception box; the non-image gets a clear error, the photo the out-of-distribution warning, and
after the run switch the same files are diagnosed again. Screenshots go to test-artifacts/screenshots/
(env SCREENSHOT_DIR overrides). Needs Debian's Chromium at /usr/bin/chromium."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from tests.browser_support import (
    STEP_TIMEOUT_MS,
    VIEWPORT,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard,
    settle,
    snap,
)

pytestmark = [requires_chromium, pytest.mark.slow]
RUN_BOX = "Run (default: best test AUC)"


@pytest.fixture
def trained_runs(tmp_path, monkeypatch):
    """A runs folder with a seed_cnn (32 px, 2 epochs) and an mlp (32 px, 1 epoch), trained for real."""
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    from core.store.runs import RunStore
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    runs_dir = tmp_path / "runs"
    for arch, epochs in (("mlp", 1), ("seed_cnn", 2)):
        config = TrainConfig(arch=arch, image_size=32, epochs=epochs, batch_size=64, name=f"browser-{arch}")
        run = RunStore(runs_dir).create(config.to_dict(), name=config.name)
        execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
    return runs_dir


@pytest.fixture
def dashboard(trained_runs, tmp_path):
    env = {"CXR_RUNS_DIR": str(trained_runs), "CXR_CACHE_DIR": str(tmp_path / "cache"),
           "CXR_UPLOADS_DIR": str(tmp_path / "uploads")}
    with serve_dashboard(tmp_path / "streamlit.log", env) as url:
        yield url


def xray_file(folder: Path, runs_dir: Path) -> Path:
    """A real pneumonia X-ray from the built-in set whose Grad-CAM (with the CNN run) is not empty."""
    from core.data.sources import BUILTIN_ZIP
    from core.ml.diagnosis import Diagnoser
    from core.ml.maps import is_empty_map
    from core.store.runs import RunStore
    cnn = next(run for run in RunStore(runs_dir).list() if run.config()["arch"] == "seed_cnn")
    diagnoser = Diagnoser(cnn.path)
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        for name in sorted(n for n in archive.namelist() if "/PNEUMONIA/" in n and n.endswith(".jpeg"))[:40]:
            result = diagnoser.diagnose(archive.read(name), name)
            if not result.ood.unusual and not is_empty_map(diagnoser.heatmap(result, "gradcam")):
                path = folder / Path(name).name
                path.write_bytes(archive.read(name))
                return path
    pytest.fail("no usual X-ray with a non-empty Grad-CAM among the first 40")


def assert_no_exception_and_only_expected_errors(page, allowed: tuple[str, ...] = ()) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]').first.inner_text()
    for alert in page.locator('[data-testid="stAlert"]').all():
        text = alert.inner_text()
        if alert.locator('[data-testid="stAlertContentError"]').count():
            assert any(word in text for word in allowed), f"unexpected error box: {text}"


def test_diagnose_through_the_sidebar_upload_photo_and_run_switch(dashboard, trained_runs, tmp_path):
    from playwright.sync_api import expect

    from tests.test_cli import building_photo
    xray = xray_file(tmp_path, trained_runs)
    notes = tmp_path / "notes.jpg"
    notes.write_text("This is a text file, not a picture.\n")
    photo = tmp_path / "building.jpg"
    building_photo().save(photo, quality=92)
    with launch_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(dashboard, timeout=STEP_TIMEOUT_MS)
        page.get_by_role("heading", name=re.compile("CXR Lab")).first.wait_for()
        go_to(page, "Diagnose", "Diagnose")
        expect(page.get_by_text("not for clinical use").first).to_be_visible()
        expect(page.get_by_role("combobox", name=RUN_BOX)).to_have_value(re.compile("seed_cnn"))

        page.locator("input[type=file]").set_input_files([str(xray), str(notes)])
        expect(page.get_by_text(f"{xray.name}: predicted").first).to_be_visible()
        settle(page)
        expect(page.get_by_text("notes.jpg: cannot be diagnosed").first).to_be_visible()
        expect(page.get_by_text("Grad-CAM of").first).to_be_visible()
        expect(page.get_by_text("map changes when the model is randomised").first).to_be_visible()
        expect(page.get_by_text("Research tool, not for clinical use").first).to_be_visible()
        assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 1  # the probabilities
        assert page.locator('[data-testid="stImage"] img').count() >= 2  # the original and the overlay
        assert_no_exception_and_only_expected_errors(page, allowed=("notes.jpg",))
        snap(page, "diagnose_xray")

        page.locator("input[type=file]").set_input_files([str(photo)])  # added to the files already there
        warning = page.locator('[data-testid="stAlert"]').filter(has_text="looks unlike the training X-rays")
        expect(warning.first).to_be_visible()
        expect(warning.filter(has_text="it is in colour").first).to_be_visible()
        settle(page)
        assert_no_exception_and_only_expected_errors(page, allowed=("notes.jpg",))
        snap(page, "diagnose_photo_warning")

        box = page.get_by_role("combobox", name=RUN_BOX)
        box.click()
        page.get_by_role("option").filter(has_text="· mlp ·").first.click()
        settle(page)
        expect(box).to_have_value(re.compile("mlp"))
        expect(page.get_by_text(f"{xray.name}: predicted").first).to_be_visible()  # the files stayed
        expect(page.get_by_text("building.jpg: predicted").first).to_be_visible()
        expect(page.get_by_text("Vanilla saliency of").first).to_be_visible()
        # the method box shows what is drawn (the mlp has no Grad-CAM), not the stale choice
        expect(page.get_by_role("combobox", name="Heatmap method")).to_have_value("Vanilla saliency")
        expect(page.get_by_text("notes.jpg: cannot be diagnosed").first).to_be_visible()
        assert_no_exception_and_only_expected_errors(page, allowed=("notes.jpg",))
        snap(page, "diagnose_run_switched")
