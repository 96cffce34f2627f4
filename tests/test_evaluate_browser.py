"""The Evaluate page in Debian's Chromium, entered through the sidebar: a real trained run (a copy of the
session's tiny_run) shows its headline numbers with 95% patient-bootstrap intervals; a click on a
confusion-matrix cell opens that cell's images; external validation on a small labelled folder fills the
side-by-side table. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import re

import pytest

from tests.browser_support import (
    app_tab,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard,
    settle,
    snap,
)
from tests.conftest import copy_run
from tests.synthetic import make_chest_folder
from tests.test_journey import assert_no_error

pytestmark = [requires_chromium, pytest.mark.slow]

CHART = '[data-testid="stVegaLiteChart"]'
CELL_SHOWN = r"(true \S+ → predicted \S+ \(\d+ images\)): the \d+ most confident shown"


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_run):
    folder = tmp_path_factory.mktemp("evaluate")
    run = copy_run(tiny_run, folder / "runs")
    partner = another_seed_on_the_same_split(run, folder / "runs")
    env = {"CXR_RUNS_DIR": str(folder / "runs"), "CXR_UPLOADS_DIR": str(folder / "uploads")}
    with serve_dashboard(folder / "streamlit.log", env) as url:
        yield {"url": url, "run": run, "partner": partner,
               "external": make_chest_folder(folder / "hospital_b", n_patients=3)}


def another_seed_on_the_same_split(run, runs_dir):
    """`run`'s config trained for real with another seed and the same split: a partner for an ensemble."""
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    from core.store.runs import RunStore
    config = TrainConfig.from_dict({**run.config(), "seed": 7, "split_seed": TrainConfig.from_dict(
        run.config()).effective_split_seed, "name": "tiny seed 7"})
    partner = RunStore(runs_dir).create(config.to_dict(), name=config.name, queued=False)
    execute_run(partner, config)
    assert partner.state() == "done", partner.status().get("error")
    return partner


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


def click_a_cell(page) -> str:
    """Click across the confusion chart until a cell is selected; the chosen cell's label."""
    chart = page.locator(CHART).first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    for fy in (0.35, 0.5, 0.65, 0.8):
        for fx in (0.3, 0.45, 0.6, 0.75):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            settle(page)
            chosen = re.search(CELL_SHOWN, page.locator('[data-testid="stMain"]').inner_text())
            if chosen:
                return chosen.group(1)
    raise AssertionError("no click on the confusion chart selected a cell")


def shown_run(page, app, label: str = "Run"):
    """The run the page's run box shows: the module's copy of tiny_run or its partner ("tiny seed 7")."""
    shown = page.get_by_role("combobox", name=label, exact=True).input_value()
    return app["partner"] if app["partner"].display_name() in shown else app["run"]


def test_intervals_a_clicked_cell_and_external_validation(app, browser):
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Evaluate", "Evaluate")
        main = page.locator('[data-testid="stMain"]')
        run = shown_run(page, app)
        main.get_by_text(re.compile(r"bootstrap resamples of the \d+ patients \(\d+ images\)")).wait_for()
        assert "Research tool, not for clinical use" in main.inner_text()
        assert len(re.findall(r"95% CI \d\.\d{3}–\d\.\d{3}", main.inner_text())) >= 4
        assert_no_error(page)
        snap(page, "evaluate_1_intervals")

        images_before = page.locator('[data-testid="stImage"]').count()
        chosen = click_a_cell(page)
        assert chosen in page.locator('[data-testid="stMain"]').inner_text()
        assert page.locator('[data-testid="stImage"]').count() > images_before
        assert_no_error(page)
        snap(page, "evaluate_2_cell_images")

        field = page.get_by_label("Labelled dataset on the server", exact=True)
        field.fill(str(app["external"]))
        field.press("Enter")
        settle(page)
        page.get_by_role("button", name=re.compile("Evaluate on this dataset")).click()
        page.get_by_text(re.compile(r"on hospital_b, (lower than|higher than|equal to) \d\.\d{3} on the internal")
                         ).wait_for()
        settle(page)
        assert_no_error(page)
        assert run.external_results()[0]["n_images"] == 12
        table = page.locator('[data-testid="stDataFrame"]').last
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        header = table.locator("tr").first.inner_text()
        assert "external: hospital_b" in header and "internal test" in header
        # Synthetic images beside real X-rays: a whole-set shift the page names (flat images: contrast).
        shift = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text="brightness or contrast")
        assert re.search(r"Contrast: median \d+ here, the training images' \d+(st|nd|rd|th) percentile",
                         shift.inner_text())
        snap(page, "evaluate_3_external")

        # The model card lists the external result just made; the export writes SavedModel + TFLite.
        page.get_by_text("Model card", exact=True).first.click()
        card = page.locator('[data-testid="stExpander"]').filter(has_text="Intended use")
        card.get_by_text(re.compile("hospital_b")).first.wait_for()
        assert "not for clinical use" in card.inner_text().lower()
        page.get_by_role("button", name=re.compile("Export SavedModel \\+ TFLite")).click()
        page.get_by_text(re.compile("Exported; model_card.md written")).wait_for(timeout=120_000)
        settle(page)
        assert_no_error(page)
        assert page.get_by_role("button", name=re.compile("TFLite model")).count() == 1
        assert run.tflite_path.exists() and (run.saved_model_dir / "saved_model.pb").exists()
        assert "hospital_b" in run.model_card_path.read_text()
        snap(page, "evaluate_4_model_card_export")


def pick_in_multiselect(page, label: str, option_text: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.click()
    box.fill(option_text)  # typing opens the list, filtered
    page.get_by_role("option").filter(has_text=option_text).first.click()
    page.keyboard.press("Escape")
    settle(page)


def test_an_ensemble_of_two_seeds_on_evaluate_and_diagnose(app, browser):
    from tests.test_diagnose_page import xray_upload
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Evaluate", "Evaluate")
        main = page.locator('[data-testid="stMain"]')
        other = app["run"] if shown_run(page, app) is app["partner"] else app["partner"]
        pick_in_multiselect(page, "Average this run with other runs that scored the same test images", other.id)
        main.get_by_text(re.compile(r"The class probabilities of 2 runs")).wait_for()
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text="ensemble of 2")
        table.scroll_into_view_if_needed()
        assert_no_error(page)
        snap(page, "evaluate_5_ensemble")

        go_to(page, "Diagnose", "Diagnose")
        label = "Run (default: best test AUC)"
        other = app["run"] if shown_run(page, app, label) is app["partner"] else app["partner"]
        pick_in_multiselect(page, "Average with other runs (an ensemble)", other.id)
        name, data, _ = xray_upload()
        page.locator("input[type=file]").set_input_files([{"name": name, "mimeType": "image/jpeg", "buffer": data}])
        main.get_by_text(re.compile(r"Ensemble of 2 runs .* their probabilities averaged")).first.wait_for()
        settle(page)
        assert "2 forward passes instead of 1" in main.inner_text()
        assert "not for clinical use" in main.inner_text()
        assert_no_error(page)
        snap(page, "diagnose_ensemble")
