"""What the Train page says and how its form maps to a config, without Streamlit: widget keys,
a saved config -> the form's widget values, the live view's headline, progress and captions.

The form's widgets are keyed by the setting they draw: "train_" + a TrainConfig field,
"train_aug_" + an augmentation setting, "train_p_<arch>_<param>" for an architecture parameter.
"""
from __future__ import annotations

from core.ml.decisions import metric_label
from core.present import charts, compare, estimate, forms
from core.settings.architectures import (
    ARCHITECTURES,
    CNN_PRESETS,
    default_params,
    preset_params,
)
from core.settings.config import AUGMENTATION_SETTINGS, SETTINGS

PREFIX = "train_"
AUGMENTATION_PREFIX = "train_aug_"
PRESET_KEY = "train_cnn_preset"  # the Configurable CNN's preset selectbox
CUSTOM_PRESET = "custom"  # keep the parameters as typed
# Progress phases of a running run, as the headline says them.
PHASE_TEXT = {"loading data": "loading the images", "training": "training",
             "fitting": "fitting the logistic regression",
              "evaluating": "evaluating on the test split"}


def param_prefix(arch: str) -> str:
    """The key prefix of an architecture's parameters (each architecture keeps its own values)."""
    return f"train_p_{arch}_"


# ----------------------------------------------------------------------------- form <-> config

def arch_param_values(config: dict) -> dict:
    """Every parameter of the config's architecture: its defaults, overlaid with the saved
    arch_params and, for the dropout, with the config's own dropout when it sets one."""
    values = {**default_params(config["arch"]), **(config.get("arch_params") or {})}
    if "dropout" in values and config.get("dropout") is not None:
        values["dropout"] = config["dropout"]
    return values


def split_dropout(params: dict) -> tuple[dict, float | None]:
    """(the other parameters, the dropout): the dropout is a TrainConfig setting of its own, so runs
    tables can compare it across architectures. Every other parameter is saved, defaults too."""
    params = dict(params)
    return params, params.pop("dropout", None)


def form_state(config: dict, fields) -> dict:
    """widget key -> value that shows the saved `config` in the form: the TrainConfig `fields` it
    sets, every augmentation setting (missing ones at their defaults) and the architecture's params."""
    state = {PREFIX + name: forms.to_widget(SETTINGS[name], config[name]) for name in fields if name in config}
    augmentation = config.get("augmentation") or {}
    for name, spec in AUGMENTATION_SETTINGS.items():
        state[AUGMENTATION_PREFIX + name] = forms.to_widget(spec, augmentation.get(name, spec.default))
    params = {p.name: p for p in ARCHITECTURES[config["arch"]].params}
    for name, value in arch_param_values(config).items():
        state[param_prefix(config["arch"]) + name] = forms.to_widget(params[name], value)
    return state


# ----------------------------------------------------------------------------- presets of the configurable CNN

def preset_options() -> list[str]:
    return [CUSTOM_PRESET, *CNN_PRESETS]


def preset_title(name: str) -> str:
    return "custom (keep what is typed)" if name == CUSTOM_PRESET else CNN_PRESETS[name].title


def preset_state(name: str) -> dict:
    """widget key -> value that shows preset `name` in the Configurable CNN's parameter widgets;
    nothing for custom (the widgets keep what is typed)."""
    if name == CUSTOM_PRESET:
        return {}
    params = {p.name: p for p in ARCHITECTURES["cnn"].params}
    return {param_prefix("cnn") + name: forms.to_widget(params[name], value)
            for name, value in preset_params(name).items()}


def param_values_in(state, arch: str) -> dict:
    """The architecture's parameters as its widgets in `state` (session state) hold them, typed;
    defaults for the widgets not drawn yet."""
    values = {}
    for param in ARCHITECTURES[arch].params:
        key = param_prefix(arch) + param.name
        values[param.name] = forms.from_widget(param, state[key]) if key in state else param.default
    return values


def preset_choice(selected: str | None, values: dict) -> str:
    """What the preset selectbox shows, given the CNN parameters `values`: the selected preset while
    they still are its values, custom once one is changed; at first, the preset they match, if any."""
    if selected is None:
        return next((name for name in CNN_PRESETS if preset_params(name) == values), CUSTOM_PRESET)
    if selected in CNN_PRESETS and preset_params(selected) == values:
        return selected
    return CUSTOM_PRESET


# ----------------------------------------------------------------------------- before launch

def epoch_time(guess) -> str:
    """The 'Time per epoch' metric: '≈ 12 s' for a rough guess ('≤ ' from first epochs only),
    'after epoch 1' when unknown."""
    if guess.seconds is None:
        return "after epoch 1"
    return estimate.hedge([guess]) + compare.format_seconds(guess.epoch_seconds)


def time_caption(guess, epochs: int, train_images: int) -> str:
    if guess.seconds is None:
        return ("Time: known after the first epoch (the live view below shows the time left); "
                "later estimates learn from the runs that finish on this machine.")
    label = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    return (f"About {compare.format_seconds(guess.seconds)} for {label} on {train_images:,} training images, "
            f"including about {compare.format_seconds(guess.overhead_seconds)} of loading, model building "
            f"and final evaluation (less with early stopping); {estimate.basis_text([guess])}.")


# ----------------------------------------------------------------------------- live view

def headline(name: str, run_id: str, state: str, phase: str | None, resumed_at: list | None) -> str:
    """'name · id · state: running (training)'; a phase is added only while the run is running."""
    detail = f" ({PHASE_TEXT[phase]})" if state == "running" and phase in PHASE_TEXT else ""
    if resumed_at and state in ("queued", "running"):
        detail += f" · resumed at epoch {resumed_at[-1]}"
    return f"**{name}** · `{run_id}` · state: **{state}**{detail}"


def progress_bars(progress: dict) -> list[tuple[float, str]]:
    """(fraction, text) of each progress bar: images loaded, epochs done, batches of this epoch."""
    bars = []
    if progress.get("phase") == "loading data" and progress.get("load_total"):
        bars.append((progress["load_done"] / progress["load_total"],
                     f"Loading images {progress['load_done']:,} / {progress['load_total']:,}"))
    epochs, epoch = progress.get("epochs") or 0, progress.get("epoch") or 0
    if epochs:
        done = len(progress.get("history") or [])
        bars.append((min(1.0, done / epochs), f"Epoch {min(epoch + 1, epochs)} of {epochs}"))
    if progress.get("phase") == "fitting" and progress.get("fits"):  # a logistic regression: one fit per C
        fit, fits = progress.get("fit") or 0, progress["fits"]
        bars.append((fit / fits, f"Fit {min(fit + 1, fits)} of {fits}: {progress.get('fit_label', '')}"))
    batches, batch = progress.get("batches") or 0, progress.get("batch") or 0
    if batches:
        bars.append((min(1.0, batch / batches), f"Batch {batch} of {batches}"))
    return bars


def progress_metrics(progress: dict) -> list[tuple[str, str]]:
    """(label, value) of the live metrics; '—' until the training process reports one."""
    speed, lr, loss = progress.get("images_per_sec"), progress.get("learning_rate"), progress.get("batch_loss")
    return [("Images / s", f"{speed:,.0f}" if speed else "—"),
            ("Time left", compare.format_seconds(progress.get("eta_s"))),
            ("Learning rate", f"{lr:.2e}" if lr else "—"),
            ("Batch loss", f"{loss:.4f}" if loss is not None else "—")]


def score_metrics(summary: dict) -> list[tuple[str, object]]:
    """(label, value) of a finished run's test scores and best epoch; accuracy and macro-F1 name the
    decision rule they were computed at ('Test accuracy @ threshold 0.43')."""
    test = summary["test"]
    rule = test.get("threshold")
    return [(metric_label("Test accuracy", "accuracy", rule), f"{test['accuracy']:.3f}"),
            (metric_label("Test macro-F1", "macro_f1", rule), f"{test['macro_f1']:.3f}"),
            ("Test AUC", f"{test['auc']:.3f}" if test.get("auc") is not None else "—"),
            ("Best epoch", summary.get("best_epoch") or "—")]


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


def interrupted_text(names: list[str]) -> str:
    """The notice over runs cut off when the dashboard or worker training them stopped."""
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    return (f"{len(names)} run(s) stopped when the dashboard or worker training them stopped: {shown}. "
            "Each can go on from its last completed epoch.")


def queue_state_text(state: str, resume: bool, resume_epoch: int | None) -> str:
    """'running', 'queued' or 'queued to resume from epoch 3' (Run.resume_epoch: epoch 2 is done)."""
    if state == "queued" and resume:
        return f"queued to resume from epoch {resume_epoch}"
    return state


# ----------------------------------------------------------------------------- curves

CURVE_SIDES = ("loss", "accuracy")  # what the two charts show at first
SMOOTHING_HELP = ("As TensorBoard smooths: an exponential moving average (debiased at the start), "
                  "0 = the raw values; the raw curve stays faint behind the smoothed one.")
LOG_SCALE_HELP = "A logarithmic y axis, for losses that fall by orders of magnitude. The learning rate is always on one."


def default_curve(options: list[str], side: int) -> int:
    """The index in `options` of what chart `side` (0 left, 1 right) shows at first."""
    wanted = CURVE_SIDES[side]
    return options.index(wanted) if wanted in options else min(side, len(options) - 1)


def missing_curves_note(options: list[str]) -> str | None:
    """Why the per-epoch validation AUC / macro-F1 or the first epoch's batches are not offered."""
    missing = [charts.metric_title(name) for name in ("val_auc", "val_macro_f1", charts.FIRST_EPOCH_BATCHES)
               if name not in options]
    if not missing:
        return None
    return (f"Not recorded for these runs: {', '.join(missing)} (runs trained before they were saved, "
            "or the first epoch has not ended yet).")
