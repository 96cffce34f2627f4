"""Shared Streamlit helpers: the cached job manager and datasets, the settings kept across page
changes and browser reloads, and the set-up every page needs (entering through app.py).

TensorFlow is never imported here at module level: `core.workers.manager` and `core.ml.training` only import
it inside functions, and `core.ml.models` is imported inside cached functions.
"""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import astuple

import streamlit as st

from core.ast_guard import guard_ast_parsing
from core.data.formats import FormatOptions
from core.present import forms
from core.present import runs as runs_view
from core.progress import ProgressFn, fraction
from core.present.session_keys import DATASET_SETTINGS_KEY, is_kept, is_saved
from core.settings.paths import PROJECT_ROOT
from core.store import ui_state
from core.store.runs import RunStore
from core.workers import service
from ui import streamlit_patches

RESTORED_KEY = "_settings_restored"
SAVED_SNAPSHOT_KEY = "_settings_saved"
# A run's config handed from "Re-run" (Runs page) to the Train form.
RERUN_CONFIG_KEY = "rerun_config"
PAGE_PATHS = {"home": "pages/home.py", "dataset": "pages/dataset.py", "train": "pages/train.py",
              "sweeps": "pages/sweeps.py", "runs": "pages/runs.py", "evaluate": "pages/evaluate.py",
              "diagnose": "pages/diagnose.py"}


# ----------------------------------------------------------------------------- process set-up

def limit_server_paths_when_shared() -> None:
    """A dashboard listening beyond this machine (e.g. `make run HOST=0.0.0.0`) reads server paths
    only inside the data root: CXR_DATA_ROOT, by default data/ in the project."""
    address = (st.get_option("server.address") or "").strip("[]")
    local = address == "localhost" or address == "::1" or address.startswith("127.")
    if not local and "CXR_DATA_ROOT" not in os.environ:
        os.environ["CXR_DATA_ROOT"] = str(PROJECT_ROOT / "data")


guard_ast_parsing()  # the server did it already (core/workers/service.py); not so under AppTest
streamlit_patches.install()  # so did app.py's server
limit_server_paths_when_shared()


# ----------------------------------------------------------------------------- entering through app.py

_app_run = threading.local()  # one script thread per browser session


@contextmanager
def running_through_app():
    """app.py runs the chosen page inside this."""
    _app_run.active = True
    try:
        yield
    finally:
        _app_run.active = False


def enter_through_app() -> None:
    """The first line of every page script: a page that Streamlit ran on its own runs through app.py.

    Until a script has called st.navigation, Streamlit takes the pages/ folder beside app.py for an
    old-style multipage app and runs a linked page's file alone: the first view of a freshly started
    server opened on a page's link, and every AppTest run. app.py then runs in its place, in this same
    script run (so a click that started it is not lost): its st.navigation switches that mode off for
    the process, draws the sidebar, puts back the user's settings and runs this page inside it.
    """
    if getattr(_app_run, "active", False):
        return
    app_py = PROJECT_ROOT / "app.py"
    code = compile(app_py.read_text(encoding="utf-8"), str(app_py), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(app_py)})  # noqa: S102 - the app's own main script
    st.stop()  # the page ran inside app.py


# ----------------------------------------------------------------------------- cached resources

def resume_runs(run_ids: list[str]) -> tuple[list[str], list[str]]:
    """Queue runs again to go on from their last completed epoch: (resumed ids, problems)."""
    return runs_view.resume_runs(run_ids, job_manager().resume)


def job_manager():
    """The process-wide job manager for the current runs folder (`CXR_RUNS_DIR` or runs/): the one the
    server started with (core/workers/service.py), or started now (under AppTest)."""
    try:
        return service.shared_manager()
    except (ConnectionError, ValueError) as exc:  # e.g. $CXR_RAY_ADDRESS names no reachable cluster
        st.error(f"No runs can be trained: {exc}", icon=":material/cloud_off:")
        st.stop()


def run_store() -> RunStore:
    return job_manager().store


@st.cache_data(show_spinner=False, max_entries=64)
def model_measures(arch: str, image_size: int, channels: int, num_classes: int, params_json: str,
                   dropout: float | None = None) -> dict:
    """{"stats": parameter counts and MACs per image, "layers": the per-layer table} of the model these
    settings build (imports Keras; a transfer base is measured without downloading its weights).
    Plain data only: the model itself must not outlive the script run."""
    from core.ml import models
    model = models.build_to_measure(arch, image_size, channels, num_classes, json.loads(params_json), dropout)
    return {"stats": models.model_stats(model), "layers": models.layer_table(model)}


def model_stats(arch: str, image_size: int, channels: int, num_classes: int, params_json: str,
                dropout: float | None = None) -> dict:
    """Parameter counts and MACs per image of the model these settings build."""
    return model_measures(arch, image_size, channels, num_classes, params_json, dropout)["stats"]


def progress_bar(bar) -> ProgressFn:
    """The one adapter of core's progress callback (core/progress.py) to a Streamlit progress bar:
    its message as the bar's text, its share done as the bar's length."""
    return lambda done, total, message: bar.progress(fraction(done, total), text=message)


def decode_into_cache(settings: dict, progress: ProgressFn) -> None:
    """Decode the dataset of `settings` into the disk cache, reporting to `progress`; quick
    when it is there already. A Streamlit rerun or Stop raised from `progress` ends the decoding and
    leaves no partial cache file (core.data.datasets cleans up on any exit)."""
    from core.data import datasets as data_lib
    source, path, task, image_size, color_mode, options = dataset_args(settings)
    data_lib.load_dataset(source, path or None, task, image_size, 1 if color_mode == "grayscale" else 3,
                          progress=progress, options=FormatOptions(*options))


@st.cache_resource(show_spinner=False, max_entries=4)
def load_dataset(source: str, path: str, task: str, image_size: int, color_mode: str, options: tuple = ()):
    """A decoded dataset (its images memory-mapped from the disk cache, which training processes share;
    raises core.data.datasets.DataError for unusable input). `options`: a format's settings, in
    FormatOptions' order."""
    from core.data import datasets as data_lib
    channels = 1 if color_mode == "grayscale" else 3
    return data_lib.load_dataset(source, path or None, task, int(image_size), channels,
                                 options=FormatOptions(*options))


@st.cache_resource(show_spinner=False, max_entries=8)
def load_split(source: str, path: str, task: str, image_size: int, color_mode: str, options: tuple,
               val_fraction: float, test_fraction: float, seed: int, own: bool):
    from core.data.splits import make_split
    dataset = load_dataset(source, path, task, image_size, color_mode, options)
    return make_split(dataset, val_fraction, test_fraction, int(seed), use_own_split=own)


def dataset_args(settings: dict) -> tuple:
    """(source, path, task, image size, colour mode, a format's options): what identifies a loaded dataset."""
    options = astuple(FormatOptions.from_settings(settings))
    return (settings["data_source"], settings.get("data_path") or "", settings["task"],
            int(settings["image_size"]), settings["color_mode"], options)


def dataset_and_split(settings: dict):
    """(Dataset, Split) for dataset settings, from the in-memory cache when possible."""
    args = dataset_args(settings)
    dataset = load_dataset(*args)
    split = load_split(*args, float(settings["val_fraction"]), float(settings["test_fraction"]),
                       int(settings["split_seed"]), settings["split"] == "own")
    return dataset, split


@st.cache_resource(show_spinner=False, max_entries=2)
def run_dataset(config_json: str):
    """The dataset a run was trained on (for its images), by the run's config."""
    settings = forms.dataset_settings_from_config(json.loads(config_json))
    return dataset_and_split(settings)[0]


# ----------------------------------------------------------------------------- session state

def dataset_settings() -> dict:
    """The dataset chosen on the Dataset page (defaults: the built-in chest X-rays)."""
    settings = st.session_state.get(DATASET_SETTINGS_KEY)
    if settings is None or set(settings) != set(forms.DATASET_FIELDS):  # none yet, or saved by an older version
        st.session_state[DATASET_SETTINGS_KEY] = forms.complete_dataset_settings(settings)
    return st.session_state[DATASET_SETTINGS_KEY]


def init_widget(key: str, value) -> None:
    """Give a widget its starting value through session state (set once, then the widget owns it)."""
    if key not in st.session_state:
        st.session_state[key] = value


def keep_settings() -> None:
    """Called by app.py before every page: put back what this user set before a reload (once per
    session), and re-assign the widget keys, because Streamlit forgets a widget's value when its page
    is not shown."""
    state = st.session_state
    if RESTORED_KEY not in state:
        state[RESTORED_KEY] = True
        for key, value in ui_state.load().items():
            if is_saved(key) and key not in state:
                state[key] = value
    for key in [k for k in state.keys() if is_kept(k)]:
        state[key] = state[key]


def save_settings() -> None:
    """Write the saved settings to disk when they changed (app.py calls it after every page run)."""
    state = st.session_state
    saved = {key: state[key] for key in state.keys() if is_saved(key) and ui_state.is_plain(state[key])}
    if saved != state.get(SAVED_SNAPSHOT_KEY):
        ui_state.save(saved)
        state[SAVED_SNAPSHOT_KEY] = saved


# ----------------------------------------------------------------------------- drawing

def show_chart(chart, where=None) -> None:
    """Draw an Altair chart at full width and at the height its spec asks for."""
    from core.present.charts import display_height
    (where or st).altair_chart(chart, width="stretch", height=display_height(chart))


def follow_run_link(runs, linked_key: str):
    """The run a ?run=<id> link names (the Runs page's Evaluate and Diagnose buttons), once per link:
    after that the page's boxes are the user's again. `linked_key` remembers the link followed."""
    wanted = st.query_params.get("run")
    if wanted == st.session_state.get(linked_key):
        return None
    st.session_state[linked_key] = wanted
    return next((run for run in runs if run.id == wanted), None)


def link_to_run(run_id: str, linked_key: str) -> None:
    """Keep ?run= on the chosen run, so the address reopens it."""
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    st.session_state[linked_key] = run_id


def no_runs_yet(message: str = "No runs yet: go to **Train** to launch one.") -> None:
    st.info(message, icon=":material/info:")
    st.page_link(PAGE_PATHS["train"], label="Go to Train", icon=":material/model_training:")
