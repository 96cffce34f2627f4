"""The Studies page in Debian's Chromium, as a person uses it: the dashboard served as `make run` serves
it, entered through app.py's sidebar. The batch-size study's quick variant runs on the built-in set from
the gallery; its page then answers with speed and measured memory against the batch size, the score
with its uncertainty, three charts, and a report that downloads as one HTML file.

Any error box fails a step. Screenshots go to test-artifacts/screenshots/ (browser_support.snap).
"""
from __future__ import annotations

import re

import pytest

from core.store.runs import RunStore
from core.store.sweeps import list_sweeps
from tests.browser_support import (
    app_tab,
    choose,
    column,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard,
    settle,
    snap,
    type_into,
)
from tests.test_journey import assert_no_error

pytestmark = [requires_chromium, pytest.mark.slow]

STUDY_TIMEOUT_MS = 900_000  # 8 runs of 2 epochs at 64 px on half the built-in set: ~4 min on 2 idle cores
CHART = '[data-testid="stVegaLiteChart"]'


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    env = {"CXR_RUNS_DIR": str(folder / "runs"), "CXR_UPLOADS_DIR": str(folder / "uploads")}  # + the session's cache
    with serve_dashboard(folder / "streamlit.log", env) as url:
        yield {"url": url, "runs_dir": folder / "runs", "log": folder / "streamlit.log"}


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


def test_the_batch_size_study_runs_from_the_gallery_and_answers_with_speed_and_memory(app, browser, tmp_path):
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Studies", "Studies")
        assert page.locator('[class*="st-key-study_open_"]').count() == 17, "a card per study"
        page.locator(".st-key-study_open_batch_size button").first.click()
        page.get_by_role("heading", name="Batch size: speed and memory").wait_for()
        settle(page)
        assert "8 runs" in page.locator('[data-testid="stMain"]').inner_text()
        snap(page, "studies_1_gallery_batch_size")
        assert_no_error(page)

        page.get_by_role("button", name=re.compile("Run the quick study")).click()
        page.get_by_text(re.compile(r"8 of 8 runs ended")).wait_for(timeout=STUDY_TIMEOUT_MS)
        settle(page)
        assert_no_error(page)
        record = list_sweeps(RunStore(app["runs_dir"]))[0]
        assert record["study"] == "batch_size" and record["variant"] == "quick" and len(record["runs"]) == 8
        states = [RunStore(app["runs_dir"]).get(e["run_id"]).state() for e in record["runs"]]
        assert states == ["done"] * 8, states

        answer = page.locator('[data-testid="stAlertContentInfo"]').first.inner_text()
        assert re.search(r"Images / s (rises|falls|stays) .*batch size 16", answer), answer
        assert re.search(r"peak memory (rises|falls|stays)", answer), answer
        assert re.search(r"(scores best|stands out) .*test accuracy \d\.\d{3} ± \d\.\d{3}", answer), answer
        assert page.locator(CHART).count() >= 3, "the score, images / s and peak memory against batch size"
        table = page.locator('[data-testid="stDataFrame"]').first  # the results (layer tables come after)
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # the grid draws the rows in view
        assert column(page, table, "batch size") == ["16", "32", "64", "128"]
        for title in ("Test accuracy", "Images / s", "Peak memory (MB)"):  # each mean ± std over 2 seeds
            assert all(re.fullmatch(r"[\d,.]+ ± [\d,.]+", cell) for cell in column(page, table, title)), title
        snap(page, "studies_2_batch_size_answered")

        with page.expect_download() as download:
            page.get_by_role("button", name=re.compile("Report \\(HTML\\)")).click()
        report = tmp_path / "report.html"
        download.value.save_as(report)
        html = report.read_text()
        assert "Batch size: speed and memory (quick)" in html and html.count("<svg") >= 3
        assert "research tool, not for clinical use" in html and "http://" not in html and "https://" not in html


def test_the_train_page_builds_a_cnn_from_a_preset_and_shows_it_layer_by_layer(app, browser):
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Train", "Train")
        choose(page, "Architecture", "Configurable CNN")
        choose(page, "Preset", "VGG-style (2 convs per block)")
        assert page.get_by_label("Filters", exact=True).input_value() == "32, 64, 128"
        assert page.get_by_label("Convs per block", exact=True).input_value() == "2"
        page.get_by_text("Layers: output shape, parameters and MACs").first.click()
        settle(page)
        table = page.locator('[data-testid="stExpander"] [data-testid="stDataFrame"]').first
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        layers = column(page, table, "Type")
        assert layers[:6] == ["InputLayer", "Rescaling", "Conv2D", "BatchNormalization", "Activation", "Conv2D"]
        summary = page.get_by_text(re.compile(r"^\d+ layers · [\d,]+ parameters · [\d.]+ M MACs per image")).first
        assert summary.is_visible()
        type_into(page, "Filters", "16, 32")  # a layer fewer: the preset becomes custom, the table follows
        assert page.get_by_role("combobox", name="Preset", exact=True).input_value() == "custom (keep what is typed)"
        assert page.get_by_label("Convs per block", exact=True).input_value() == "2"  # the rest is kept
        assert_no_error(page)
        snap(page, "studies_3_train_cnn_layers")
