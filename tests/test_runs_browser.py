"""The run browser in Debian's Chromium, entered through app.py's sidebar as a person does: rename, tag
and star a run, filter the table by a metric (kept over a reload), open the run in Evaluate and in
Diagnose (the chosen run is the one shown), and delete all runs of a sweep. Screenshots go to test-artifacts/screenshots/."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from core.store import sweeps
from core.files import write_json
from core.store.runs import RunStore
from tests.browser_support import (
    app_tab,
    choose,
    column,
    column_once,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard,
    settle,
    snap,
    type_into,
)
from tests.conftest import copy_run, write_run
from tests.test_journey import assert_no_error

pytestmark = [requires_chromium, pytest.mark.slow]

SWEEP_ID = "sweep-20260101-000000"
ROW_HEIGHT = 35  # st.dataframe's rows and header, in pixels


@pytest.fixture
def store_with_runs(tiny_run, tmp_path):
    """The trained tiny run (a model Diagnose loads), two finished runs without models and a sweep of two."""
    store = RunStore(tmp_path / "runs")
    trained = copy_run(tiny_run, store.root)
    write_run(store, "done", name="other-a", seed=1)
    write_run(store, "done", name="other-b", seed=2, arch="mlp")
    members = [write_run(store, "done", name=f"lr-{i}", seed=i, sweep_id=SWEEP_ID) for i in range(2)]
    write_json(sweeps.sweeps_dir(store) / f"{SWEEP_ID}.json",
               {"id": SWEEP_ID, "name": "lr study", "created": time.time(), "axes": [],
                "runs": [{"run_id": run.id, "point": {}} for run in members]})
    return store, trained


@pytest.fixture
def app(store_with_runs, tmp_path):
    store, trained = store_with_runs
    env = {"CXR_RUNS_DIR": str(store.root), "CXR_UPLOADS_DIR": str(tmp_path / "uploads")}
    with serve_dashboard(tmp_path / "streamlit.log", env) as url:
        yield {"url": url, "store": store, "trained": trained}


def runs_grid(page):
    table = page.locator('[data-testid="stDataFrame"]').first
    table.scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # the grid draws the rows in view
    return table


def click_row(page, name: str) -> None:
    """Tick (or untick) the row of the run named `name` in the runs table: its row marker, left of the cells."""
    table = runs_grid(page)
    names = column(page, table, "name")
    table.click(position={"x": 18, "y": ROW_HEIGHT * (names.index(name) + 1) + ROW_HEIGHT / 2})
    settle(page)


def test_rename_tag_star_filter_open_and_delete_a_sweep(app):
    store, trained = app["store"], app["trained"]
    with launch_chromium() as browser, app_tab(browser, app["url"]) as page:
        go_to(page, "Runs & Compare", "Runs & Compare")
        page.get_by_text(re.compile("tensorboard --logdir")).first.wait_for()
        click_row(page, trained.config()["name"])
        page.get_by_role("button", name="Star", exact=True).click()  # one click, beside the table
        settle(page)
        page.get_by_text(re.compile("Name, tags and notes of")).first.click()
        settle(page)
        page.get_by_label("Name", exact=True).fill("chosen one")
        page.get_by_label("Tags, separated by commas", exact=True).fill("Paper, best")
        page.get_by_label("Notes", exact=True).fill("the model for the paper")
        page.get_by_role("button", name="Save", exact=True).click()
        settle(page)
        assert_no_error(page)
        assert store.get(trained.id).annotations() == {"name": "chosen one", "tags": ["paper", "best"],
                                                       "notes": "the model for the paper", "starred": True}
        assert "chosen one" in column_once(page, runs_grid(page), "name", lambda names: "chosen one" in names)
        snap(page, "runs_browser_1_annotated")
        click_row(page, "other-b")  # two selected; the filter below hides other-b and moves the rows
        page.get_by_role("button", name="Star 2 selected").wait_for()

        threshold = round(store.get(trained.id).describe()["test_auc"] - 0.0005, 4)
        query = f"test_auc >= {threshold} and image_size <= 64"
        type_into(page, "Filter by any setting or metric", query)
        expected = sorted(r.describe()["name"] for r in store.list()
                          if (r.describe()["test_auc"] or 0) >= threshold and r.config()["image_size"] <= 64)
        assert expected == ["chosen one"]
        assert column_once(page, runs_grid(page), "name", lambda names: names == expected) == expected
        assert_no_error(page)
        # The selection stays on the run that is still shown, alone: its buttons and form name it.
        page.get_by_role("button", name="Unstar", exact=True).wait_for()
        expect(page.get_by_role("button", name="Delete 1 selected")).to_be_visible()
        expect(page.get_by_text("Name, tags and notes of chosen one")).to_be_visible()
        snap(page, "runs_browser_2_filtered")

        page.reload()  # a new session: the filter comes back from the settings file
        page.get_by_role("heading", name="Runs & Compare").first.wait_for()
        settle(page)
        expect(page.get_by_label("Filter by any setting or metric", exact=True)).to_have_value(query, timeout=20000)
        assert column_once(page, runs_grid(page), "name", lambda names: names == expected) == expected

        click_row(page, "chosen one")
        page.get_by_role("button", name="Evaluate").click()
        page.get_by_role("heading", name="Evaluate").first.wait_for()
        settle(page)
        assert page.get_by_role("combobox", name="Run", exact=True).input_value() == f"chosen one ({trained.id})"
        snap(page, "runs_browser_3_evaluate")

        go_to(page, "Runs & Compare", "Runs & Compare")
        expect(page.get_by_label("Filter by any setting or metric", exact=True)).to_have_value(query, timeout=20000)  # kept
        click_row(page, "chosen one")
        page.get_by_role("button", name="Diagnose").click()
        page.get_by_role("heading", name="Diagnose").first.wait_for()
        settle(page)
        shown = page.get_by_role("combobox", name="Run (default: best test AUC)", exact=True).input_value()
        assert shown.startswith("chosen one · seed_cnn · 32 px"), shown
        snap(page, "runs_browser_4_diagnose")

        go_to(page, "Runs & Compare", "Runs & Compare")
        type_into(page, "Filter by any setting or metric", "")
        choose(page, "Sweep", f"lr study ({SWEEP_ID})")
        assert sorted(column_once(page, runs_grid(page), "name", lambda names: len(names) == 2)) == ["lr-0", "lr-1"]
        page.get_by_role("button", name=re.compile("Delete all 2 runs of sweep lr study")).click()
        settle(page)
        snap(page, "runs_browser_5_confirm_sweep_delete")
        page.get_by_role("button", name="Yes, delete the sweep").click()
        settle(page)
        page.get_by_text(f"Deleted sweep {SWEEP_ID} and its 2 runs.").wait_for()
        assert_no_error(page)
        assert sweeps.list_sweeps(store) == [] and len(store.list()) == 3
        remaining = column_once(page, runs_grid(page), "name", lambda names: len(names) == 3)
        assert sorted(remaining) == ["chosen one", "other-a", "other-b"]
        snap(page, "runs_browser_6_sweep_deleted")
