"""What the Studies page needs, without Streamlit: the gallery, a study's sweeps, its results with
value labels, the one-sentence answer, its charts and its report (core.present.study_report).

A study's runs are an ordinary sweep (core.store.sweeps) whose record names the study; its results
are the sweep's (mean ± std per value), read through the study's labels.
"""
from __future__ import annotations

import time
from datetime import datetime

import altair as alt
import pandas as pd

from core.present import study_report
from core.present.compare import format_count
from core.present.sweeps import (
    METRIC_TITLES,
    display_frame,
    is_numeric_axis,
    results_frame,
    sweep_chart,
    value_label,
)
from core.settings.studies import STUDIES, Study, get_study, study_spec
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
    """One card per study: its title, question and its latest sweep here."""
    latest = latest_sweeps(store)
    return [{"key": study.key, "title": study.title, "question": study.question, "latest": latest.get(study.key)}
            for study in STUDIES.values()]


def varies_text(study: Study) -> str:
    """'dropout: 0.2, 0.4, 0.6, 0.8'."""
    return f"{setting_label(study)}: " + ", ".join(
        study.labels or [value_label(v) for v in study.values])


def variant_sweep(key: str, variant: str, task: str = "binary") -> Sweep:
    """The study's runs as a validated sweep (ValueError with the reason otherwise)."""
    return Sweep.from_dict(study_spec(key, variant, {"task": task}))


def plan_text(sweep: Sweep) -> str:
    """'4 values × 2 seeds = 8 runs of 3 epochs at 64 px on 50% of the training patients'; what the
    study varies is left out ('... runs at 64 px on 50% of ...' for the epochs study)."""
    values, base, swept = len(sweep.axes[0].values), sweep.base, sweep.axes[0].setting
    repeats = f"{sweep.cv_folds} folds" if sweep.cv_folds else f"{sweep.repeats} seed{'s' * (sweep.repeats > 1)}"
    runs = values * (sweep.cv_folds or sweep.repeats)
    share = "all" if base.train_fraction >= 1 else f"{base.train_fraction:.0%} of"
    parts = {"epochs": f" of {base.epochs} epochs", "image_size": f" at {base.image_size} px",
             "train_fraction": f" on {share} the training patients"}
    return f"{values} values × {repeats} = {runs} runs" + "".join(
        text for setting, text in parts.items() if setting != swept)


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
    """The sweep's results frame (core.present.sweeps.results_frame) with each value's 'label'."""
    axis = record["axes"][0]
    frame = results_frame(sweep_results(store, record["id"]), [axis["setting"]])
    frame["label"] = axis_labels(axis)
    return frame


def axis_labels(axis: dict) -> list[str]:
    return list(axis.get("labels") or [value_label(v) for v in axis["values"]])


def points(frame: pd.DataFrame, setting: str, metric: str) -> list[dict]:
    """The conclusion's input: one point per value, in axis order (mean None: nothing finished)."""
    return [{"label": row["label"], "value": row[setting], "mean": _number(row[f"{metric}_mean"]),
             "std": _number(row[f"{metric}_std"]), "n": int(row[f"{metric}_n"])} for _, row in frame.iterrows()]


def _number(value):
    return None if value is None or pd.isna(value) else float(value)


def answer(record: dict, frame: pd.DataFrame, metric: str) -> str:
    """The study's question answered in one sentence (two for the speed and memory studies)."""
    study = get_study(record["study"])
    setting = study.setting
    label = "" if study.labels else setting_label(study)  # labels say what they are: "3 conv layers"
    sentence = study_report.conclusion(points(frame, setting, metric), setting_label=label,
                                       metric_title=METRIC_TITLES.get(metric, metric),
                                       higher_is_better=metric not in LOWER_IS_BETTER,
                                       repeat_unit="fold" if record.get("cv_folds") else "seed")
    if not study.measures_resources:
        return sentence
    measured = {METRIC_TITLES[m]: points(frame, setting, m) for m in RESOURCE_CHARTS if frame[f"{m}_mean"].notna().any()}
    trend = study_report.trend_conclusion(measured, setting_label=label) if measured else ""
    return f"{trend} {sentence}".strip()


def setting_label(study: Study) -> str:
    return study.setting.split(".")[-1].replace("_", " ")


def table(record: dict, frame: pd.DataFrame, metrics) -> pd.DataFrame:
    """The results table: each value's label, runs done, mean ± std per metric, and the model's size
    where it differs between values (wide vs deep, the model families)."""
    setting = record["axes"][0]["setting"]
    shown = display_frame(frame, [setting], metrics)
    shown[setting] = frame["label"].tolist()
    if frame["trainable_params"].nunique(dropna=True) > 1:
        shown["trainable parameters"] = [_count(v) for v in frame["trainable_params"]]
        shown["MACs per image"] = [_count(v) for v in frame["macs"]]
    return shown.rename(columns={setting: setting_label(get_study(record["study"]))})


def table_metrics(record: dict, metric: str) -> list[str]:
    """The table's metrics: the chosen score, the other test scores, and what a speed and memory study
    measures (or the training time)."""
    study = get_study(record["study"])
    scores = [metric] + [m for m in ("test_accuracy", "test_auc", "test_macro_f1") if m != metric]
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


MODEL_SETTINGS = ("arch", "arch_params.filters", "arch_params.batch_norm", "image_size")


def layer_tables(store: RunStore, record: dict) -> list[tuple[str, list[dict]]]:
    """For a study whose values change the model: each value's per-layer table (its first run that
    saved one), in axis order; [] for the other studies."""
    axis = record["axes"][0]
    if axis["setting"] not in MODEL_SETTINGS:
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


def labelled_chart(record: dict, frame: pd.DataFrame, metric: str) -> alt.LayerChart:
    """core.present.sweeps.sweep_chart, with the study's labels on a categorical axis."""
    axis = record["axes"][0]
    if is_numeric_axis(axis["values"]):
        return sweep_chart(frame, [axis], metric)
    labelled = frame.copy()
    labelled[axis["setting"]] = labelled["label"]
    return sweep_chart(labelled, [{"setting": axis["setting"], "values": axis_labels(axis)}], metric)


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
        results=study_report.results_numbers({METRIC_TITLES[m]: points(frame, record["axes"][0]["setting"], m)
                                               for m in metrics}, setting_label=setting_label(study)))

