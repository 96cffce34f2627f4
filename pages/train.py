"""Train: set up a run (architecture and its parameters, optimisation, augmentation), see its size
and expected speed, launch it into the job queue and watch it train live (pages/train_live.py).

Every input is drawn from its setting's declaration (pages/widgets.py); this page says only which
settings appear in which group, and when."""
import json
import os

import streamlit as st

from core.data import datasets as data_lib
from core.present import compare, estimate, forms, train_view
from core.present import layers as layers_view
from core.settings.architectures import ARCHITECTURES
from core.settings.config import AUGMENTATION_SETTINGS, SETTINGS
from core.settings.recipes import recipe
from ui import common, layer_table, train_live, widgets

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

OPTIMISATION = ("optimizer", "learning_rate", "schedule", "weight_decay", "clipnorm", "label_smoothing", "loss",
                "ema_momentum")
OPTIMIZER_EXTRAS = {"sgd": ("momentum", "nesterov"), "rmsprop": ("momentum",)}
SCHEDULE_EXTRAS = {"step": ("decay_rate", "step_epochs"), "exponential": ("decay_rate", "step_epochs"),
                   "cosine": ("min_learning_rate",), "one_cycle": ("min_learning_rate",),
                   "plateau": ("min_learning_rate", "plateau_patience", "plateau_factor")}
TRAINING = ("epochs", "batch_size", "class_weights", "seed", "devices", "precision", "xla", "early_stopping",
            "restore_best", "monitor")
LOSS_EXTRAS = {"focal": ("focal_gamma",)}
EARLY_STOPPING_EXTRAS = ("patience",)
EXTRAS = (*OPTIMIZER_EXTRAS.values(), *SCHEDULE_EXTRAS.values(), *LOSS_EXTRAS.values(), EARLY_STOPPING_EXTRAS)
# Every TrainConfig setting this form shows (some only at times): what loading a saved config fills.
FORM_FIELDS = ("arch", "name", *OPTIMISATION, *TRAINING, "memory_cap_mb", "data_pipeline",
               *dict.fromkeys(name for names in EXTRAS for name in names))
PREFIX = train_view.PREFIX


# ----------------------------------------------------------------------------- starting points

def fill_form(config: dict) -> None:
    """Put a saved config into the form and the dataset settings (an on_click callback, so it
    runs before the widgets are drawn)."""
    for key, value in train_view.form_state(config, FORM_FIELDS).items():
        st.session_state[key] = value
    st.session_state[common.DATASET_SETTINGS_KEY] = forms.dataset_settings_from_config(config)
    for key in [k for k in st.session_state if str(k).startswith("ds_")]:
        del st.session_state[key]  # the Dataset page redraws its widgets from the new settings


def starting_point(store) -> None:
    """Start from the recommended recipe or from an earlier run's settings, then change one thing."""
    runs = store.list()[:50]
    cols = st.columns([2, 3, 1], vertical_alignment="bottom")
    cols[0].button("Load the recommended recipe", key="train_recipe_button", icon=":material/star:",
                   on_click=fill_form, args=(recipe(common.dataset_settings()["task"]).to_dict(),),
                   help="A deep BatchNorm CNN at 96 px with a one-cycle schedule: a good first run.")
    if runs:
        names = {r.id: f"{r.display_name()} ({r.id})" for r in runs}
        chosen = cols[1].selectbox("…or start from an earlier run's settings", list(names), index=None,
                                   format_func=names.get, key="train_from_run", placeholder="choose a run")
        if chosen:
            cols[2].button("Load its settings", key="train_from_run_button",
                           on_click=fill_form, args=(store.get(chosen).config(),))


# ----------------------------------------------------------------------------- the form

def model_inputs() -> dict:
    """Architecture, its own parameters and the dropout (a TrainConfig setting of its own)."""
    arch = widgets.setting_input(SETTINGS["arch"], PREFIX + "arch", format_func=lambda a: ARCHITECTURES[a].title)
    st.caption(ARCHITECTURES[arch].description)
    if arch == "cnn":
        cnn_preset()
    params = {p.name: p for p in ARCHITECTURES[arch].params}
    if not params:
        st.caption("This architecture has no parameters of its own.")
    values = widgets.inputs(params, list(params), train_view.param_prefix(arch), st.columns(3))
    arch_params, dropout = train_view.split_dropout(values)
    return {"arch": arch, "arch_params": arch_params, "dropout": dropout}


def cnn_preset() -> None:
    """The Configurable CNN's presets: choosing one fills its parameters; custom keeps what is typed."""
    state = st.session_state
    # before the selectbox is drawn: it says custom once a parameter differs from the preset's
    state[train_view.PRESET_KEY] = train_view.preset_choice(state.get(train_view.PRESET_KEY),
                                                            train_view.param_values_in(state, "cnn"))
    st.selectbox("Preset", train_view.preset_options(), format_func=train_view.preset_title,
                 key=train_view.PRESET_KEY, on_change=apply_cnn_preset,
                 help="A classic layout to start from; it fills the parameters below, which you can then change.")


def apply_cnn_preset() -> None:
    """Fill the Configurable CNN's parameter widgets from the chosen preset (a callback: it runs
    before the widgets are drawn)."""
    st.session_state.update(train_view.preset_state(st.session_state[train_view.PRESET_KEY]))


def optimisation_inputs() -> dict:
    values = widgets.inputs(SETTINGS, OPTIMISATION, PREFIX, st.columns(3))
    extras = (OPTIMIZER_EXTRAS.get(values["optimizer"], ()) + SCHEDULE_EXTRAS.get(values["schedule"], ())
              + LOSS_EXTRAS.get(values["loss"], ()))
    if extras:
        values.update(widgets.inputs(SETTINGS, extras, PREFIX, st.columns(3)))
    return values


def training_inputs() -> dict:
    cols = st.columns(4)
    values = widgets.inputs(SETTINGS, TRAINING, PREFIX, cols)
    if values["early_stopping"]:
        values.update(widgets.inputs(SETTINGS, EARLY_STOPPING_EXTRAS, PREFIX, cols[3:]))
    return values


def resource_inputs() -> dict:
    """Settings that do not change results: the memory cap of the run's training process, and
    whether it holds the training images in memory or streams them from the disk cache."""
    cap, pipeline = SETTINGS["memory_cap_mb"], SETTINGS["data_pipeline"]
    here = os.environ.get("CXR_MEMORY_CAP_MB") or "not set"
    cols = st.columns(2)
    return {cap.name: widgets.setting_input(cap, PREFIX + cap.name, cols[0],
                                            help=f"{cap.help} Here $CXR_MEMORY_CAP_MB is {here}."),
            pipeline.name: widgets.setting_input(pipeline, PREFIX + pipeline.name, cols[1],
                                                 label="Training images")}


def augmentation_inputs() -> dict:
    return widgets.inputs(AUGMENTATION_SETTINGS, AUGMENTATION_SETTINGS, train_view.AUGMENTATION_PREFIX,
                          st.columns(3))


# ----------------------------------------------------------------------------- before launch

def launch_preview(config, split, num_classes: int) -> None:
    """Parameter count, MACs, the per-layer table and the expected time of the configured run."""
    cols = st.columns(4)
    try:
        with st.spinner("Building the model to count its parameters…"):
            measures = common.model_measures(config.arch, config.image_size, config.channels, num_classes,
                                             json.dumps(config.arch_params, sort_keys=True), config.dropout)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built: still allow a look
        st.warning(f"The model could not be built to measure it: {exc}")
        measures = None
    stats = measures["stats"] if measures else None
    if stats:
        cols[0].metric("Trainable parameters", compare.format_count(stats["trainable_params"]))
        cols[1].metric("Total parameters", compare.format_count(stats["total_params"]))
        cols[2].metric("MACs per image", compare.format_count(stats["macs"]))
        caption = layers_view.counts_caption(config.arch, config.arch_params)
        if caption:
            st.caption(caption)
        layer_table.layers_expander(measures["layers"])
    images = {name: len(split.indices(name)) for name in ("train", "val", "test")}
    guess = estimate.estimate_run(config.to_dict(), estimate.past_runs(common.run_store()), images=images,
                                  macs=stats["macs"] if stats else None)
    cols[3].metric("Time per epoch", train_view.epoch_time(guess),
                   help="No finished run on this machine to learn from yet." if guess.seconds is None else
                   "Whole epochs (training and validation) of earlier finished runs on this machine.")
    st.caption(train_view.time_caption(guess, config.epochs, images["train"]))


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Train")
    rerun = st.session_state.pop(common.RERUN_CONFIG_KEY, None)
    if rerun:
        fill_form(rerun)  # before any widget is drawn, so the form shows the run's settings
        st.info(f"Loaded the settings of {rerun.get('name') or 'the chosen run'}: the same config and "
                "seed reproduce its metrics on CPU; change one thing to test it.")
    settings = common.dataset_settings()
    st.markdown(f"**Dataset:** {forms.dataset_label(settings)} · change it on the Dataset page.")
    try:
        dataset, split = common.dataset_and_split(settings)
    except data_lib.DataError as exc:
        st.error(f"The chosen dataset cannot be used: {exc}. Fix it on the Dataset page.")
        st.page_link(common.PAGE_PATHS["dataset"], label="Go to Dataset", icon=":material/folder_open:")
        return
    starting_point(common.run_store())
    with st.container(border=True):
        st.subheader("Model")
        model = model_inputs()
    with st.container(border=True):
        st.subheader("Optimisation")
        optimisation = optimisation_inputs()
    with st.container(border=True):
        st.subheader("Training")
        training = training_inputs()
        with st.expander("Resources: memory cap, where training images are held"):
            resources = resource_inputs()
    with st.expander("Augmentation (training images only)"):
        augmentation = augmentation_inputs()
    name = widgets.setting_input(SETTINGS["name"], PREFIX + "name", placeholder=f"e.g. {model['arch']}-baseline")
    try:
        config = forms.build_config(settings, {**model, **optimisation, **training, **resources,
                                               "name": name.strip(), "augmentation": augmentation})
    except (TypeError, ValueError) as exc:
        st.error(f"Fix this setting before launching: {exc}")
        config = None
    if config is not None:
        st.session_state["train_config"] = config.to_dict()  # the Sweeps page starts from these settings
        launch_preview(config, split, len(dataset.class_names))
        if st.button("Launch", type="primary", icon=":material/rocket_launch:", key="launch_button"):
            train_live.launch(config)

    st.divider()
    st.subheader("Live view")
    train_live.interrupted_notice(common.run_store())
    st.fragment(train_live.live_view, run_every=1.0)()


main()
