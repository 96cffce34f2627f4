"""Past one machine (issue 11), in Debian's Chromium, as a person uses it: the dashboard is served as
`make run` serves it, with CXR_RAY_ADDRESS naming a local Ray cluster of 2 CPUs (tests/test_ray.py's
`ray start --head --block`), and entered through app.py's sidebar.

1. A sweep over the learning rate with successive halving, launched from the Sweeps page, trains on
   the cluster: the results say which point was stopped and at which epoch, and Runs & Compare names
   the node (this machine's host name) that trained each run.
2. The Dataset page loads a folder not yet in the (fresh) dataset cache with a progress bar; "Cancel
   loading" ends it, leaving no cache file, and "Load it" loads it after all.

Any error box fails a step. Screenshots go to the test's tmp folder, and the key ones to
/tmp/scale_shots/ as well.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.ml.halving import read_record
from core.store.runs import RunStore
from tests import test_ray
from tests.browser_support import (
    VIEWPORT,
    app_tab,
    choose,
    column,
    column_once,
    go_to,
    launch_chromium,
    requires_chromium,
    serve_dashboard,
    settle,
    type_into,
)
from tests.conftest import wait_until
from tests.synthetic import make_chest_folder

pytestmark = [requires_chromium, pytest.mark.slow]  # shares a worker with test_ray.py: conftest.SAME_WORKER

KEY_SHOTS = Path("/tmp/scale_shots")  # the key screenshots, for a person to look at
SWEEP_TIMEOUT_MS = 480_000  # three tiny runs on a busy 2-core machine
# Learning rates queued in this order: the two that learn take the cluster's two CPUs, and a slot is
# free for the third, which barely moves its weights, only once one of them has passed the first rung;
# so the third is compared there with a run that learned, and stopped, whichever of the two arrived first.
RATES = ("0.003", "0.001", "1e-6")
HOPELESS = 1e-6
BIG_FOLDER_IMAGES_PER_CLASS = 2000  # 512 px noisy JPEGs: several seconds to decode on 2 cores

# test_ray's module fixture: a local cluster of 2 CPUs, stopped (with its raylet) when this module ends.
ray_cluster = test_ray.ray_cluster


# ----------------------------------------------------------------------------- fixtures

def ray_processes_under(base: Path) -> list[str]:
    """Command lines naming a Ray folder of this session (test_ray's mktemp("ray")): the cluster's
    raylet, GCS server, workers and helpers."""
    ray_folder = re.compile(rf"{re.escape(str(base))}/ray\d+/")
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        if ray_folder.search(command):
            found.append(command[:200])
    return found


@pytest.fixture(scope="module", autouse=True)
def no_raylet_left(tmp_path_factory):
    """Set up before `ray_cluster`, so torn down after it: no process of the cluster is left."""
    base = tmp_path_factory.getbasetemp()
    yield
    wait_until(lambda: not ray_processes_under(base), 30, "the cluster's raylet and workers to exit")


def noisy_jpeg(mean: int, size: int, rng) -> bytes:
    buffer = io.BytesIO()
    pixels = np.clip(mean + rng.normal(0, 30, (size, size)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def make_big_folder(root: Path, per_class: int, size: int = 512) -> Path:
    """A Kermany-style folder of `per_class` noisy `size` px JPEGs a class (the same bytes in each)."""
    rng = np.random.default_rng(0)
    for folder, mean in (("NORMAL", 60), ("PNEUMONIA", 200)):
        data = noisy_jpeg(mean, size, rng)
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            name = f"IM-{i // 2:04d}-{i % 2 + 1:04d}.jpeg" if folder == "NORMAL" else f"person{i // 2}_virus_{i}.jpeg"
            (root / folder / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def app(tmp_path_factory, ray_cluster):
    """The dashboard on a free port, training on the Ray cluster, with its own runs, uploads and (fresh)
    dataset cache folders, reading server paths only inside its data folder."""
    folder = tmp_path_factory.mktemp("scale")
    data = folder / "data"
    small = make_chest_folder(data / "xrays", n_patients=16, images_per_patient=4)  # ~11 steps an epoch
    big = make_big_folder(data / "many", BIG_FOLDER_IMAGES_PER_CLASS)
    env = {"CXR_RUNS_DIR": str(folder / "runs"), "CXR_UPLOADS_DIR": str(folder / "uploads"),
           "CXR_CACHE_DIR": str(folder / "cache"), "CXR_DATA_ROOT": str(data), "CXR_RAY_ADDRESS": ray_cluster}
    with serve_dashboard(folder / "streamlit.log", env) as url:
        yield {"url": url, "runs_dir": folder / "runs", "cache_dir": folder / "cache", "small": small, "big": big,
               "log": folder / "streamlit.log"}


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser, app):
    """A fresh browser session at the root URL."""
    with app_tab(browser, app["url"]) as tab:
        yield tab


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    KEY_SHOTS.mkdir(exist_ok=True)
    return folder


@contextmanager
def step(page, app, shots: Path, name: str):
    """On failure: a screenshot FAILED_<name>.png (here and in /tmp/scale_shots/) and the server's log;
    on success the FAILED_ screenshot of an earlier attempt is removed from /tmp/scale_shots/."""
    failed = shots / f"FAILED_{name}.png"
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(failed), full_page=True)
            shutil.copy(failed, KEY_SHOTS)
        finally:
            print(app["log"].read_text()[-4000:])
        raise
    (KEY_SHOTS / failed.name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- checks

def assert_no_error(page) -> None:
    """No Streamlit exception box and no error alert on the page."""
    exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    assert not exceptions, f"exception on the page: {exceptions}"
    assert not errors, f"error message(s) on the page: {errors}"


def snap(page, shots: Path, name: str, key: bool = True) -> None:
    """A screenshot of the whole page after checking it shows no error (as browser_support.snap, which
    writes to the project's test-artifacts/ instead)."""
    settle(page)
    assert_no_error(page)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height + 160)})
    page.wait_for_timeout(800)  # charts and tables re-layout to the new size
    settle(page)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)
    if key:
        shutil.copy(shots / f"{name}.png", KEY_SHOTS)




# ----------------------------------------------------------------------------- 1. a sweep on the cluster

def choose_folder(page, path: Path, image_size: str | None = None) -> None:
    """On the Dataset page: the folder source and its path, loaded (and an image size, applied)."""
    enter_folder(page, path)
    settle(page)
    if image_size:
        choose(page, "Image size (px)", image_size)
        page.get_by_role("button", name=re.compile("Apply")).click()
        settle(page)


def enter_folder(page, path: Path) -> None:
    """On the Dataset page: the folder source and its path, entered; its loading starts."""
    page.get_by_text("Folder on the server", exact=True).click()
    settle(page)
    field = page.get_by_label("Path on the server", exact=True)
    field.fill(str(path))
    field.press("Enter")


def edit_base(page, **changes) -> None:
    page.get_by_text(re.compile("^Base settings \\(JSON\\)")).click()
    editor = page.locator('[data-testid="stTextArea"] textarea').first
    base = json.loads(editor.input_value())
    base.update(changes)
    editor.fill(json.dumps(base, indent=2))
    editor.press("Control+Enter")
    settle(page)


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]').filter(has_text=re.compile(f"^{re.escape(label)}$")))
    return metric.locator('[data-testid="stMetricValue"]').first.inner_text().strip()


def test_a_sweep_with_successive_halving_trains_on_the_ray_cluster(page, app, shots):
    host = socket.gethostname()
    with step(page, app, shots, "sweep_setup"):
        go_to(page, "Dataset", "Dataset")
        choose_folder(page, app["small"], image_size="32")
        page.get_by_text(re.compile(r"Ready to train on: .*\(xrays\).*32 px")).wait_for()
        snap(page, shots, "01_dataset_small_folder", key=False)

        go_to(page, "Sweeps", "Sweeps")
        choose(page, "Start from", "Default settings")
        edit_base(page, arch="seed_cnn", epochs=3, batch_size=8, early_stopping=False)
        page.get_by_text(re.compile(r"Base: seed_cnn · 3 epochs · batch 8 .*\(xrays\)")).first.wait_for()
        choose(page, "Setting 1", "learning_rate")
        type_into(page, "Values of setting 1 (comma-separated)", ", ".join(RATES))
        type_into(page, "Seeds per point", "1")
        choose(page, "Successive halving (stop the worst runs early)", "rate 2: the best half go on at each rung")
        type_into(page, "Epochs before the first rung", "1")
        type_into(page, "Sweep name", "scale-sweep")
        assert (metric_value(page, "Points"), metric_value(page, "Runs")) == ("3", "3")
        note = page.get_by_text(re.compile(r"^Successive halving: at most the full grid")).first.inner_text()
        share = re.search(r"at most the full grid \(9 epochs\), about (\d+)% of it", note)
        assert share and 0 < int(share.group(1)) < 100, note
        snap(page, shots, "02_sweep_form_halving")

    with step(page, app, shots, "sweep_done"):
        page.get_by_role("button", name=re.compile("Launch sweep")).click()
        page.get_by_text(re.compile("3 of 3 runs ended")).first.wait_for(timeout=SWEEP_TIMEOUT_MS)
        settle(page)
        runs = {run.config()["learning_rate"]: run for run in RunStore(app["runs_dir"]).list()}
        assert sorted(runs) == sorted(float(rate) for rate in RATES)
        assert [run.state() for run in runs.values()] == ["done"] * 3
        assert all(run.status()["node"]["backend"] == "ray" for run in runs.values())
        halted = read_record(runs[HOPELESS].path).get("halted")
        assert halted and halted["epoch"] == 1, read_record(runs[HOPELESS].path)
        halted_at = {rate: (read_record(run.path).get("halted") or {}).get("epoch") for rate, run in runs.items()}
        stopped = [rate for rate, epoch in halted_at.items() if epoch]

        # The caption under the results: how many points were stopped, at which epochs.
        summary = page.get_by_text(re.compile(r"of 3 points stopped early by successive halving")).first
        text = summary.inner_text()
        assert text.startswith(f"{len(stopped)} of 3 points stopped early by successive halving "
                               "(rate 2: the best half go on at epochs 1, 2), at epoch"), text
        # The results table: each stopped point's row says at which epoch (the hopeless one's: 1).
        table = page.locator('[data-testid="stDataFrame"]').first
        shown = dict(zip(column(page, table, "learning_rate"), column(page, table, "stopped early (halving)")))
        assert shown == {f"{rate:g}": f"1 of 1, at epoch {epoch}" if epoch else "—"
                         for rate, epoch in halted_at.items()}, shown
        snap(page, shots, "03_sweep_results_halving")

    with step(page, app, shots, "runs_node"):
        go_to(page, "Runs & Compare", "Runs & Compare")
        table = page.locator('[data-testid="stDataFrame"]').first
        names = column_once(page, table, "name", lambda shown: len(shown) == 3)
        nodes = column(page, table, "node")
        assert len(names) == 3 and nodes == [host] * 3, list(zip(names, nodes))
        snap(page, shots, "04_runs_node_column")


# ----------------------------------------------------------------------------- 2. cancel a dataset load

def cache_files(app) -> set[str]:
    folder = app["cache_dir"]
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def test_b_a_dataset_load_can_be_cancelled_and_started_again(page, app, shots):
    with step(page, app, shots, "dataset_cancel"):
        go_to(page, "Dataset", "Dataset")
        before = cache_files(app)
        enter_folder(page, app["big"])
        bar = page.locator('[data-testid="stProgress"]').filter(has_text=re.compile("Decoding images"))
        bar.first.wait_for()
        page.screenshot(path=str(shots / "05_dataset_loading.png"))
        shutil.copy(shots / "05_dataset_loading.png", KEY_SHOTS)
        page.get_by_role("button", name="Cancel loading").click()
        page.get_by_text(re.compile("loading was cancelled")).first.wait_for()
        settle(page)
        assert "Nothing was lost" in page.locator('[data-testid="stAlertContentInfo"]').first.inner_text()
        assert not page.get_by_text(re.compile("Ready to train on")).count()
        assert cache_files(app) == before, "the cancelled load left files in the dataset cache"
        snap(page, shots, "06_dataset_cancelled")

    with step(page, app, shots, "dataset_load_again"):
        page.get_by_role("button", name="Load it").click()
        page.get_by_text(re.compile(r"Ready to train on: .*\(many\)")).wait_for()
        settle(page)
        assert metric_value(page, "Images") == f"{2 * BIG_FOLDER_IMAGES_PER_CLASS:,}"
        page.get_by_text("Overlap check passed").wait_for()
        # The decoded images and their sidecar (besides the split files under splits/).
        added = sorted(name for name in cache_files(app) - before if "/" not in name)
        assert len(added) == 2 and added[1] == added[0].replace(".meta.npz", ".npy") != added[0], added
        snap(page, shots, "07_dataset_loaded_after_cancel")
