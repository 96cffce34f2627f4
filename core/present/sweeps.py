"""What the Sweeps page needs, without Streamlit: value lists typed by the user, the sweep spec,
sweep results as DataFrames, the results chart (Altair), the state of a sweep's runs (progress,
stopping them, picking some to compare) and imports (the form is core.present.sweep_plan; time
estimates are core.present.estimate's).

Plain Python, pandas and Altair on what `core.store.sweeps` and the run store return; no TensorFlow.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import altair as alt
import pandas as pd

from core.ml.halving import rungs
from core.settings.config import TrainConfig, setting_for
from core.store.portable import export_sweep, import_archive
from core.store.run_folder import ACTIVE_STATES
from core.store.runs import RunStore
from core.store.sweeps import RESULT_METRICS

# Common ablations and the values people try first (the text stays editable on the page).
PRESETS = {
    "dropout": "0.2, 0.4, 0.6, 0.8",
    "arch_params.activation": "relu, elu, leaky_relu, tanh, sigmoid, softmax",
    "image_size": "64, 96, 128",
    "batch_size": "16, 32, 64, 128",
    "learning_rate": "0.0003, 0.001, 0.003",
    "optimizer": "adam, sgd, rmsprop",
    "train_fraction": "0.5, 0.7, 0.85, 1.0",
    "epochs": "5, 10, 20",
    "augmentation.rotation_degrees": "0, 5, 10",
}
PRESET_HELP = {"arch_params.activation": "for seed_cnn (and the other architectures with an activation)"}
METRIC_TITLES = {"test_accuracy": "Test accuracy", "test_macro_f1": "Test macro-F1", "test_auc": "Test AUC",
                 "val_accuracy": "Validation accuracy", "best_val_loss": "Best validation loss",
                 "train_accuracy": "Train accuracy @ argmax (best epoch)",
                 "accuracy_gap": "Train − validation accuracy @ argmax (best epoch)",
                 "peak_memory_mb": "Peak memory (MB)",
                 "peak_gpu_memory_mb": "Peak GPU memory (MB)", "images_per_sec": "Images / s", "wall_s": "Wall time (s)"}
# What a run used (Run.describe()): a sweep over batch or image size reads memory and speed too.
RESOURCE_METRICS = ("peak_memory_mb", "peak_gpu_memory_mb", "images_per_sec", "wall_s")
# Overfitting at the evaluated epoch (summary.json's "overfitting"), recorded by runs since it was added.
FIT_METRICS = ("train_accuracy", "accuracy_gap")
SWEEP_METRICS = RESULT_METRICS  # scores, losses and the resources (batch size vs memory: one sweep)
# Digits in the results table: scores to 3, losses to 4, memory, speed and seconds whole.
METRIC_DIGITS = {"best_val_loss": 4, "peak_memory_mb": 0, "peak_gpu_memory_mb": 0, "images_per_sec": 0, "wall_s": 0}
CHART_HEIGHT = 320
LINE_COLOR = "#2F6FB0"  # the dashboard's primary colour (.streamlit/config.toml)
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ----------------------------------------------------------------------------- typed values

def parse_value(text: str):
    """'0.2' -> 0.2, '32' -> 32, 'true' -> True, 'none' -> None (the default), else the string."""
    text = text.strip().strip("'\"")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "default"):
        return None
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def parse_values(text: str) -> list:
    """Comma-separated values (or a JSON list, for list-valued settings like '[[16, 32], [32, 64]]').

    Raises ValueError for an empty list, an empty item, or a value given twice."""
    text = (text or "").strip()
    if not text:
        raise ValueError("enter at least one value (comma-separated, e.g. 0.2, 0.4)")
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the values look like a JSON list but do not parse ({exc.msg})") from None
        if not isinstance(values, list) or not values:
            raise ValueError("the JSON list of values is empty")
    else:
        parts = text.split(",")
        if any(not part.strip() for part in parts):
            raise ValueError(f"an empty value in {text!r}: remove the extra comma")
        values = [parse_value(part) for part in parts]
    for i, value in enumerate(values):
        if any(value == earlier for earlier in values[:i]):  # 1 == 1.0: they would be the same point
            raise ValueError(f"{value_label(value)} is listed twice")
    return values


def coerce_values(base: dict, setting: str, values: list) -> list:
    """Each value as its setting declares it (32.0 -> 32 for a whole number, 1 -> 1.0 for a fraction);
    ValueError, with the setting's own message, for a wrong type or a value out of range."""
    declared = setting_for(setting, base.get("arch"))
    if declared is None:
        raise ValueError(f"{setting} is not a setting of a {base.get('arch')} run")
    return [declared.check(value) for value in values]


def value_label(value) -> str:
    """A value as shown in tables and charts."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):  # a group of settings, e.g. augmentation
        return ", ".join(f"{k}={value_label(v)}" for k, v in value.items()) or "off"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def is_numeric_axis(values: list) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# ----------------------------------------------------------------------------- the sweep spec

def base_from_run(config: dict) -> dict:
    """A finished run's config as a sweep base: no name, sweep id or cross-validation fold."""
    base = TrainConfig.from_dict(config).to_dict()
    base.update(name="", sweep_id="", cv_folds=0, cv_fold=0)
    return base


def base_with_dataset(config: TrainConfig, dataset_settings: dict) -> dict:
    """A config (recipe or defaults) on the dataset chosen on the Dataset page."""
    known = set(config.to_dict())
    return config.with_overrides({k: v for k, v in dataset_settings.items() if k in known}).to_dict()


def sweep_spec(name: str, base: dict, axes: list[tuple[str, list]], repeat_mode: str, count: int,
               halving_rate: int = 0, halving_min_epochs: int = 1) -> dict:
    """The dict `Sweep.from_dict` takes; repeat_mode is 'seeds' (count seeds) or 'cv' (count folds);
    halving_rate 0 is off, else successive halving with its first rung after halving_min_epochs."""
    return {"name": name.strip(), "base": base,
            "axes": [{"setting": setting, "values": list(values)} for setting, values in axes],
            "repeats": int(count) if repeat_mode == "seeds" else 1,
            "cv_folds": int(count) if repeat_mode == "cv" else 0,
            "halving_rate": int(halving_rate), "halving_min_epochs": int(halving_min_epochs)}


def run_count(axes: list[tuple[str, list]], count: int) -> int:
    return math.prod(len(values) for _, values in axes) * int(count)


def sweep_label(record: dict) -> str:
    """'dropout study · 12 runs · 2026-11-24 03:15' for pickers."""
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("created") or 0))
    settings = " × ".join(a["setting"] for a in record.get("axes", []))
    return f"{record.get('name') or settings or record['id']} · {len(record.get('runs', []))} runs · {created}"


def sweep_zip_bytes(store: RunStore, sweep_id: str) -> bytes:
    """The whole sweep (its runs and its record) as zip bytes, for a download button."""
    with tempfile.TemporaryDirectory() as folder:
        return export_sweep(store, sweep_id, Path(folder) / f"{sweep_id}.zip").read_bytes()


# ----------------------------------------------------------------------------- results

def results_frame(rows: list[dict], settings: list[str]) -> pd.DataFrame:
    """One row per point: the swept values, run counts, and mean / std / n of every metric (a metric
    the rows lack, e.g. the resources of rows without them, stays empty)."""
    columns = list(settings) + ["runs", "done", "active", "stopped"]
    columns += [f"{m}_{s}" for m in SWEEP_METRICS for s in ("mean", "std", "n")]
    columns += ["halted", "halted_epochs", "epochs_trained", "epochs_planned", "trainable_params", "macs"]
    records = [{"halted": 0, "halted_epochs": [], "epochs_trained": 0, "epochs_planned": 0, **row,
                "stopped": row["runs"] - row["done"] - row["active"]} for row in rows]
    frame = pd.DataFrame(records, columns=columns)
    for metric in SWEEP_METRICS:
        frame[f"{metric}_n"] = frame[f"{metric}_n"].fillna(0).astype(int)
    return frame


def progress_counts(frame: pd.DataFrame) -> dict:
    """Runs of the sweep: total, done, active (queued or running), stopped (failed, cancelled...)."""
    return {key: int(frame[key].sum()) for key in ("runs", "done", "active", "stopped")}


def mean_std_text(mean, std, n, done: int | None = None, digits: int = 3) -> str:
    """'0.720 ± 0.010'; the count is added only when it differs from the point's finished runs."""
    if mean is None or pd.isna(mean):
        return "—"
    count = "" if done is not None and int(n) == int(done) else f" (n={int(n)})"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{count}"


def display_frame(frame: pd.DataFrame, settings: list[str], metrics=SWEEP_METRICS,
                  halving: bool = False) -> pd.DataFrame:
    """The results table as short text, so every column fits: setting labels, 'done/runs', with
    `halving` which runs successive halving stopped and at which epochs, and 'mean ± std' per metric
    (with '(n=k)' only where fewer runs than the done ones have the metric). A resource metric no
    finished run recorded (or an overfitting one) is left out."""
    shown = pd.DataFrame({setting: [value_label(v) for v in frame[setting]] for setting in settings})
    shown["runs done"] = [f"{d}/{r}" for d, r in zip(frame["done"], frame["runs"])]
    if halving:
        shown[HALTED_COLUMN] = [halted_text(h, e, r) for h, e, r in
                                zip(frame["halted"], frame["halted_epochs"], frame["runs"])]
    for metric in metrics:
        if metric in RESOURCE_METRICS + FIT_METRICS and not frame[f"{metric}_mean"].notna().any():
            continue
        digits = METRIC_DIGITS.get(metric, 3)
        shown[METRIC_TITLES.get(metric, metric)] = [
            mean_std_text(m, s, n, d, digits) for m, s, n, d in
            zip(frame[f"{metric}_mean"], frame[f"{metric}_std"], frame[f"{metric}_n"], frame["done"])]
    return shown


HALTED_COLUMN = "stopped early (halving)"


def halted_text(halted: int, epochs: list[int], runs: int) -> str:
    """'—', or '2 of 3, at epoch 1' / '1 of 1, at epoch 3' / '2 of 3, at epochs 1, 3'."""
    if not halted:
        return "—"
    distinct = sorted(set(epochs))
    where = f"epoch{'s' if len(distinct) > 1 else ''} {', '.join(str(e) for e in distinct)}"
    return f"{halted} of {runs}, at {where}"


def halving_on(record: dict) -> bool:
    return bool(record.get("halving_rate"))


def halving_text(record: dict) -> str:
    """'successive halving (rate 3: the best third go on at epochs 1, 3)' for a sweep with it on."""
    rate, first = record["halving_rate"], record.get("halving_min_epochs", 1)
    longest = max([record.get("base", {}).get("epochs") or 0] + [
        v for a in record.get("axes", []) if a["setting"] == "epochs" for v in a["values"]])
    at = rungs(longest, rate, first) or [first]
    return f"successive halving (rate {rate}: the best {halving_share(rate)} go on at epochs {', '.join(map(str, at))})"


def halving_share(rate: int) -> str:
    """The share of runs that go on at a rung, in words: 'half', 'third', 'quarter', '1/5'."""
    return {2: "half", 3: "third", 4: "quarter"}.get(rate, f"1/{rate}")


def halving_summary(record: dict, frame: pd.DataFrame) -> str | None:
    """What successive halving did, in two sentences (None when it is off): how many runs it stopped,
    at which epochs, the epochs trained against the full grid's, and what a stopped run's metrics are."""
    if not halving_on(record):
        return None
    halted, runs = int(frame["halted"].sum()), int(frame["runs"].sum())
    trained, planned = int(frame["epochs_trained"].sum()), int(frame["epochs_planned"].sum())
    epochs = sorted({e for listed in frame["halted_epochs"] for e in listed})
    where = f", at epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))}" if epochs else ""
    so_far = " so far" if int(frame["active"].sum()) else ""
    unit = "points" if (frame["runs"] <= 1).all() else "runs"
    text = (f"{halted} of {runs} {unit} stopped early by {halving_text(record)}{where}: "
            f"{trained} of {planned} epochs trained{so_far}.")
    if halted:
        text += (" A stopped run's metrics are those of its shorter training, not of the full length the "
                 "others trained: read them as why it was stopped, not as what it would have reached.")
    return text


def field_name(setting: str) -> str:
    """A column name Vega-Lite takes literally (a dot would mean a nested field)."""
    return re.sub(r"\W", "_", setting)


PANEL_WIDTH, PANEL_HEIGHT, PANEL_COLUMNS = 260, 240, 3  # a third setting: one panel per value, 3 a row


def sweep_chart(frame: pd.DataFrame, axes: list[dict], metric: str = "test_accuracy") -> alt.TopLevelMixin:
    """Mean of `metric` against the first swept setting, one line per value of the second, error bars
    of ±1 standard deviation; with a third setting, one panel per its value (the same y scale in every
    panel, three panels a row). Points without a finished run are left out."""
    x_axis, series_axis, panel_axis = (list(axes) + [None, None])[:3]
    x = field_name(x_axis["setting"])
    series = field_name(series_axis["setting"]) if series_axis else None
    numeric_x = is_numeric_axis(x_axis["values"])
    finished = frame[frame[f"{metric}_mean"].notna()]
    data = pd.DataFrame({
        x: [v if numeric_x else value_label(v) for v in finished[x_axis["setting"]]],
        "mean": finished[f"{metric}_mean"].astype(float),
        "std": finished[f"{metric}_std"].astype(float).fillna(0.0),
        "n": finished[f"{metric}_n"].astype(int)})
    data["lower"], data["upper"] = data["mean"] - data["std"], data["mean"] + data["std"]
    for axis in (series_axis, panel_axis):
        if axis:
            data[field_name(axis["setting"])] = [value_label(v) for v in finished[axis["setting"]]]
    title = METRIC_TITLES.get(metric, metric)
    encoding = {"x": _x_encoding(x, x_axis, numeric_x),
                "tooltip": [alt.Tooltip(f"{x}:{'Q' if numeric_x else 'N'}", title=x_axis["setting"]),
                            *[alt.Tooltip(f"{field_name(a['setting'])}:N", title=a["setting"])
                              for a in (series_axis, panel_axis) if a],
                            alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("std:Q", format=".4f"), "n:Q"]}
    if series_axis:
        encoding["color"] = alt.Color(f"{series}:N", title=series_axis["setting"],
                                      sort=[value_label(v) for v in series_axis["values"]])
    base = alt.Chart(data).encode(**encoding)
    # One colour when there is no second setting (else the error bars would be drawn black).
    colour = {} if series_axis else {"color": LINE_COLOR}
    bars = base.mark_errorbar(ticks={"size": 12}, **colour).encode(
        y=alt.Y("lower:Q", title=f"{title} (mean ± 1 std)", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".3~f" if metric not in RESOURCE_METRICS else ",.0f")), y2="upper:Q")
    lines = base.mark_line(point=True, **colour).encode(
        y=alt.Y("mean:Q", title=f"{title} (mean ± 1 std)", scale=alt.Scale(zero=False)))
    by = f", one line per {series_axis['setting']}" if series_axis else ""
    if not panel_axis:
        return (bars + lines).properties(title=f"{title} against {x_axis['setting']}{by}", height=CHART_HEIGHT)
    panels = [value_label(v) for v in panel_axis["values"]]
    return (bars + lines).properties(width=PANEL_WIDTH, height=PANEL_HEIGHT).facet(
        facet=alt.Facet(f"{field_name(panel_axis['setting'])}:N", title=panel_axis["setting"], sort=panels,
                        header=alt.Header(labelFontSize=12, titleFontSize=12, labelFontWeight="bold")),
        columns=min(PANEL_COLUMNS, len(panels))).properties(
        title=f"{title} against {x_axis['setting']}{by}, one panel per {panel_axis['setting']}")


def _x_encoding(x: str, axis: dict, numeric: bool) -> alt.X:
    values = axis["values"]
    if not numeric:
        return alt.X(f"{x}:N", title=axis["setting"], sort=[value_label(v) for v in values],
                     axis=alt.Axis(labelAngle=0))
    # Rates spanning decades (1e-4 .. 1e-2) read better on a log axis.
    wide = min(values) > 0 and max(values) / min(values) >= 10
    scale = alt.Scale(type="log") if wide else alt.Scale(zero=False, nice=False, padding=12)
    return alt.X(f"{x}:Q", title=axis["setting"], scale=scale, axis=alt.Axis(values=sorted(values)))


# ----------------------------------------------------------------------------- the sweep's runs

def sweep_caption(record: dict) -> str:
    """'`sweep-1` · dropout (0.2, 0.4) × optimizer (adam, sgd) · 3 seed(s) per point'."""
    axes = " × ".join(f"{a['setting']} ({', '.join(value_label(v) for v in a['values'])})" for a in record["axes"])
    repeats = (f"{record['cv_folds']}-fold cross-validation" if record.get("cv_folds")
               else f"{record.get('repeats', 1)} seed(s) per point")
    halving = f" · {halving_text(record)}" if halving_on(record) else ""
    return f"`{record['id']}` · {axes} · {repeats}{halving}"


def run_state(store: RunStore, run_id: str) -> str:
    """A run's state; 'deleted' when it is gone from the store."""
    try:
        return store.get(run_id).state()
    except KeyError:
        return "deleted"


def run_states(store: RunStore, record: dict) -> list[str]:
    return [run_state(store, entry["run_id"]) for entry in record["runs"]]


def is_active(store: RunStore, record: dict) -> bool:
    """Whether some run of the sweep is still queued or running."""
    return any(state in ACTIVE_STATES for state in run_states(store, record))


def launch_progress(record: dict, states: list[str]) -> tuple[float | None, str]:
    """(share of runs ended, text) while runs are active; (None, the closing line) once all ended."""
    active = sum(state in ACTIVE_STATES for state in states)
    ended, name = len(states) - active, record.get("name") or record["id"]
    if not active:
        return None, f"Sweep {name} finished: {states.count('done')} of {len(states)} runs done. Results below."
    return ended / max(1, len(states)), \
        f"Sweep {name}: {ended} of {len(states)} runs ended, {active} queued or running"


def stop_sweep(store: RunStore, record: dict, cancel: Callable[[str], bool]) -> list[str]:
    """Stop the sweep's active runs with `cancel` (JobManager.cancel: a queued run is cancelled at once,
    a running one stops after its current batch); the ids it stopped."""
    active = [entry["run_id"] for entry in record["runs"] if run_state(store, entry["run_id"]) in ACTIVE_STATES]
    return [run_id for run_id in active if cancel(run_id)]


MEMBER_COLUMNS = ["run_id", "state", "point", "repeat", "test_accuracy", "halted at epoch"]


def member_table(store: RunStore, record: dict) -> pd.DataFrame:
    """One row per run of the sweep: id, state ('deleted' when gone), its point, its seed or fold, test
    accuracy, and the epoch successive halving stopped it at (None: it was not stopped)."""
    rows = []
    for entry in record["runs"]:
        try:
            run = store.get(entry["run_id"])
            described, halted = run.describe(), run.summary().get("halted") or {}
        except KeyError:
            described, halted = {"state": "deleted"}, {}
        repeat = f"fold {entry['fold'] + 1}" if record.get("cv_folds") else f"seed {entry['seed']}"
        rows.append({"run_id": entry["run_id"], "state": described.get("state"),
                     "point": ", ".join(f"{k}={value_label(v)}" for k, v in entry["point"].items()),
                     "repeat": repeat, "test_accuracy": described.get("test_accuracy"),
                     "halted at epoch": halted.get("epoch")})
    return pd.DataFrame(rows, columns=MEMBER_COLUMNS)


def compare_labels(members: pd.DataFrame) -> dict[str, str]:
    """Run id -> 'dropout=0.2 · seed 1' for the runs still in the store."""
    present = members[members["state"] != "deleted"]
    return dict(zip(present["run_id"], present["point"] + " · " + present["repeat"]))


def compare_offer(members: pd.DataFrame, limit: int) -> list[str]:
    """The first finished run of each point (one line per point), at most `limit`."""
    done = members[members["state"] == "done"]
    return done.drop_duplicates("point")["run_id"].tolist()[:limit]


def compare_pick(current: list[str] | None, offered: list[str] | None, offer: list[str],
                 available) -> tuple[list[str], list[str] | None]:
    """(runs to pick, the offer standing now): the new offer while the user kept the last one (so it
    grows as runs finish), else the user's own pick; runs deleted meanwhile are dropped."""
    if current is None or current == offered:
        current = offered = offer
    return [run_id for run_id in current if run_id in available], offered


# ----------------------------------------------------------------------------- import

def import_zip_bytes(store: RunStore, content: bytes):
    """Import an uploaded zip (runs or a whole sweep); raises ImportRefused or OSError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "import.zip"
        path.write_bytes(content)
        return import_archive(store, path)


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def import_summary(result) -> str:
    """What an import did, in one sentence: 'Imported 2 runs and sweep `s`; 3 runs already here, skipped.'"""
    added = [_runs(len(result.imported))] if result.imported else []
    if result.sweep_id and not result.sweep_skipped:
        added.append(f"sweep `{result.sweep_id}`")
    kept = []
    if result.skipped:
        kept.append(f"{_runs(len(result.skipped))} already here, skipped")
    if result.sweep_skipped:
        kept.append(f"sweep `{result.sweep_id}` already here, skipped")
    text = f"Imported {' and '.join(added)}" if added else "Nothing new imported"
    return text + (f"; {'; '.join(kept)}." if kept else ".")
