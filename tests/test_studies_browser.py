"""The Studies page in Debian's Chromium, as a person uses it: the dashboard served as `make run` serves
it, entered through app.py's sidebar. The batch-size study's quick variant is launched from the gallery
(its 8 runs queued with the study's settings); a finished one (runs written as the trainer writes them:
training them takes minutes, and test_studies trains a quick study end to end) answers with speed and
memory against the batch size, the score with its uncertainty, three charts, and a report that
downloads as one HTML file.

Any error box fails a step. Screenshots go to test-artifacts/screenshots/ (browser_support.snap).
"""
from __future__ import annotations

import math
import re
import time

import pytest

from core.present.studies import variant_sweep
from core.settings.studies import STUDIES
from core.files import write_json
from core.store.run_folder import ACTIVE_STATES
from core.store.runs import RunStore
from core.store.sweeps import _points_per_run, list_sweeps, sweeps_dir
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
from tests.conftest import wait_until, write_run
from tests.test_journey import assert_no_error

pytestmark = [requires_chromium, pytest.mark.slow]

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


def test_the_batch_size_study_launches_from_the_gallery(app, browser):
    store = RunStore(app["runs_dir"])
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Studies", "Studies")
        assert page.locator('[class*="st-key-study_open_"]').count() == len(STUDIES), "a card per study"
        page.locator(".st-key-study_open_batch_size button").first.click()
        page.get_by_role("heading", name="Batch size: speed and memory").wait_for()
        settle(page)
        assert "8 runs" in page.locator('[data-testid="stMain"]').inner_text()
        snap(page, "studies_1_gallery_batch_size")
        assert_no_error(page)

        page.get_by_role("button", name=re.compile("Run the quick study")).click()
        page.get_by_text(re.compile(r"of 8 runs ended")).wait_for()
        assert_no_error(page)
        record = list_sweeps(store)[0]
        assert record["study"] == "batch_size" and record["variant"] == "quick" and len(record["runs"]) == 8
        configs = [store.get(entry["run_id"]).config() for entry in record["runs"]]
        assert sorted(c["batch_size"] for c in configs) == [16, 16, 32, 32, 64, 64, 128, 128]
        assert {(c["image_size"], c["epochs"], c["train_fraction"]) for c in configs} == {(64, 2, 0.5)}
    # Training the study takes minutes (test_studies trains a quick study end to end): stopped here.
    for entry in record["runs"]:
        store.request_stop(store.get(entry["run_id"]), "test")
    wait_until(lambda: all(store.get(e["run_id"]).state() not in ACTIVE_STATES for e in record["runs"]), 120,
               "the study's runs to stop")


def finished_study(store: RunStore, key: str) -> str:
    """The quick variant of study `key` as if it had run here: its sweep record and its runs, finished
    (written as the trainer writes them), with speed and memory growing with the batch size and the
    best test accuracy at batch size 32."""
    sweep = variant_sweep(key, "quick")
    sweep_id = "sweep-29991231-000000"  # the newest: the page shows it first
    record = {"id": sweep_id, "created": time.time() + 1, **sweep.to_dict(), "runs": []}
    for config, point in zip(sweep.configs(sweep_id), _points_per_run(sweep)):
        settings = {k: v for k, v in config.to_dict().items() if k not in ("name", "epochs", "seed")}
        run = write_run(store, "done", name=config.name, epochs=config.epochs, seed=config.seed, **settings)
        size = config.batch_size
        summary = run.summary()
        summary["test"]["accuracy"] = 0.93 - 0.02 * abs(math.log2(size / 32)) + 0.002 * (config.seed % 2)
        run.write_summary(summary)
        run.update_status(resources={"images_per_sec": 200 + size + config.seed % 3, "wall_s": 60 - size / 8,
                                     "peak_memory_mb": 900 + 2 * size + config.seed % 5, "device": "CPU"})
        record["runs"].append({"run_id": run.id, "point": point, "seed": config.seed, "fold": config.cv_fold})
    write_json(sweeps_dir(store) / f"{sweep_id}.json", record)
    return sweep_id


def test_a_finished_batch_size_study_answers_with_speed_memory_and_a_report(app, browser, tmp_path):
    finished_study(RunStore(app["runs_dir"]), "batch_size")
    with app_tab(browser, app["url"]) as page:
        go_to(page, "Studies", "Studies")
        page.locator(".st-key-study_open_batch_size button").first.click()
        page.get_by_role("heading", name="Batch size: speed and memory").wait_for()
        page.get_by_text(re.compile(r"8 of 8 runs ended")).wait_for()
        settle(page)
        assert_no_error(page)

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
