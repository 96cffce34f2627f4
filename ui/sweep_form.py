"""The Sweeps page's "New sweep" form: the base settings, the swept settings, the repeats, the preview
(points, runs, time) and the launch with its progress. A component of pages/sweeps.py, not a page."""
import json

import streamlit as st

from core.present import estimate, sweep_plan
from core.present import runs as runs_view
from core.present import sweeps as sweep_view
from core.settings.config import SETTINGS
from core.store.sweeps import Sweep, load_sweep, submit_sweep
from ui import common, widgets

VIEW_KEY = "sweep_view_id"
LAUNCHED_KEY = "sweep_launched_id"  # the sweep launched here: its progress shows under the button
BASE_JSON_KEY = "sweep_base_json"
BASE_ORIGIN_KEY = "sweep_base_origin"
TRAIN_CONFIG_KEY = "train_config"  # the Train page's current config, when it publishes one
OTHER_SETTING = "other setting…"


def new_sweep(store) -> None:
    base = base_editor(store)
    raw = [axis_inputs(1)]
    common.init_widget("sweep_two_axes", False)
    if st.checkbox("Vary a second setting too (a grid of both)", key="sweep_two_axes"):
        raw.append(axis_inputs(2))
        common.init_widget("sweep_three_axes", False)
        if st.checkbox("Vary a third setting too (the chart draws one panel per its value)",
                       key="sweep_three_axes"):
            raw.append(axis_inputs(3))
    mode, count = repeat_inputs()
    halving = halving_inputs()
    common.init_widget("sweep_name", "")
    name = st.text_input("Sweep name", key="sweep_name", placeholder="e.g. dropout study")
    axes, problems = sweep_plan.parse_axes(raw, base or {})
    for problem in problems:
        st.error(problem)
    if base is None or problems:
        return
    try:
        configs = sweep_plan.planned_configs(base, axes, mode, count, *halving)
    except (TypeError, ValueError) as exc:
        st.error(f"Fix this before launching: {exc}")
        return
    show_preview(store, configs, mode, count)
    if st.button("Launch sweep", type="primary", icon=":material/rocket_launch:", key="sweep_launch_button"):
        launch(sweep_view.sweep_spec(name, base, axes, mode, count, *halving))
    launched_progress(store)


# ----------------------------------------------------------------------------- the base config

def base_editor(store) -> dict | None:
    """Pick where the base settings come from, then show them as editable JSON. None if invalid."""
    runs = {run.id: run for run in store.list()}
    sources = sweep_plan.base_sources(bool(st.session_state.get(TRAIN_CONFIG_KEY)), bool(runs))
    if st.session_state.get("sweep_base_source") not in sources:
        st.session_state["sweep_base_source"] = sources[0]
    cols = st.columns([2, 3])
    source = cols[0].selectbox("Start from", sources, key="sweep_base_source",
                               format_func=sweep_plan.BASE_SOURCES.get)
    run_config = None
    if source == "run":
        run_id = cols[1].selectbox("Run", list(runs), key="sweep_base_run",
                                   format_func=lambda r: f"{runs[r].display_name()} ({r})")
        run_config = runs[run_id].config()
    try:
        start = sweep_plan.starting_base(source, st.session_state.get(TRAIN_CONFIG_KEY),
                                         st.session_state.get(common.DATASET_SETTINGS_KEY), run_config)
    except (TypeError, ValueError) as exc:
        st.error(f"Those settings cannot be used as a base: {exc}")
        return None
    origin = json.dumps(start, sort_keys=True)
    if st.session_state.get(BASE_ORIGIN_KEY) != origin:  # a new starting point: edits survive reruns
        st.session_state[BASE_JSON_KEY] = json.dumps(start, indent=2)
        st.session_state[BASE_ORIGIN_KEY] = origin
    with st.expander("Base settings (JSON): every run starts from these; edit any of them"):
        text = st.text_area("Base settings", key=BASE_JSON_KEY, height=320, label_visibility="collapsed")
        st.button("Reset to the chosen starting point", key="sweep_reset_base_button", on_click=reload_base)
    try:
        base = sweep_plan.parse_base(text)
    except ValueError as exc:
        st.error(str(exc))
        return None
    st.caption(sweep_plan.base_summary(base))
    return base


def reload_base() -> None:
    st.session_state.pop(BASE_ORIGIN_KEY, None)


# ----------------------------------------------------------------------------- axes and repeats

def load_preset(index: int) -> None:
    """When a common setting is picked, its usual values fill the values box (still editable)."""
    setting = st.session_state[f"sweep_axis{index}_setting"]
    if setting in sweep_view.PRESETS:
        st.session_state[f"sweep_axis{index}_values"] = sweep_view.PRESETS[setting]


def axis_inputs(index: int) -> tuple[str, str]:
    """(setting, values text) of one swept setting."""
    default = sweep_plan.DEFAULT_AXES[index]
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


def repeat_inputs() -> tuple[str, int]:
    common.init_widget("sweep_repeat_mode", "seeds")
    common.init_widget("sweep_seeds", 3)
    common.init_widget("sweep_folds", 5)
    cols = st.columns([3, 2])
    mode = cols[0].radio("Repeat every point over", list(sweep_plan.REPEAT_MODES), key="sweep_repeat_mode",
                         format_func=sweep_plan.REPEAT_MODES.get, horizontal=True,
                         help="One split decides nothing: repeats give each point a mean and a spread.")
    if mode == "seeds":
        count = cols[1].number_input("Seeds per point", 1, 10, step=1, key="sweep_seeds")
    else:
        count = cols[1].number_input("Folds (k)", 2, 10, step=1, key="sweep_folds",
                                     help="The test patients stay fixed; the rest is split into k folds.")
    return mode, int(count)


def halving_inputs() -> tuple[int, int]:
    """(rate, epochs before the first rung) of successive halving; rate 0 is off."""
    cols = st.columns([3, 2])
    rate = widgets.setting_input(SETTINGS["halving_rate"], "sweep_halving_rate", cols[0],
                                 choices=list(sweep_plan.HALVING_CHOICES), format_func=sweep_plan.halving_label,
                                 label="Successive halving (stop the worst runs early)")
    first = SETTINGS["halving_min_epochs"].default
    if rate:
        first = widgets.setting_input(SETTINGS["halving_min_epochs"], "sweep_halving_min_epochs", cols[1])
    return int(rate), int(first)


# ----------------------------------------------------------------------------- preview and launch

def config_macs(config: dict) -> float | None:
    try:
        return common.model_stats(*sweep_plan.model_cost_args(config))["macs"]
    except Exception:  # noqa: BLE001 - e.g. transfer weights missing: no cost, no scaled estimate
        return None


def show_preview(store, configs: list[dict], mode: str, count: int) -> None:
    shown = sweep_plan.preview(configs, mode, count, estimate.past_runs(store), macs_of=config_macs)
    cols = st.columns(3)
    cols[0].metric("Points", shown.points)
    cols[1].metric("Runs", shown.runs, help=shown.runs_help)
    cols[2].metric("Estimated time", shown.time)
    st.caption(shown.time_note)
    if shown.halving_note:
        st.caption(shown.halving_note)
    note = sweep_plan.queue_note(len(runs_view.active_runs(store)))
    if note:
        st.caption(note)


def launch(spec: dict) -> None:
    try:
        with st.spinner("Checking the settings of every run…"):
            sweep = Sweep.from_dict(spec)  # validates every point (builds no model, but imports Keras)
            sweep_id = submit_sweep(common.job_manager(), sweep)
    except (TypeError, ValueError, KeyError) as exc:
        st.error(f"The sweep was not launched: {exc}")
        return
    st.session_state[VIEW_KEY] = st.session_state[LAUNCHED_KEY] = sweep_id


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
    st.fragment(launched_status, run_every=2.0 if sweep_view.is_active(store, record) else None)(store, record)


def launched_status(store, record: dict) -> None:
    share, text = sweep_view.launch_progress(record, sweep_view.run_states(store, record))
    if share is None:
        st.success(text)
        return
    st.progress(share, text=text)
    st.caption("Its table and chart fill in under **Results** below.")
