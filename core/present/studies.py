"""What the Studies page needs, without Streamlit: the gallery, a study's sweeps, its results with
value labels, the one-sentence answer, its charts and its report (core.present.study_report).

A study's runs are an ordinary sweep (core.store.sweeps) whose record names the study; its results
are the sweep's (mean ± std per value), read through the study's labels.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from datetime import datetime

import altair as alt
import pandas as pd

from core.present import study_answer, study_report
from core.present.compare import format_count
from core.present.sweeps import (
    METRIC_TITLES,
    display_frame,
    is_numeric_axis,
    mean_std_text,
    results_frame,
    sweep_chart,
    value_label,
)
from core.present.forms import DATASET_FIELDS, complete_dataset_settings, dataset_label
from core.settings.studies import FITS, STUDIES, Study, get_study, misfit, study_spec
from core.store.runs import RunStore
from core.store.sweeps import Sweep, list_sweeps, sweep_results

LOWER_IS_BETTER = ("best_val_loss", "accuracy_gap", "wall_s", "peak_memory_mb", "peak_gpu_memory_mb")
SCORE_METRICS = ("test_accuracy", "test_macro_f1", "test_auc", "val_accuracy", "best_val_loss", "train_accuracy",
                 "accuracy_gap")
# What the speed and memory studies chart against their setting, when the runs recorded it.
RESOURCE_CHARTS = ("images_per_sec", "peak_memory_mb", "peak_gpu_memory_mb")
TASKS = ("binary", "subtype")  # the built-in set's tasks
VARIANT_TITLES = {"quick": "Quick (about 10 minutes on a 2-core CPU)", "full": "Full (for a GPU)"}


# ----------------------------------------------------------------------------- the gallery

def gallery(store: RunStore) -> list[dict]:
    """One card per study: its title, question, the datasets it fits and its latest sweep here."""
    latest = latest_sweeps(store)
    return [{"key": study.key, "title": study.title, "question": study.question, "fits": FITS[study.fits],
             "latest": latest.get(study.key)} for study in STUDIES.values()]


def varies_text(study: Study) -> str:
    """'dropout: 0.2, 0.4, 0.6, 0.8'; a grid study's settings joined by '×'."""
    return " × ".join(f"{axis_label(axis.setting)}: " + ", ".join(axis.labels or [value_label(v) for v in axis.values])
                      for axis in study.axes())


def study_dataset(study: Study, dataset: dict, task: str = "binary") -> tuple[dict, str | None]:
    """(the dataset settings the study runs on, a note or None): the loaded dataset (Dataset page) when
    the study fits it, with `task` for the built-in set; else the built-in set, and the note says why.
    The image size stays the variant's (64 px quick)."""
    chosen = {key: dataset[key] for key in DATASET_FIELDS if key in dataset and key != "image_size"}
    if chosen.get("data_source", "builtin") == "builtin":
        chosen["task"] = task
    why = misfit(study, chosen)
    if why is None:
        return chosen, None
    return {"task": task}, f"{why}: it runs on the built-in chest X-rays instead."


def dataset_text(settings: dict) -> str:
    """'Built-in chest X-rays · Normal vs pneumonia · val 15% / test 15%, split seed 42': the dataset
    a study runs on, without the image size (each variant sets its own)."""
    source, task, _size, split = dataset_label(complete_dataset_settings(settings)).split(" · ", 3)
    return " · ".join((source, task, split))


def variant_sweep(key: str, variant: str, task: str = "binary", dataset: dict | None = None) -> Sweep:
    """The study's runs as a validated sweep (ValueError with the reason otherwise): on `dataset`
    (study_dataset's), else on the built-in set with `task`."""
    return Sweep.from_dict(study_spec(key, variant, dataset or {"task": task}))


def plan_text(sweep: Sweep) -> str:
    """'4 values × 2 seeds = 8 runs of 3 epochs at 64 px on 50% of the training patients' ('3 × 2 values'
    for a grid); what the study varies is left out ('... runs at 64 px on 50% of ...' for the epochs study)."""
    base, swept = sweep.base, {axis.setting for axis in sweep.axes}
    counts = [len(axis.values) for axis in sweep.axes]
    repeats = f"{sweep.cv_folds} folds" if sweep.cv_folds else f"{sweep.repeats} seed{'s' * (sweep.repeats > 1)}"
    runs = math.prod(counts) * (sweep.cv_folds or sweep.repeats)
    share = "all" if base.train_fraction >= 1 else f"{base.train_fraction:.0%} of"
    parts = {"epochs": f" of {base.epochs} epochs", "image_size": f" at {base.image_size} px",
             "train_fraction": f" on {share} the training patients"}
    return f"{' × '.join(map(str, counts))} values × {repeats} = {runs} runs" + "".join(
        text for setting, text in parts.items() if setting not in swept)


def latest_sweeps(store: RunStore) -> dict[str, dict]:
    """The newest sweep record of each study run here."""
    latest = {}
    for record in list_sweeps(store):  # newest first
        latest.setdefault(record.get("study") or "", record)
    latest.pop("", None)
    return latest


def study_sweeps(store: RunStore, key: str) -> list[dict]:
    return [record for record in list_sweeps(store) if record.get("study") == key]


def sweep_title(record: dict) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("created", 0)))
    return f"{record.get('variant') or 'custom'} · {created} · {len(record.get('runs', []))} runs"


# ----------------------------------------------------------------------------- results

def results_for(store: RunStore, record: dict) -> pd.DataFrame:
    """The sweep's results frame (core.present.sweeps.results_frame) with each point's 'label'."""
    axes = record["axes"]
    frame = results_frame(sweep_results(store, record["id"]), [axis["setting"] for axis in axes])
    frame["label"] = point_labels(axes)
    return frame


def axis_labels(axis: dict) -> list[str]:
    return list(axis.get("labels") or [value_label(v) for v in axis["values"]])


def point_labels(axes: list[dict]) -> list[str]:
    """Each point's label, in grid order: its value's for one setting; for a grid, every setting named
    ('optimizer sgd, learning rate 0.01')."""
    if len(axes) == 1:
        return axis_labels(axes[0])
    return [", ".join(f"{axis_label(axis['setting'])} {label}" for axis, label in zip(axes, combo))
            for combo in itertools.product(*(axis_labels(axis) for axis in axes))]


def label_of(axis: dict, value) -> str:
    """A value's label on its axis (its own text when the axis has no labels)."""
    keys = [_key(v) for v in axis["values"]]
    return axis_labels(axis)[keys.index(_key(value))]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def points(frame: pd.DataFrame, settings: list[str], metric: str) -> list[dict]:
    """The conclusion's input: one point per grid point, in axis order (mean None: nothing finished)."""
    return [{"label": row["label"], "value": row[settings[0]] if len(settings) == 1 else tuple(row[s] for s in settings),
             "mean": _number(row[f"{metric}_mean"]), "std": _number(row[f"{metric}_std"]),
             "n": int(row[f"{metric}_n"])} for _, row in frame.iterrows()]


def _number(value):
    return None if value is None or pd.isna(value) else float(value)


def swept(record: dict) -> list[str]:
    return [axis["setting"] for axis in record["axes"]]


def answer(record: dict, frame: pd.DataFrame, metric: str) -> str:
    """The study's question answered in one sentence (two for the speed and memory studies)."""
    study = get_study(record["study"])
    settings = swept(record)
    # labels that say what they are ("3 conv layers", a grid's "optimizer sgd, ...") need no setting before them
    label = "" if study.labels or len(settings) > 1 else setting_label(study)
    sentence = study_answer.conclusion(points(frame, settings, metric), setting_label=label,
                                       metric_title=METRIC_TITLES.get(metric, metric),
                                       higher_is_better=metric not in LOWER_IS_BETTER,
                                       repeat_unit="fold" if record.get("cv_folds") else "seed")
    if not study.measures_resources:
        return sentence
    measured = {METRIC_TITLES[m]: points(frame, settings, m) for m in RESOURCE_CHARTS
                if frame[f"{m}_mean"].notna().any()}
    trend = study_answer.trend_conclusion(measured, setting_label=label) if measured else ""
    return f"{trend} {sentence}".strip()


def axis_label(setting: str) -> str:
    return setting.split(".")[-1].replace("_", " ")


def setting_label(study: Study) -> str:
    """'dropout'; a grid study's settings joined: 'optimizer × learning rate'."""
    return " × ".join(axis_label(axis.setting) for axis in study.axes())


def table(record: dict, frame: pd.DataFrame, metrics) -> pd.DataFrame:
    """The results table: each setting's value labels, runs done, mean ± std per metric, the epochs
    trained where early stopping ended runs sooner, and the model's size where it differs between
    points (wide vs deep, the model families)."""
    settings = swept(record)
    shown = display_frame(frame, settings, metrics)
    for axis in record["axes"]:
        shown[axis["setting"]] = [label_of(axis, value) for value in frame[axis["setting"]]]
    if not record.get("halving_rate") and (frame["epochs_trained"] < frame["epochs_planned"]).any():
        shown["epochs trained (mean)"] = [_mean_epochs(t, p, r) for t, p, r in
                                          zip(frame["epochs_trained"], frame["epochs_planned"], frame["runs"])]
    if frame["trainable_params"].nunique(dropna=True) > 1:
        shown["trainable parameters"] = [_count(v) for v in frame["trainable_params"]]
        shown["MACs per image"] = [_count(v) for v in frame["macs"]]
    return shown.rename(columns={setting: axis_label(setting) for setting in settings})


def _mean_epochs(trained: int, planned: int, runs: int) -> str:
    return f"{trained / runs:.1f} of {planned / runs:g}" if runs and planned else "—"


def table_metrics(record: dict, metric: str) -> list[str]:
    """The table's metrics: the chosen score, the other test scores, the overfitting gap, and what a
    speed and memory study measures (or the training time)."""
    study = get_study(record["study"])
    scores = [metric] + [m for m in ("test_accuracy", "test_auc", "test_macro_f1", "accuracy_gap") if m != metric]
    return scores + (list(RESOURCE_CHARTS) + ["wall_s"] if study.measures_resources else ["wall_s"])


def failure_reasons(store: RunStore, record: dict) -> str | None:
    """Why runs of the study failed (each distinct reason once), or None."""
    reasons: dict[str, int] = {}
    for entry in record["runs"]:
        try:
            run = store.get(entry["run_id"])
        except KeyError:
            continue
        if run.state() == "failed":
            reason = run.status().get("error") or "no reason recorded"
            reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return None
    return " ".join(f"{n} run(s) failed: {reason}" for reason, n in reasons.items())


MODEL_SETTINGS = ("arch", "arch_params.filters", "arch_params.batch_norm", "arch_params.dense_layers", "image_size")


def layer_tables(store: RunStore, record: dict) -> list[tuple[str, list[dict]]]:
    """For a study whose values change the model: each value's per-layer table (its first run that
    saved one), in axis order; [] for the other studies (and grids)."""
    axis = record["axes"][0]
    if axis["setting"] not in MODEL_SETTINGS or len(record["axes"]) > 1:
        return []
    tables = []
    for value, label in zip(axis["values"], axis_labels(axis)):
        members = [e["run_id"] for e in record["runs"] if e["point"] == {axis["setting"]: value}]
        rows = next((rows for run_id in members for rows in [_layers_of(store, run_id)] if rows), None)
        if rows:
            tables.append((label, rows))
    return tables


def _layers_of(store: RunStore, run_id: str) -> list[dict]:
    try:
        return store.get(run_id).layer_table()
    except KeyError:
        return []


def _count(value) -> str:
    return "—" if value is None or pd.isna(value) else format_count(int(value))


def charts(record: dict, frame: pd.DataFrame, metric: str) -> list[tuple[str, alt.Chart]]:
    """The score chart (mean ± 1 std per value) and, for the speed and memory studies, one chart per
    resource the runs recorded."""
    study = get_study(record["study"])
    wanted = [metric] + ([m for m in RESOURCE_CHARTS if frame[f"{m}_mean"].notna().any()]
                         if study.measures_resources else [])
    return [(METRIC_TITLES[m], labelled_chart(record, frame, m)) for m in wanted if frame[f"{m}_mean"].notna().any()]


def labelled_chart(record: dict, frame: pd.DataFrame, metric: str) -> alt.TopLevelMixin:
    """core.present.sweeps.sweep_chart, with the study's labels on every setting that has them (a
    numeric setting without labels keeps its numeric axis)."""
    labelled, axes = frame.copy(), []
    for axis in record["axes"]:
        if axis.get("labels") or not is_numeric_axis(axis["values"]):
            labelled[axis["setting"]] = [label_of(axis, value) for value in frame[axis["setting"]]]
            axis = {"setting": axis["setting"], "values": axis_labels(axis)}
        axes.append(axis)
    return sweep_chart(labelled, axes, metric)


# ----------------------------------------------------------------------------- what such reports found

def reference_text(study: Study) -> str | None:
    """'What such reports found (source)', or None for a study without a reference."""
    found = study.reference
    return f"{found.finding} ({found.source})" if found else None


def beside(record: dict, frame: pd.DataFrame) -> pd.DataFrame | None:
    """Such reports' figures beside this run's test accuracy at the values that match them: one row per
    figure ('—' where this study has no such value, or it has no finished run); None without figures."""
    found = get_study(record["study"]).reference
    if not found or not found.figures:
        return None
    rows = []
    for figure in found.figures:
        match = frame[frame["label"].isin(figure.matches)]
        here = match.iloc[0] if len(match) else None
        rows.append({"reported": figure.what, "on": found.measured_on, "figure": f"{figure.value:.3f}",
                     "here": here["label"] if here is not None else "—",
                     "test accuracy here": "—" if here is None else mean_std_text(
                         here["test_accuracy_mean"], here["test_accuracy_std"], here["test_accuracy_n"], here["done"])})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the report

def report(store: RunStore, record: dict, metric: str) -> study_report.StudyReport:
    frame = results_for(store, record)
    study = get_study(record["study"])
    metrics = table_metrics(record, metric)
    repeats = (f"{record['cv_folds']}-fold cross-validation grouped by patient" if record.get("cv_folds")
               else f"{record.get('repeats', 1)} seeds per value")
    return study_report.StudyReport(
        title=f"{study.title} ({record.get('variant') or 'custom'})", question=study.question,
        conclusion=answer(record, frame, metric), setting=setting_label(study),
        base_settings=record["base"], table=table(record, frame, metrics), charts=charts(record, frame, metric),
        repeats=repeats, run_ids=[entry["run_id"] for entry in record["runs"]],
        created=datetime.fromtimestamp(record.get("created") or time.time()),
        results=study_report.results_numbers({METRIC_TITLES[m]: points(frame, swept(record), m)
                                               for m in metrics}, setting_label=setting_label(study)),
        reference=reference_text(study) or "", beside=beside(record, frame))

