"""What the Diagnose page says and draws, without Streamlit: run labels, the threshold's origin, a
diagnosis's headline, the probability chart and the results table (what a heatmap shows is said by
core.ml.explain.Explanation).

Plain Python, pandas and Altair on core.ml.diagnosis's Diagnosis (passed in, never imported here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import altair as alt
import pandas as pd


PREDICTED_COLOR, OTHER_COLOR = "#d62728", "#4c78a8"
DISPLAY_MAX_SIDE = 1600  # overlays of huge uploads are drawn on a copy this large, for speed


@dataclass
class Controls:
    """What the user chose above the uploads."""
    threshold: float | None
    method: str | None  # None: no maps (a linear model)
    opacity: float
    class_name: str | None  # None: explain the predicted class
    feature_layer: str | None = None  # None: Grad-CAM's automatic choice
    tta: bool = False  # also average the probabilities over core.ml.tta's views


def tasks_of(runs) -> list[str]:
    return sorted({run.config().get("task", "binary") for run in runs})


def default_task(tasks: list[str]) -> str:
    return "binary" if "binary" in tasks else tasks[0]


def runs_of_task(runs, task: str) -> list:
    return [run for run in runs if run.config().get("task", "binary") == task]


def display_copy(image):
    """A copy of the upload at most DISPLAY_MAX_SIDE on a side, to draw and overlay."""
    shown = image.copy()
    shown.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    return shown


def run_label(run, state_note: str, best: bool) -> str:
    """'name · arch · 128 px · <state note> · best' for the run picker."""
    config = run.config()
    return " · ".join([run.display_name(), str(config.get("arch")), f"{config.get('image_size')} px",
                       *([state_note] if state_note else []), *(["best"] if best else [])])


def threshold_origin(saved: float | None) -> str:
    return (f"The run's best-F1 threshold on validation is {saved:.2f}." if saved is not None
            else "The run saved no threshold, so it starts at 0.5.")


def headline(result, threshold: float | None) -> str:
    """'**x.png**: predicted **PNEUMONIA** (disease score 0.912 vs threshold 0.50)'."""
    detail = ""
    if result.score is not None:
        versus = "" if threshold is None else f" vs threshold {threshold:.2f}"
        detail = f" (disease score {result.score:.3f}{versus})"
    return f"**{result.file}**: predicted **{result.predicted}**{detail}"


def tta_sentence(result, threshold: float | None) -> str:
    """What test-time augmentation says of a diagnosis, beside the plain prediction, and its cost."""
    with_tta = result.tta
    return (f"With test-time augmentation: {averaged_says(with_tta, result, threshold, 'without it')}. "
            f"Cost: {with_tta.passes} forward passes instead of 1, +{with_tta.extra_seconds * 1000:.0f} ms "
            f"(the plain prediction took {with_tta.plain_seconds * 1000:.0f} ms).")


def ensemble_sentence(result, threshold: float | None) -> str:
    """What the ensemble says of a diagnosis, beside this run's prediction, and its cost."""
    averaged = result.ensemble
    return (f"Ensemble of {averaged.passes} runs ({', '.join(averaged.run_ids)}), their probabilities averaged: "
            f"{averaged_says(averaged, result, threshold, 'this run alone')}. Cost: {averaged.passes} forward "
            f"passes instead of 1, +{averaged.seconds * 1000:.0f} ms.")


def averaged_says(averaged, result, threshold: float | None, than: str) -> str:
    """'predicted **X**, disease score 0.7 vs threshold 0.5 (the same class); P(A) 0.3, P(B) 0.7' of averaged
    probabilities (TTA's or an ensemble's), compared with the diagnosis `result` ('another class than ...')."""
    score = "" if averaged.score is None else (f", disease score {averaged.score:.3f}"
                                               + ("" if threshold is None else f" vs threshold {threshold:.2f}"))
    same = "the same class" if averaged.predicted == result.predicted else f"**another class** than {than}"
    chances = ", ".join(f"P({name}) {p:.3f}" for name, p in averaged.probabilities.items())
    return f"predicted **{averaged.predicted}**{score} ({same}); {chances}"


def probability_chart(result) -> alt.Chart:
    """Bars of every class's probability, the predicted class in red."""
    frame = pd.DataFrame({"label": list(result.probabilities), "probability": list(result.probabilities.values())})
    return alt.Chart(frame, title=f"Class probabilities: {result.file}", height=220).mark_bar().encode(
        x=alt.X("label:N", title="Class", sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("probability:Q", title="Probability", scale=alt.Scale(domain=[0, 1])),
        color=alt.condition(alt.datum.label == result.predicted, alt.value(PREDICTED_COLOR), alt.value(OTHER_COLOR)),
        tooltip=[alt.Tooltip("label:N", title="class"), alt.Tooltip("probability:Q", format=".3f")],
    )


def results_frame(results: list, thumbnail: Callable) -> pd.DataFrame:
    """One row per file: a thumbnail (a data URL, none for a refused file) and Diagnosis.row()."""
    return pd.DataFrame([{"thumbnail": thumbnail(r.image) if r.ok else None, **r.row()} for r in results])
