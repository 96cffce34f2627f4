"""Compare and Evaluate in a real browser, entered at the root URL through app.py, on real tiny
runs whose test sets differ: binary 32 px, binary 40 px with another split seed, 3-class subtype.

Screenshots: test-artifacts/screenshots/compare_*.png and evaluate_*.png.
"""
from __future__ import annotations

import re

import pytest

from core.ml.training import execute_run
from core.settings.config import TrainConfig
from core.store.runs import RunStore
from tests.browser_support import (
    STEP_TIMEOUT_MS,
    VIEWPORT,
    go_to,
    launch_chromium,
    requires_chromium,
    screenshot_dir,
    serve_dashboard,
    settle,
    snap,
)

pytestmark = [requires_chromium, pytest.mark.slow]
TINY = dict(arch="seed_cnn", batch_size=128, epochs=2, arch_params={"dense_units": 8}, early_stopping=False)
RUNS = (("small", dict(image_size=32, seed=1)),
        ("larger", dict(image_size=40, seed=1, split_seed=2, dropout=0.3)),
        ("subtype", dict(image_size=32, seed=1, task="subtype")))
CHART = '[data-testid="stVegaLiteChart"]'
ERROR = '[data-testid="stAlertContentError"], [data-testid="stException"]'


def train_tiny_runs(runs_dir, cache_dir) -> dict:
    store = RunStore(runs_dir)
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_CACHE_DIR", str(cache_dir))
        for name, extra in RUNS:
            config = TrainConfig(name=name, **TINY, **extra)
            run = store.create(config.to_dict(), name=name)
            execute_run(run, config)
            assert run.state() == "done", run.status()
            runs[name] = run
    return runs


@pytest.fixture
def served(tmp_path):
    runs_dir, cache, log = tmp_path / "runs", tmp_path / "cache", tmp_path / "streamlit.log"
    runs = train_tiny_runs(runs_dir, cache)
    env = {"CXR_RUNS_DIR": str(runs_dir), "CXR_CACHE_DIR": str(cache), "CXR_UPLOADS_DIR": str(tmp_path / "up")}
    with serve_dashboard(log, env) as url:
        yield {"url": url, "runs": runs, "log": log}


def test_compare_and_evaluate_runs_with_different_test_sets_in_a_browser(served):
    with launch_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            walk(page, served["url"])
        except BaseException:
            page.screenshot(path=str(screenshot_dir() / "compare_failure.png"), full_page=True)
            print(served["log"].read_text()[-3000:])
            raise


def assert_no_error(page) -> None:
    errors = page.locator(ERROR)
    assert errors.count() == 0, errors.first.inner_text()


def walk(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=re.compile("CXR Lab")).wait_for()
    go_to(page, "Runs & Compare", "Runs & Compare")
    page.get_by_role("heading", name="Settings against a metric").wait_for()
    # The two newest runs are compared by default: subtype (32 px) and larger (40 px, split seed 2).
    page.get_by_text("tested on different test sets").wait_for()
    assert page.get_by_text(re.compile(r"image size: .*= 32.*= 40|image size: .*= 40.*= 32")).count()
    assert_no_error(page)
    snap(page, "compare_01_warning")
    page.get_by_role("button", name=re.compile("Score these runs on one common test split")).click()
    page.get_by_text("Common test set:").wait_for()
    settle(page)
    assert_no_error(page)
    snap(page, "compare_02_common_split")

    go_to(page, "Evaluate", "Evaluate")
    page.get_by_role("heading", name="Misclassified images").wait_for()
    page.locator('[data-testid="stImage"]').first.wait_for()
    captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    assert captions and all("threshold" in c for c in captions), captions[:3]
    assert page.locator('[data-testid="stMetricLabel"]').filter(has_text="Macro one-vs-rest AUC").count()
    assert_no_error(page)
    snap(page, "evaluate_01_subtype")
    page.get_by_text("Show Grad-CAM overlays").click()
    settle(page)
    page.locator('[data-testid="stImage"]').first.wait_for()
    assert_no_error(page)
    snap(page, "evaluate_02_gradcam")
