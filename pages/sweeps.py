"""Sweeps: the ablation table in one click. Vary one or two settings over a list of values, repeat
every point over seeds or patient-grouped k-fold cross-validation, and read mean ± std per point
as a table and a chart with error bars. Also: export a sweep as a zip, and import runs or sweeps.

Runs standalone too (`streamlit run pages/sweeps.py`); the dashboard adds it to its navigation.
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run pages/sweeps.py` puts only pages/ on the path
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.errors import StreamlitAPIException  # noqa: E402

from core.present import (
    compare,  # noqa: E402
    estimate,  # noqa: E402
    forms,  # noqa: E402
)
from core.present import sweeps as sweep_view  # noqa: E402
from core.settings.config import TrainConfig  # noqa: E402
from core.settings.recipes import recipe  # noqa: E402
from core.store.portable import ImportRefused, import_archive  # noqa: E402
from core.store.runs import ACTIVE_STATES  # noqa: E402
from core.store.sweeps import (  # noqa: E402
    Sweep,
    SweepAxis,
    list_sweeps,
    load_sweep,
    submit_sweep,
    sweep_results,
)
from pages import common  # noqa: E402

VIEW_KEY = "sweep_view_id"
LAUNCHED_KEY = "sweep_launched_id"  # the sweep launched here: its progress shows under the button
BASE_JSON_KEY = "sweep_base_json"
BASE_ORIGIN_KEY = "sweep_base_origin"
# The Train page's current config as a dict, when it publishes one (see the report / pages/train.py).
TRAIN_CONFIG_KEY = "train_config"
# What pages/runs.py reads as the runs to compare.
COMPARE_KEY = "runs_compare_ids"
MAX_COMPARE = 6
OTHER_SETTING = "other setting…"
BASE_SOURCES = {"train": "The Train page's current settings", "recipe": "The recommended recipe",
                "defaults": "Default settings", "run": "An existing run's settings"}
REPEAT_MODES = {"seeds": "Seeds (same split, different initialisation)",
                "cv": "k-fold cross-validation (grouped by patient)"}
DEFAULT_AXES = {1: "dropout", 2: "arch_params.activation"}


# ----------------------------------------------------------------------------- the base config

def base_sources(store) -> list[str]:
    sources = ["train"] if st.session_state.get(TRAIN_CONFIG_KEY) else []
    sources += ["recipe", "defaults"]
    return sources + (["run"] if store.list() else [])


def starting_base(source: str, run=None) -> dict:
    """The base config for a source: the Train form, the recipe or the defaults (both on the
    dataset chosen on the Dataset page, if one was chosen), or a run's own config."""
    if source == "train":
        config = st.session_state[TRAIN_CONFIG_KEY]
        return sweep_view.base_from_run(config.to_dict() if hasattr(config, "to_dict") else config)
    if source == "run":
        return sweep_view.base_from_run(run.config())
    chosen = st.session_state.get(common.DATASET_SETTINGS_KEY)  # set by the Dataset page
    task = (chosen or {}).get("task", "binary")
    start = recipe(task) if source == "recipe" else TrainConfig()
    return sweep_view.base_with_dataset(start, chosen) if chosen else start.to_dict()


def reload_base() -> None:
    st.session_state.pop(BASE_ORIGIN_KEY, None)


def base_editor(store) -> dict | None:
    """Pick where the base settings come from, then show them as editable JSON. None if invalid."""
    sources = base_sources(store)
    if st.session_state.get("sweep_base_source") not in sources:
        st.session_state["sweep_base_source"] = sources[0]
    cols = st.columns([2, 3])
    source = cols[0].selectbox("Start from", sources, key="sweep_base_source", format_func=BASE_SOURCES.get)
    run = None
    if source == "run":
        runs = {r.id: r for r in store.list()}
        run_id = cols[1].selectbox("Run", list(runs), key="sweep_base_run",
                                   format_func=lambda r: f"{common.run_name(runs[r])} ({r})")
        run = runs[run_id]
    try:
        start = starting_base(source, run)
    except (TypeError, ValueError) as exc:
        st.error(f"Those settings cannot be used as a base: {exc}")
        return None
    origin = json.dumps(start, sort_keys=True)
    # Reload the text only when the starting point changes, so edits survive reruns.
    if st.session_state.get(BASE_ORIGIN_KEY) != origin:
        st.session_state[BASE_JSON_KEY] = json.dumps(start, indent=2)
        st.session_state[BASE_ORIGIN_KEY] = origin
    with st.expander("Base settings (JSON): every run starts from these; edit any of them"):
        text = st.text_area("Base settings", key=BASE_JSON_KEY, height=320, label_visibility="collapsed")
        st.button("Reset to the chosen starting point", key="sweep_reset_base_button", on_click=reload_base)
    return parsed_base(text)


def parsed_base(text: str) -> dict | None:
    try:
        base = json.loads(text)
        if not isinstance(base, dict):
            raise ValueError("the base settings must be a JSON object ({...})")
        config = TrainConfig.from_dict(base)
    except json.JSONDecodeError as exc:
        st.error(f"The base settings are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
        return None
    except (TypeError, ValueError) as exc:
        st.error(f"The base settings are not valid: {exc}")
        return None
    st.caption(f"**Base:** {config.arch} · {config.epochs} epochs · batch {config.batch_size} · "
               f"{config.optimizer} lr {config.learning_rate:g} · "
               f"{forms.dataset_label(forms.dataset_settings_from_config(base))}")
    return base


# ----------------------------------------------------------------------------- axes and repeats

def load_preset(index: int) -> None:
    """When a common setting is picked, its usual values fill the values box (still editable)."""
    setting = st.session_state[f"sweep_axis{index}_setting"]
    if setting in sweep_view.PRESETS:
        st.session_state[f"sweep_axis{index}_values"] = sweep_view.PRESETS[setting]


def axis_inputs(index: int) -> tuple[str, str]:
    """(setting, values text) of one swept setting."""
    default = DEFAULT_AXES[index]
    common.init_widget(f"sweep_axis{index}_setting", default)
    common.init_widget(f"sweep_axis{index}_values", sweep_view.PRESETS[default])
    cols = st.columns([2, 3])
    setting = cols[0].selectbox(f"Setting {index}", [*sweep_view.PRESETS, OTHER_SETTING],
                                key=f"sweep_axis{index}_setting", on_change=load_preset, args=(index,))
    if setting == OTHER_SETTING:
        setting = cols[0].text_input(
            f"Name of setting {index}", key=f"sweep_axis{index}_other",
            placeholder="e.g. weight_decay or augmentation.zoom",
            help="Any run setting (see the base JSON); dotted names reach into arch_params and augmentation.")
    values = cols[1].text_input(
        f"Values of setting {index} (comma-separated)", key=f"sweep_axis{index}_values",
        help=sweep_view.PRESET_HELP.get(setting, "Numbers, true / false, none (= the default) or words; "
                                                  "a JSON list for list-valued settings."))
    return setting.strip(), values


def parsed_axes(raw: list[tuple[str, str]], base: dict) -> list[tuple[str, list]] | None:
    """Typed values per setting; every problem is shown, and None returned if there was one."""
    axes, ok = [], True
    for index, (setting, text) in enumerate(raw, 1):
        try:
            if not setting:
                raise ValueError("name the setting to vary")
            axes.append((setting, sweep_view.coerce_values(base, setting, sweep_view.parse_values(text))))
        except ValueError as exc:
            st.error(f"Setting {index} ({setting or '?'}): {exc}")
            ok = False
    if ok and len(axes) == 2 and axes[0][0] == axes[1][0]:
        st.error("The two swept settings must differ.")
        ok = False
    return axes if ok else None


def repeat_inputs() -> tuple[str, int]:
    common.init_widget("sweep_repeat_mode", "seeds")
    common.init_widget("sweep_seeds", 3)
    common.init_widget("sweep_folds", 5)
    cols = st.columns([3, 2])
    mode = cols[0].radio("Repeat every point over", list(REPEAT_MODES), key="sweep_repeat_mode",
                         format_func=REPEAT_MODES.get, horizontal=True,
                         help="One split decides nothing: repeats give each point a mean and a spread.")
    if mode == "seeds":
        count = cols[1].number_input("Seeds per point", 1, 10, step=1, key="sweep_seeds")
    else:
        count = cols[1].number_input("Folds (k)", 2, 10, step=1, key="sweep_folds",
                                     help="The test patients stay fixed; the rest is split into k folds.")
    return mode, int(count)


# ----------------------------------------------------------------------------- preview and launch

def planned_configs(base: dict, axes, mode: str, count: int) -> list[dict] | None:
    """Every run's config (cheap: no model is built); shows the error and returns None if one fails."""
    spec = sweep_view.sweep_spec("", base, axes, mode, count)
    try:
        sweep = Sweep(TrainConfig.from_dict(base), [SweepAxis(s, v) for s, v in axes],
                      repeats=spec["repeats"], cv_folds=spec["cv_folds"])
        return [config.to_dict() for config in sweep.configs()]
    except (TypeError, ValueError) as exc:
        st.error(f"Fix this before launching: {exc}")
        return None


def config_macs(config: dict) -> float | None:
    channels = 1 if config.get("color_mode", "grayscale") == "grayscale" else 3
    classes = 3 if config.get("task") == "subtype" else 2  # the last layer barely changes the cost
    try:
        return common.model_stats(config["arch"], int(config["image_size"]), channels, classes,
                                  json.dumps(config.get("arch_params") or {}, sort_keys=True))["macs"]
    except Exception:  # noqa: BLE001 - e.g. transfer weights missing: no cost, no scaled estimate
        return None


def preview(store, configs: list[dict], mode: str, count: int) -> None:
    points = len(configs) // count
    guess = estimate.estimate_sweep(configs, estimate.past_runs(store), macs_of=config_macs)
    cols = st.columns(3)
    cols[0].metric("Points", points)
    cols[1].metric("Runs", len(configs), help=f"{points} points × {count} {'seeds' if mode == 'seeds' else 'folds'}")
    known = guess.total_seconds is not None
    cols[2].metric("Estimated time", ("≈ " if guess.rough else "") + compare.format_seconds(guess.total_seconds)
                   if known else "after the first epoch")
    if not known:
        st.caption("Time: no finished run on this machine to learn from yet; the first run's live view "
                   "(Train page) shows the time left after its first epoch.")
    else:
        st.caption(f"About {compare.format_seconds(guess.total_seconds)} for {len(configs)} runs, one after "
                   f"another, {estimate.basis_text(guess.runs)} (less if early stopping ends runs sooner).")
    queued = len(common.active_runs(store))
    if queued:
        st.caption(f"{queued} run(s) already in the queue go first.")


def launch(spec: dict) -> None:
    try:
        with st.spinner("Checking the settings of every run…"):
            sweep = Sweep.from_dict(spec)  # validates every point (builds no model, but imports Keras)
            sweep_id = submit_sweep(common.job_manager(), sweep)
    except (TypeError, ValueError, KeyError) as exc:
        st.error(f"The sweep was not launched: {exc}")
        return
    st.session_state[VIEW_KEY] = st.session_state[LAUNCHED_KEY] = sweep_id


def new_sweep(store) -> None:
    base = base_editor(store)
    raw = [axis_inputs(1)]
    common.init_widget("sweep_two_axes", False)
    if st.checkbox("Vary a second setting too (a grid of both)", key="sweep_two_axes"):
        raw.append(axis_inputs(2))
    mode, count = repeat_inputs()
    common.init_widget("sweep_name", "")
    name = st.text_input("Sweep name", key="sweep_name", placeholder="e.g. dropout study")
    axes = parsed_axes(raw, base or {})
    if base is None or axes is None:
        return
    configs = planned_configs(base, axes, mode, count)
    if configs is None:
        return
    preview(store, configs, mode, count)
    if st.button("Launch sweep", type="primary", icon=":material/rocket_launch:", key="sweep_launch_button"):
        launch(sweep_view.sweep_spec(name, base, axes, mode, count))
    launched_progress(store)


def launched_progress(store) -> None:
    """The sweep launched here, right under the button: how many runs ended, live while it runs."""
    sweep_id = st.session_state.get(LAUNCHED_KEY)
    if not sweep_id:
        return
    try:
        record = load_sweep(store, sweep_id)
    except KeyError:  # deleted meanwhile
        st.session_state.pop(LAUNCHED_KEY, None)
        return
    active = any(run_state(store, e["run_id"]) in ACTIVE_STATES for e in record["runs"])
    st.fragment(launched_status, run_every=2.0 if active else None)(store, record)


def launched_status(store, record: dict) -> None:
    states = [run_state(store, entry["run_id"]) for entry in record["runs"]]
    active = sum(state in ACTIVE_STATES for state in states)
    done = states.count("done")
    ended = len(states) - active
    name = record.get("name") or record["id"]
    if active:
        st.progress(ended / max(1, len(states)),
                    text=f"Sweep {name}: {ended} of {len(states)} runs ended, {active} queued or running")
        st.caption("Its table and chart fill in under **Results** below.")
    else:
        st.success(f"Sweep {name} finished: {done} of {len(states)} runs done. Results below.")


# ----------------------------------------------------------------------------- import

def import_section(store) -> None:
    upload = st.file_uploader("A zip exported from CXR Lab (runs or a whole sweep)", type=["zip"],
                              key="sweep_import_upload_zip")
    if upload is not None and st.button("Import", icon=":material/upload:", key="sweep_import_button"):
        import_zip(store, upload.getvalue(), upload.name)


def import_zip(store, content: bytes, file_name: str) -> None:
    try:
        with tempfile.TemporaryDirectory() as folder, st.spinner("Checking every file of the zip…"):
            path = Path(folder) / "import.zip"
            path.write_bytes(content)
            result = import_archive(store, path)
    except ImportRefused as exc:
        st.error(f"{file_name} was not imported: {exc}")
        return
    except OSError as exc:
        st.error(f"{file_name} could not be read: {exc}")
        return
    if result.sweep_id:
        st.session_state[VIEW_KEY] = result.sweep_id
    st.success(f"{file_name}: {sweep_view.import_summary(result)}")


# ----------------------------------------------------------------------------- the sweep view

def sweep_picker(sweeps: list[dict]) -> dict:
    records = {record["id"]: record for record in sweeps}
    if st.session_state.get(VIEW_KEY) not in records:
        st.session_state[VIEW_KEY] = sweeps[0]["id"]
    sweep_id = st.selectbox("Sweep", list(records), key=VIEW_KEY,
                            format_func=lambda s: sweep_view.sweep_label(records[s]))
    return records[sweep_id]


def results(store, record: dict, metric: str, live: bool) -> None:
    """Progress, the table and the chart; re-drawn every 2 s while runs of the sweep are active."""
    settings = [axis["setting"] for axis in record["axes"]]
    frame = sweep_view.results_frame(sweep_results(store, record["id"]), settings)
    counts = sweep_view.progress_counts(frame)
    if live and not counts["active"]:
        st.rerun()  # the sweep just ended: stop the timer and refresh the whole page
    cols = st.columns(4)
    cols[0].metric("Runs", counts["runs"])
    cols[1].metric("Done", counts["done"])
    cols[2].metric("Queued or running", counts["active"])
    cols[3].metric("Failed or cancelled", counts["stopped"])
    ended = counts["done"] + counts["stopped"]
    st.progress(ended / max(1, counts["runs"]), text=f"{ended} of {counts['runs']} runs ended")
    st.dataframe(sweep_view.display_frame(frame, settings), hide_index=True, width="stretch",
                 key="sweep_results_table")
    if frame[f"{metric}_mean"].notna().any():
        st.altair_chart(sweep_view.sweep_chart(frame, record["axes"], metric), width="stretch")
    elif counts["done"]:
        st.caption(f"No finished run of this sweep recorded {sweep_view.METRIC_TITLES[metric].lower()} "
                   "(runs from before it was measured): pick another metric.")
    else:
        st.caption("The chart appears when the first run of the sweep finishes.")
    st.download_button("Results table (CSV)", frame.to_csv(index=False), file_name=f"{record['id']}.csv",
                       mime="text/csv", icon=":material/download:", key="sweep_results_csv_button")


def run_state(store, run_id: str) -> str:
    try:
        return store.get(run_id).state()
    except KeyError:
        return "deleted"


def member_table(store, record: dict) -> pd.DataFrame:
    rows = []
    for entry in record["runs"]:
        try:
            described = store.get(entry["run_id"]).describe()
        except KeyError:
            described = {"state": "deleted"}
        repeat = f"fold {entry['fold'] + 1}" if record.get("cv_folds") else f"seed {entry['seed']}"
        rows.append({"run_id": entry["run_id"], "state": described.get("state"),
                     "point": ", ".join(f"{k}={sweep_view.value_label(v)}" for k, v in entry["point"].items()),
                     "repeat": repeat, "test_accuracy": described.get("test_accuracy")})
    return pd.DataFrame(rows, columns=["run_id", "state", "point", "repeat", "test_accuracy"])


def compare_section(store, record: dict) -> None:
    """The sweep's runs, and a way into Runs & Compare with some of them picked."""
    table = member_table(store, record)
    with st.expander(f"The {len(table)} runs of this sweep"):
        st.dataframe(table, hide_index=True, key="sweep_members_table")
    present = table[table["state"] != "deleted"]
    labels = dict(zip(present["run_id"], present["point"] + " · " + present["repeat"]))
    key = f"sweep_compare_{record['id']}"
    # Offer the first finished run of each point (one line per point), and keep offering it as
    # runs finish until the user changes the pick.
    default = present[present["state"] == "done"].drop_duplicates("point")["run_id"].tolist()[:MAX_COMPARE]
    if key not in st.session_state or st.session_state[key] == st.session_state.get(f"{key}_offered"):
        st.session_state[key] = st.session_state[f"{key}_offered"] = default
    st.session_state[key] = [r for r in st.session_state[key] if r in labels]  # runs deleted meanwhile
    picked = st.multiselect(f"Runs to compare (2 to {MAX_COMPARE})", list(labels), key=key,
                            format_func=lambda r: labels.get(r, r), max_selections=MAX_COMPARE)
    if st.button("Compare them on Runs & Compare", icon=":material/leaderboard:", key="sweep_compare_button",
                 disabled=len(picked) < 2):
        st.session_state[COMPARE_KEY] = list(picked)
        try:
            st.switch_page(common.PAGE_PATHS["runs"])
        except StreamlitAPIException:  # this page runs on its own, outside the dashboard
            st.info("The runs are picked: open **Runs & Compare** to see them side by side.")


def stop_section(store, record: dict) -> None:
    """Cancel the sweep's queued runs and stop its running one after the current batch."""
    if st.button("Stop this sweep", icon=":material/stop_circle:", key="sweep_stop_button"):
        manager = common.job_manager()
        active = [entry["run_id"] for entry in record["runs"] if run_state(store, entry["run_id"]) in ACTIVE_STATES]
        stopped = [run_id for run_id in active if manager.cancel(run_id)]
        if stopped:
            st.toast(f"Stopping {len(stopped)} run(s) of the sweep…")
        else:
            st.warning("None of its runs is queued or running any more.")


def export_section(store, record: dict, active: bool) -> None:
    st.download_button("Export the whole sweep (zip)", lambda: sweep_view.sweep_zip_bytes(store, record["id"]),
                       file_name=f"{record['id']}.zip", mime="application/zip", icon=":material/archive:",
                       key="sweep_export_button",
                       help="Every run (settings, metrics, predictions, model) and the sweep itself, "
                            "to import into another CXR Lab.")
    if active:
        st.caption("Runs are still training: the zip holds what has finished so far.")


def view(store) -> None:
    sweeps = list_sweeps(store)
    if not sweeps:
        st.info("No sweeps yet: set one up above and press **Launch sweep**, or import a sweep zip.",
                icon=":material/info:")
        return
    record = sweep_picker(sweeps)
    axes = " × ".join(f"{a['setting']} ({', '.join(sweep_view.value_label(v) for v in a['values'])})"
                      for a in record["axes"])
    repeats = f"{record['cv_folds']}-fold cross-validation" if record.get("cv_folds") else \
        f"{record.get('repeats', 1)} seed(s) per point"
    st.caption(f"`{record['id']}` · {axes} · {repeats}")
    common.init_widget("sweep_metric", "test_accuracy")
    metric = st.selectbox("Metric", sweep_view.SWEEP_METRICS, key="sweep_metric",
                          format_func=sweep_view.METRIC_TITLES.get,
                          help="A score, or what the runs used: peak memory of the training process, "
                               "training speed or wall time (e.g. batch size against memory and speed).")
    active = any(run_state(store, entry["run_id"]) in ACTIVE_STATES for entry in record["runs"])
    st.fragment(results, run_every=2.0 if active else None)(store, record, metric, active)
    if active:
        stop_section(store, record)
    compare_section(store, record)
    export_section(store, record, active)


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Sweeps")
    st.caption("Vary one or two settings, repeat every point over seeds or folds, and read the "
               "ablation table with error bars.")
    store = common.run_store()
    with st.container(border=True):
        st.subheader("New sweep")
        new_sweep(store)
    with st.expander("Import runs or a sweep (zip)"):
        import_section(store)
    st.subheader("Results")
    view(store)


main()
