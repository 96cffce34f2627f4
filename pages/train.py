"""Train: set up a run (architecture and its parameters, optimisation, augmentation), see its size
and expected speed, launch it into the job queue and watch it train live."""
import json
import os

import streamlit as st

from core.data import datasets as data_lib
from core.present import charts, compare, estimate, forms
from core.settings.config import MONITORS, OPTIMIZERS, SCHEDULES
from core.workers.manager import stop_option
from pages import common

WATCH_KEY = "watch_run_id"
RESUME_ERROR_KEY = "resume_error"  # no form prefix: a message, never kept or saved with the settings
BATCH_SIZES = (8, 16, 32, 64, 128, 256)


# ----------------------------------------------------------------------------- model registry

@st.cache_resource(show_spinner="Loading the model zoo (TensorFlow)…")
def model_registry():
    """The architecture registry; importing it pulls in Keras, so it happens only here."""
    from core.ml import models
    return models.ARCHITECTURES


# ----------------------------------------------------------------------------- starting points

# TrainConfig field -> widget key of this page.
FIELD_KEYS = {
    "arch": "train_arch", "optimizer": "train_optimizer", "learning_rate": "train_lr",
    "schedule": "train_schedule", "weight_decay": "train_weight_decay", "clipnorm": "train_clipnorm",
    "label_smoothing": "train_label_smoothing", "momentum": "train_momentum", "nesterov": "train_nesterov",
    "decay_rate": "train_decay_rate", "step_epochs": "train_step_epochs", "min_learning_rate": "train_min_lr",
    "plateau_patience": "train_plateau_patience", "plateau_factor": "train_plateau_factor",
    "epochs": "train_epochs", "batch_size": "train_batch_size", "class_weights": "train_class_weights",
    "seed": "train_seed", "early_stopping": "train_early_stopping", "patience": "train_patience",
    "monitor": "train_monitor", "restore_best": "train_restore_best", "name": "train_name",
    "memory_cap_mb": "train_memory_cap",
}
FLOAT_FIELDS = ("learning_rate", "weight_decay", "clipnorm", "label_smoothing", "momentum", "decay_rate",
                "min_learning_rate", "plateau_factor")
AUGMENTATION_KEYS = {"rotation_degrees": "train_aug_rotation", "zoom": "train_aug_zoom",
                     "shift": "train_aug_shift", "horizontal_flip": "train_aug_flip",
                     "brightness": "train_aug_brightness", "contrast": "train_aug_contrast"}


def fill_form(config: dict) -> None:
    """Put a saved config into the form and the dataset settings (an on_click callback, so it
    runs before the widgets are drawn)."""
    registry = model_registry()
    for field, key in FIELD_KEYS.items():
        if field in config:
            value = config[field]
            st.session_state[key] = float(value) if field in FLOAT_FIELDS else value
    if st.session_state["train_batch_size"] not in BATCH_SIZES:
        st.session_state["train_batch_size"] = min(BATCH_SIZES, key=lambda b: abs(b - config["batch_size"]))
    for field, key in AUGMENTATION_KEYS.items():
        value = (config.get("augmentation") or {}).get(field, 0.0)
        st.session_state[key] = bool(value) if field == "horizontal_flip" else float(value)
    architecture = registry[config["arch"]]
    for param in architecture.params:
        value = (config.get("arch_params") or {}).get(param.name, param.default)
        if param.name == "dropout" and config.get("dropout") is not None:
            value = config["dropout"]
        kind = forms.param_widget(param)["kind"]
        converters = {"int_list": lambda v: ", ".join(str(x) for x in v), "int": int, "float": float}
        st.session_state[f"train_p_{config['arch']}_{param.name}"] = converters.get(kind, lambda v: v)(value)
    st.session_state[common.DATASET_SETTINGS_KEY] = forms.dataset_settings_from_config(config)
    for key in [k for k in st.session_state if str(k).startswith("ds_")]:
        del st.session_state[key]  # the Dataset page redraws its widgets from the new settings


def starting_point(store) -> None:
    """Start from the recommended recipe or from an earlier run's settings, then change one thing."""
    from core.settings.recipes import recipe
    runs = store.list()[:50]
    cols = st.columns([2, 3, 1], vertical_alignment="bottom")
    cols[0].button("Load the recommended recipe", key="train_recipe_button", icon=":material/star:",
                   on_click=fill_form, args=(recipe(common.dataset_settings()["task"]).to_dict(),),
                   help="A deep BatchNorm CNN at 96 px with a one-cycle schedule: a good first run.")
    if runs:
        names = {r.id: f"{common.run_name(r)} ({r.id})" for r in runs}
        chosen = cols[1].selectbox("…or start from an earlier run's settings", list(names), index=None,
                                   format_func=names.get, key="train_from_run", placeholder="choose a run")
        if chosen:
            cols[2].button("Load its settings", key="train_from_run_button",
                           on_click=fill_form, args=(store.get(chosen).config(),))


# ----------------------------------------------------------------------------- the form

def arch_inputs(registry) -> tuple[str, dict, float | None]:
    """Architecture, its own parameters (from the registry's Param metadata) and the dropout."""
    common.init_widget("train_arch", "seed_cnn")
    arch = st.selectbox("Architecture", list(registry), key="train_arch",
                        format_func=lambda name: registry[name].title)
    architecture = registry[arch]
    st.caption(architecture.description)
    params, dropout = {}, None
    cols = st.columns(3)
    for i, param in enumerate(architecture.params):
        with cols[i % 3]:
            value = param_input(arch, param)
        if param.name == "dropout":
            dropout = value  # a TrainConfig setting of its own, so runs tables can show it
        else:
            params[param.name] = value
    if not architecture.params:
        st.caption("This architecture has no parameters of its own.")
    # Every parameter is saved, defaults too, so run tables and diffs show the actual values.
    return arch, params, dropout


def param_input(arch: str, param):
    spec = forms.param_widget(param)
    key = f"train_p_{arch}_{param.name}"
    label = param.name.replace("_", " ").capitalize()
    if spec["kind"] == "select":
        common.init_widget(key, param.default)
        return st.selectbox(label, spec["options"], key=key, help=param.help)
    if spec["kind"] == "checkbox":
        common.init_widget(key, param.default)
        return st.checkbox(label, key=key, help=param.help)
    if spec["kind"] == "int_list":
        common.init_widget(key, spec["text"])
        text = st.text_input(label, key=key, help=f"{param.help} Comma-separated whole numbers.")
        return [int(v) for v in text.replace(",", " ").split()] if _is_int_list(text) else text
    if spec["kind"] == "int":
        common.init_widget(key, int(param.default))
        return st.number_input(label, spec["min"], spec["max"], step=1, key=key, help=param.help)
    common.init_widget(key, float(param.default))
    return st.number_input(label, spec["min"], spec["max"], step=spec["step"], format=spec["format"],
                           key=key, help=param.help)


def _is_int_list(text: str) -> bool:
    parts = text.replace(",", " ").split()
    return bool(parts) and all(p.isdigit() for p in parts)


def optimisation_inputs() -> dict:
    defaults = {"train_optimizer": "adam", "train_lr": 1e-3, "train_schedule": "constant",
                "train_weight_decay": 0.0, "train_clipnorm": 0.0, "train_label_smoothing": 0.0}
    for key, value in defaults.items():
        common.init_widget(key, value)
    cols = st.columns(3)
    values = {
        "optimizer": cols[0].selectbox("Optimizer", OPTIMIZERS, key="train_optimizer"),
        "learning_rate": cols[1].number_input("Learning rate", 1e-6, 1.0, step=1e-4, format="%.6f",
                                              key="train_lr"),
        "schedule": cols[2].selectbox("Learning-rate schedule", SCHEDULES, key="train_schedule"),
        "weight_decay": cols[0].number_input("Weight decay", 0.0, 1.0, step=1e-4, format="%.5f",
                                             key="train_weight_decay"),
        "clipnorm": cols[1].number_input("Gradient clipping (norm, 0 = off)", 0.0, 100.0, step=0.5,
                                         key="train_clipnorm"),
        "label_smoothing": cols[2].number_input("Label smoothing", 0.0, 0.5, step=0.05,
                                                key="train_label_smoothing"),
    }
    values.update(optimizer_extras(values["optimizer"]))
    values.update(schedule_extras(values["schedule"]))
    return values


def optimizer_extras(optimizer: str) -> dict:
    if optimizer not in ("sgd", "rmsprop"):
        return {}
    common.init_widget("train_momentum", 0.9)
    cols = st.columns(3)
    extras = {"momentum": cols[0].number_input("Momentum", 0.0, 0.999, step=0.05, key="train_momentum")}
    if optimizer == "sgd":
        common.init_widget("train_nesterov", False)
        extras["nesterov"] = cols[1].checkbox("Nesterov momentum", key="train_nesterov")
    return extras


def schedule_extras(schedule: str) -> dict:
    extras, cols = {}, st.columns(3)
    if schedule in ("step", "exponential"):
        common.init_widget("train_decay_rate", 0.5)
        common.init_widget("train_step_epochs", 5)
        extras["decay_rate"] = cols[0].number_input("Decay rate", 0.01, 1.0, step=0.05, key="train_decay_rate")
        extras["step_epochs"] = cols[1].number_input("Every N epochs", 1, 100, key="train_step_epochs")
    if schedule in ("cosine", "one_cycle", "plateau"):
        common.init_widget("train_min_lr", 1e-6)
        extras["min_learning_rate"] = cols[2].number_input("Minimum learning rate", 0.0, 1.0, step=1e-6,
                                                           format="%.7f", key="train_min_lr")
    if schedule == "plateau":
        common.init_widget("train_plateau_patience", 2)
        common.init_widget("train_plateau_factor", 0.5)
        extras["plateau_patience"] = cols[0].number_input("Plateau patience (epochs)", 1, 50,
                                                          key="train_plateau_patience")
        extras["plateau_factor"] = cols[1].number_input("Plateau factor", 0.05, 0.95, step=0.05,
                                                        key="train_plateau_factor")
    return extras


def training_inputs() -> dict:
    defaults = {"train_epochs": 10, "train_batch_size": 32, "train_class_weights": "none",
                "train_seed": 42, "train_early_stopping": True, "train_patience": 5,
                "train_monitor": "val_loss", "train_restore_best": True}
    for key, value in defaults.items():
        common.init_widget(key, value)
    cols = st.columns(4)
    values = {
        "epochs": cols[0].number_input("Epochs", 1, 500, key="train_epochs"),
        "batch_size": cols[1].selectbox("Batch size", BATCH_SIZES, key="train_batch_size"),
        "class_weights": cols[2].selectbox("Class weights", ("none", "balanced"), key="train_class_weights",
                                           help="Balanced: rare classes count more in the loss."),
        "seed": cols[3].number_input("Training seed", 0, 2**31 - 1, key="train_seed"),
        "early_stopping": cols[0].checkbox("Early stopping", key="train_early_stopping"),
        "restore_best": cols[1].checkbox("Keep the best epoch", key="train_restore_best",
                                         help="Evaluate and save the best epoch, not the last."),
        "monitor": cols[2].selectbox("Monitor", MONITORS, key="train_monitor"),
    }
    if values["early_stopping"]:
        values["patience"] = cols[3].number_input("Patience (epochs)", 1, 100, key="train_patience")
    return values


def resource_inputs() -> dict:
    """Limits that do not change results: the memory cap of the run's training process."""
    common.init_widget("train_memory_cap", 0)
    default = os.environ.get("CXR_MEMORY_CAP_MB") or "none"
    cap = st.number_input("Memory cap (MB, 0 = none)", min_value=0, step=256, key="train_memory_cap",
                          help="The run is stopped cleanly if its training process uses more; "
                               f"default $CXR_MEMORY_CAP_MB (here: {default}). At least 256 MB when set.")
    return {"memory_cap_mb": int(cap)}


def augmentation_inputs() -> dict:
    defaults = {"train_aug_rotation": 0.0, "train_aug_zoom": 0.0, "train_aug_shift": 0.0,
                "train_aug_flip": False, "train_aug_brightness": 0.0, "train_aug_contrast": 0.0}
    for key, value in defaults.items():
        common.init_widget(key, value)
    cols = st.columns(3)
    return {
        "rotation_degrees": cols[0].slider("Rotation (degrees)", 0.0, 45.0, step=1.0, key="train_aug_rotation"),
        "zoom": cols[1].slider("Zoom (fraction)", 0.0, 0.5, step=0.05, key="train_aug_zoom"),
        "shift": cols[2].slider("Shift (fraction)", 0.0, 0.5, step=0.05, key="train_aug_shift"),
        "brightness": cols[0].slider("Brightness (fraction)", 0.0, 0.5, step=0.05, key="train_aug_brightness"),
        "contrast": cols[1].slider("Contrast (factor)", 0.0, 0.9, step=0.05, key="train_aug_contrast"),
        "horizontal_flip": cols[2].checkbox("Horizontal flip", key="train_aug_flip",
                                            help="Off by default: flipping moves the heart to the other side."),
    }


# ----------------------------------------------------------------------------- before launch

def launch_preview(config, split, num_classes: int) -> None:
    """Parameter count, MACs and the expected time of the configured run."""
    cols = st.columns(4)
    try:
        with st.spinner("Building the model to count its parameters…"):
            stats = common.model_stats(config.arch, config.image_size, config.channels, num_classes,
                               json.dumps(config.arch_params, sort_keys=True), config.dropout)
    except Exception as exc:  # noqa: BLE001 - e.g. transfer weights missing: still allow a look
        st.warning(f"The model could not be built to measure it: {exc}")
        stats = None
    if stats:
        cols[0].metric("Trainable parameters", compare.format_count(stats["trainable_params"]))
        cols[1].metric("Total parameters", compare.format_count(stats["total_params"]))
        cols[2].metric("MACs per image", compare.format_count(stats["macs"]))
    images = {name: len(split.indices(name)) for name in ("train", "val", "test")}
    guess = estimate.estimate_run(config.to_dict(), estimate.past_runs(common.run_store()), images=images,
                                  macs=stats["macs"] if stats else None)
    time_preview(cols[3], guess, config.epochs, images["train"])


def time_preview(where, guess, epochs: int, train_images: int) -> None:
    if guess.seconds is None:
        where.metric("Time per epoch", "after epoch 1",
                     help="No finished run on this machine to learn from yet.")
        st.caption("Time: known after the first epoch (the live view below shows the time left); "
                   "later estimates learn from the runs that finish on this machine.")
        return
    approx = "≈ " if guess.rough else ""
    where.metric("Time per epoch", approx + compare.format_seconds(guess.epoch_seconds),
                 help="Whole epochs (training and validation) of earlier finished runs on this machine.")
    label = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    st.caption(f"About {compare.format_seconds(guess.seconds)} for {label} on {train_images:,} training images, "
               f"including about {compare.format_seconds(guess.overhead_seconds)} of loading, model building "
               f"and final evaluation (less with early stopping); {estimate.basis_text([guess])}.")


def launch(config) -> None:
    try:
        run_id = common.job_manager().submit(config)
    except ValueError as exc:
        st.error(f"The run could not be queued: {exc}")
        return
    store = common.run_store()
    shown = pinned_run(store)
    if shown is None or shown.state() not in ("queued", "running"):
        st.session_state[WATCH_KEY] = run_id  # else the new run waits in the queue list below
    st.toast(f"Run {run_id} queued")


# ----------------------------------------------------------------------------- live view

def pinned_run(store):
    """The run this view is showing (launched, picked or the first one shown), if it still exists."""
    if not st.session_state.get(WATCH_KEY):
        return None
    try:
        return store.get(st.session_state[WATCH_KEY])
    except KeyError:  # deleted meanwhile
        st.session_state.pop(WATCH_KEY, None)
        return None


def watched_run(store):
    """The run to show live. Once shown, a run stays shown after it ends (done, cancelled or failed)
    until the user picks another one, so a queue never hides how a run ended. With none pinned:
    the running run, else the oldest queued one."""
    pinned = pinned_run(store)
    if pinned is not None:
        return pinned
    active = common.active_runs(store)
    running = [r for r in active if r.state() == "running"]
    chosen = (running or active or [None])[0]
    if chosen is not None:
        st.session_state[WATCH_KEY] = chosen.id
    return chosen


def rerun_page_when_queue_empties(store) -> None:
    """When the last active run ends, redraw the whole page once (not just this live view), so
    the time estimate and everything else reflect the finished run."""
    active = bool(common.active_runs(store))
    was_active = st.session_state.get("train_queue_was_active", False)
    st.session_state["train_queue_was_active"] = active
    if was_active and not active:
        st.rerun(scope="app")


# Progress phases of a running run, as the headline says them.
PHASE_TEXT = {"loading data": "loading the images", "training": "training",
              "evaluating": "evaluating on the test split"}


def live_view() -> None:
    store = common.run_store()
    rerun_page_when_queue_empties(store)
    run = watched_run(store)
    if run is None:
        st.info("No run in progress. Set up a run above and press **Launch**.")
        return
    manager = common.job_manager()
    progress = manager.progress(run.id)
    state = run.state()
    st.markdown(headline(run, state, progress.get("phase")))
    if state in ("queued", "running"):
        live_progress(progress)
        stop_control(manager, run, state, progress.get("phase"))
    else:
        finished_result(run)
    history = progress.get("history") or run.history()
    if history:
        left, right = st.columns(2)
        common.show_chart(charts.history_chart(history, "loss"), left)
        common.show_chart(charts.history_chart(history, "accuracy"), right)
    elif state in ("queued", "running"):
        st.caption("The curves appear when the first epoch ends.")
    queue_list(store, run.id, ended=state not in ("queued", "running"))


def headline(run, state: str, phase: str | None) -> str:
    """'name · id · state: running (training)'; a phase is added only while the run is running."""
    detail = f" ({PHASE_TEXT[phase]})" if state == "running" and phase in PHASE_TEXT else ""
    resumed = run.status().get("resumed_at_epochs")
    if resumed and state in ("queued", "running"):
        detail += f" · resumed at epoch {resumed[-1]}"
    return f"**{common.run_name(run)}** · `{run.id}` · state: **{state}**{detail}"


def stop_control(manager, run, state: str, phase: str | None) -> None:
    """Stop, or why it is not offered: already stopping, or past the point where stopping helps."""
    option = stop_option(state, phase, manager.stop_requested(run.id))
    if option == "stopping":
        st.warning("Stopping after the current batch… The best epoch so far is kept and evaluated.",
                   icon=":material/hourglass_top:")
    elif option == "finishing":
        st.info("Finishing: evaluating on the test split and saving; it cannot be stopped now.",
                icon=":material/hourglass_top:")
    elif option == "stop":  # a callback, so the rerun it triggers already shows the stopping state
        st.button("Stop this run", key=f"stop_{run.id}", type="secondary", icon=":material/stop_circle:",
                  on_click=manager.cancel, args=(run.id,))


def live_progress(progress: dict) -> None:
    if progress.get("phase") == "loading data" and progress.get("load_total"):
        st.progress(progress["load_done"] / progress["load_total"],
                    text=f"Loading images {progress['load_done']:,} / {progress['load_total']:,}")
    epochs = progress.get("epochs") or 0
    epoch = progress.get("epoch") or 0
    batches, batch = progress.get("batches") or 0, progress.get("batch") or 0
    if epochs:
        done_epochs = len(progress.get("history") or [])
        st.progress(min(1.0, done_epochs / epochs), text=f"Epoch {min(epoch + 1, epochs)} of {epochs}")
    if batches:
        st.progress(min(1.0, batch / batches), text=f"Batch {batch} of {batches}")
    cols = st.columns(4)
    speed = progress.get("images_per_sec")
    cols[0].metric("Images / s", f"{speed:,.0f}" if speed else "—")
    cols[1].metric("Time left", compare.format_seconds(progress.get("eta_s")))
    lr = progress.get("learning_rate")
    cols[2].metric("Learning rate", f"{lr:.2e}" if lr else "—")
    loss = progress.get("batch_loss")
    cols[3].metric("Batch loss", f"{loss:.4f}" if loss is not None else "—")


def finished_result(run) -> None:
    """How the run ended: why it failed or stopped, its test scores, what it used, and Resume."""
    status = run.status()
    state = status.get("state")
    summary = run.summary()
    test = summary.get("test") or {}
    if state == "failed":
        failure(status)
    elif state == "cancelled":
        st.warning(stopped_text(summary, run.has_model()), icon=":material/stop_circle:")
    elif not test and status.get("error"):  # e.g. interrupted: its process stopped before the end
        st.warning(status["error"])
    resume_control(run)
    if test and state != "failed":
        cols = st.columns(4)
        cols[0].metric("Test accuracy", f"{test['accuracy']:.3f}")
        cols[1].metric("Test macro-F1", f"{test['macro_f1']:.3f}")
        cols[2].metric("Test AUC", f"{test['auc']:.3f}" if test.get("auc") is not None else "—")
        cols[3].metric("Best epoch", summary.get("best_epoch") or "—")
        st.page_link(common.PAGE_PATHS["evaluate"], label="Evaluate this run", icon=":material/fact_check:")
    caption = result_caption(run.resources(), status.get("resumed_at_epochs") or [])
    if caption:
        st.caption(caption)


def failure(status: dict) -> None:
    """The plain reason a run failed, what its training process printed last and the traceback."""
    st.error(f"The run failed: {status.get('error') or 'no reason was recorded'}")
    if status.get("stderr_tail"):
        with st.expander("What the training process printed"):
            st.code(status["stderr_tail"], language=None)
    if status.get("traceback"):
        with st.expander("Traceback"):
            st.code(status["traceback"], language=None)


def resume_control(run) -> None:
    """'Resume from epoch N' for a run that ended early with a checkpoint."""
    if not run.can_resume():
        return
    epoch = run.checkpoint_epoch()
    st.button(f"Resume from epoch {epoch}", key=f"train_resume_{run.id}_button", type="primary",
              icon=":material/play_circle:", on_click=resume, args=(run.id,),
              help=f"Queue this run again: it goes on from its last completed epoch ({epoch}) with the "
                   "weights and optimizer state saved then.")
    problem = st.session_state.pop(RESUME_ERROR_KEY, None)
    if problem:
        st.error(f"The run could not be resumed: {problem}")


def resume(run_id: str) -> None:
    """Queue the run again (a button callback) and keep watching it."""
    resume_all([run_id])


def resume_all(run_ids: list[str]) -> None:
    """Queue runs again (a button callback); watch the first one."""
    resumed, problems = common.resume_runs(run_ids)
    if problems:
        st.session_state[RESUME_ERROR_KEY] = " ".join(problems)
    if resumed:
        watch(resumed[0])


def interrupted_notice(store) -> None:
    """Runs cut off when the dashboard or worker training them stopped: one click resumes them."""
    cut_off = [run for run in store.list() if run.state() == "interrupted" and run.can_resume()]
    if not cut_off:
        return
    names = ", ".join(common.run_name(run) for run in cut_off[:5]) + (" ..." if len(cut_off) > 5 else "")
    st.warning(f"{len(cut_off)} run(s) stopped when the dashboard or worker training them stopped: {names}. "
               "Each can go on from its last completed epoch.", icon=":material/restart_alt:")
    st.button(f"Resume {len(cut_off)} interrupted run(s)", key="train_resume_interrupted_button",
              icon=":material/play_circle:", on_click=resume_all, args=([run.id for run in cut_off],))


def result_caption(resources: dict, resumed_at: list) -> str:
    """'Peak memory 812 MB · 1,234 images/s · wall time 1 min 3 s · CPU (2 cores) · resumed at epoch 2'."""
    parts = []
    if resources.get("peak_memory_mb"):
        parts.append(f"peak memory {resources['peak_memory_mb']:,.0f} MB")
    if resources.get("peak_gpu_memory_mb"):
        parts.append(f"peak GPU memory {resources['peak_gpu_memory_mb']:,.0f} MB")
    if resources.get("images_per_sec"):
        parts.append(f"{resources['images_per_sec']:,.0f} images/s")
    if resources.get("wall_s"):
        parts.append(f"wall time {compare.format_seconds(resources['wall_s'])}")
    if resources.get("device"):
        parts.append(str(resources["device"]))
    if resumed_at:
        epochs = ", ".join(str(e) for e in resumed_at)
        parts.append(f"resumed at epoch{'s' if len(resumed_at) > 1 else ''} {epochs}")
    text = " · ".join(parts)
    return text[:1].upper() + text[1:]


def stopped_text(summary: dict, has_model: bool) -> str:
    """What a stopped run kept."""
    if summary.get("best_epoch") and has_model:
        return (f"Stopped. Kept: the best epoch ({summary['best_epoch']} of {summary.get('epochs_run', '?')} run), "
                "saved and evaluated on the test split below.")
    if has_model:
        return "Stopped. The model as it was is saved and evaluated below."
    return "Stopped before the first epoch ended: nothing was trained, so no model was kept."


def queue_list(store, shown_id: str, ended: bool) -> None:
    """Every queued or running run of the store, whoever queued it (this dashboard, another one,
    the CLI or a worker); Stop works for any of them."""
    others = [r for r in common.active_runs(store) if r.id != shown_id]
    if not others:
        return
    if ended:  # the shown run is over; the queue goes on without it
        following = next((r for r in others if r.state() == "running"), others[0])
        st.button(f"Watch next run: {common.run_name(following)} ({following.state()})", key="train_watch_next_button",
                  type="primary", icon=":material/skip_next:", on_click=watch, args=(following.id,))
    st.markdown("**Queue**")
    manager = common.job_manager()
    for run in others:
        state = run.state()
        cols = st.columns([4, 1, 1])
        cols[0].write(f"{common.run_name(run)} — {queue_state_text(run, state)}")
        cols[1].button("Watch", key=f"watch_{run.id}", on_click=watch, args=(run.id,))
        if manager.stop_requested(run.id):
            cols[2].caption("stopping…")
        else:
            cols[2].button("Stop" if state == "running" else "Cancel", key=f"cancel_{run.id}",
                           on_click=manager.cancel, args=(run.id,))


def queue_state_text(run, state: str) -> str:
    """'running', 'queued' or 'queued to resume from epoch 3'."""
    status = run.status()
    if state == "queued" and status.get("resume"):
        return f"queued to resume from epoch {run.checkpoint_epoch()}"
    return state


def watch(run_id: str) -> None:
    st.session_state[WATCH_KEY] = run_id


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Train")
    rerun = st.session_state.pop(common.RERUN_CONFIG_KEY, None)
    if rerun:
        fill_form(rerun)  # before any widget is drawn, so the form shows the run's settings
        st.info(f"Loaded the settings of {rerun.get('name') or 'the chosen run'}: the same config and "
                "seed reproduce its metrics on CPU; change one thing to test it.")
    settings = common.dataset_settings()
    st.markdown(f"**Dataset:** {forms.dataset_label(settings)} · "
                f"change it on the Dataset page.")
    try:
        dataset, split = common.dataset_and_split(settings)
    except data_lib.DataError as exc:
        st.error(f"The chosen dataset cannot be used: {exc}. Fix it on the Dataset page.")
        st.page_link(common.PAGE_PATHS["dataset"], label="Go to Dataset", icon=":material/folder_open:")
        return
    registry = model_registry()
    starting_point(common.run_store())
    with st.container(border=True):
        st.subheader("Model")
        arch, arch_params, dropout = arch_inputs(registry)
    with st.container(border=True):
        st.subheader("Optimisation")
        optimisation = optimisation_inputs()
    with st.container(border=True):
        st.subheader("Training")
        training = training_inputs()
        with st.expander("Resources: memory cap"):
            resources = resource_inputs()
    with st.expander("Augmentation (training images only)"):
        augmentation = augmentation_inputs()
    common.init_widget("train_name", "")
    name = st.text_input("Run name", key="train_name", placeholder=f"e.g. {arch}-baseline",
                         help="Shown in the runs table; the architecture name when left empty.")
    try:
        config = forms.build_config(settings, {"arch": arch, "arch_params": arch_params, "dropout": dropout,
                                               "name": name.strip(), **optimisation, **training,
                                               **resources, "augmentation": augmentation})
    except (TypeError, ValueError) as exc:
        st.error(f"Fix this setting before launching: {exc}")
        config = None
    if config is not None:
        st.session_state["train_config"] = config.to_dict()  # the Sweeps page starts from these settings
        launch_preview(config, split, len(dataset.class_names))
        if st.button("Launch", type="primary", icon=":material/rocket_launch:", key="launch_button"):
            launch(config)

    st.divider()
    st.subheader("Live view")
    interrupted_notice(common.run_store())
    st.fragment(live_view, run_every=1.0)()


main()
