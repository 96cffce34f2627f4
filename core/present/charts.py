"""Altair chart builders for the dashboard. They take plain data (dicts, lists, DataFrames), never
Streamlit objects, so they can be unit-tested and reused. Every chart has a title and axis labels.

Class colours are defined once here (`class_color`) so NORMAL is the same blue on every page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import altair as alt
import pandas as pd

# One colour per known class name (case-insensitive); any other class takes the generic palette.
KNOWN_CLASS_COLORS = {
    "normal": "#4C78A8",      # blue
    "pneumonia": "#E45756",   # red
    "bacterial": "#F58518",   # orange
    "viral": "#B279A2",       # purple
}
GENERIC_PALETTE = ("#54A24B", "#EECA3B", "#72B7B2", "#FF9DA6", "#9D755D", "#BAB0AC",
                   "#439894", "#D67195", "#79706E", "#83BCB6")
SPLIT_DASH = {"train": [1, 0], "val": [6, 3]}
# Runs and curves need clearly different hues (the Streamlit theme's default is shades of blue).
SERIES_SCALE = alt.Scale(scheme="tableau10")
CHART_HEIGHT = 280
PARALLEL_FLOOR = -0.3  # room below a parallel-coordinates scale for off-scale values


def display_height(chart) -> int:
    """Pixels to give a chart on the page: its plot height plus room for title, axes and labels.
    (Streamlit's automatic height squashes layered charts such as the confusion matrix.)"""
    height = chart.height if isinstance(chart.height, (int, float)) else CHART_HEIGHT
    return int(height) + 130


def class_color(name: str, index: int = 0) -> str:
    """The colour of a class: fixed for chest X-ray classes, the index-th generic colour otherwise."""
    return KNOWN_CLASS_COLORS.get(str(name).lower(), GENERIC_PALETTE[index % len(GENERIC_PALETTE)])


def class_colors(class_names) -> list[str]:
    generic = 0
    colors = []
    for name in class_names:
        if str(name).lower() in KNOWN_CLASS_COLORS:
            colors.append(KNOWN_CLASS_COLORS[str(name).lower()])
        else:
            colors.append(class_color(name, generic))
            generic += 1
    return colors


def class_scale(class_names) -> alt.Scale:
    names = [str(n) for n in class_names]
    return alt.Scale(domain=names, range=class_colors(names))


# ----------------------------------------------------------------------------- dataset

def class_counts_chart(counts: dict[str, dict[str, int]], title: str = "Images per class and split") -> alt.Chart:
    """Grouped bars from {split: {class: n}} (a SplitReport's counts)."""
    rows = [{"split": split, "class": cls, "images": n}
            for split, per_class in counts.items() for cls, n in per_class.items()]
    frame = pd.DataFrame(rows, columns=["split", "class", "images"])
    class_names = list(dict.fromkeys(frame["class"]))
    return alt.Chart(frame, title=title, height=CHART_HEIGHT).mark_bar().encode(
        x=alt.X("split:N", title="Split", sort=list(counts), axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("class:N", sort=class_names),
        y=alt.Y("images:Q", title="Images"),
        color=alt.Color("class:N", title="Class", scale=class_scale(class_names)),
        tooltip=["split", "class", "images"],
    )


# ----------------------------------------------------------------------------- training curves

@dataclass(frozen=True)
class Curve:
    """A per-epoch curve: its title, (split, metrics.jsonl key) of each series, log axis by default."""
    title: str
    series: tuple[tuple[str, str], ...]
    log_by_default: bool = False


# Each epoch's model decides by argmax (the run's threshold is chosen on validation after training),
# so the thresholded curves say so: the same label means the same number everywhere.
CURVES = {
    "loss": Curve("Loss", (("train", "loss"), ("val", "val_loss"))),
    "accuracy": Curve("Accuracy @ argmax", (("train", "accuracy"), ("val", "val_accuracy"))),
    "val_auc": Curve("Validation AUC", (("val", "val_auc"),)),
    "val_macro_f1": Curve("Validation macro-F1 @ argmax", (("val", "val_macro_f1"),)),
    "learning_rate": Curve("Learning rate", (("train", "learning_rate"),), log_by_default=True),
}
FIRST_EPOCH_BATCHES = "first_epoch_batches"  # the first epoch's loss batch by batch (batches.json)
CURVE_TITLES = {**{name: curve.title for name, curve in CURVES.items()},
                FIRST_EPOCH_BATCHES: "First-epoch loss per batch"}
SMOOTHING_MAX = 0.99
RAW_OPACITY = 0.25  # the unsmoothed curve, faint behind the smoothed one (as TensorBoard draws it)
SPLIT_COLORS = {"train": "#4C78A8", "val": "#F58518"}
EPOCH_AXIS = alt.Axis(tickMinStep=1, format="d")


def smoothed(values, weight: float) -> list:
    """TensorBoard's smoothing: an exponential moving average debiased for its zero start, so the
    first points are not pulled toward 0. Weight 0 gives the values back; missing or non-finite
    values stay as they are and do not enter the average."""
    if not 0 <= weight <= SMOOTHING_MAX:
        raise ValueError(f"smoothing must be between 0 and {SMOOTHING_MAX}, got {weight}")
    result, last, steps = [], 0.0, 0
    for value in values:
        if value is None or not math.isfinite(value):
            result.append(value)
            continue
        last, steps = last * weight + (1 - weight) * value, steps + 1
        result.append(last / (1 - weight ** steps))
    return result


def history_frame(history: list[dict], metric: str) -> pd.DataFrame:
    """Long frame (epoch, split, value) of a curve of CURVES, or of `metric` and `val_<metric>`,
    from per-epoch rows; rows without the value (e.g. runs from before it was recorded) are left out."""
    series = CURVES[metric].series if metric in CURVES else (("train", metric), ("val", f"val_{metric}"))
    rows = []
    for row in history:
        for split, key in series:
            if row.get(key) is not None:
                rows.append({"epoch": row["epoch"], "split": split, "value": row[key]})
    return pd.DataFrame(rows, columns=["epoch", "split", "value"])


def batches_frame(batches: list[dict]) -> pd.DataFrame:
    """Long frame (batch, series, value) of batches.json: each batch's own loss and Keras' running mean."""
    rows = [{"batch": row["batch"], "series": series, "value": row[key]}
            for row in batches for series, key in (("batch loss", "loss"), ("running mean", "running_loss"))
            if row.get(key) is not None]
    return pd.DataFrame(rows, columns=["batch", "series", "value"])


def metric_title(metric: str) -> str:
    return CURVE_TITLES.get(metric, metric)


def available_curves(histories: list[list[dict]], with_batches: bool = False) -> list[str]:
    """The curves of CURVES some of these histories have values for (in CURVES' order), and the
    first epoch's batches when some run saved them."""
    present = {key for history in histories for row in history for key, value in row.items() if value is not None}
    names = [name for name, curve in CURVES.items() if any(key in present for _, key in curve.series)]
    return names + ([FIRST_EPOCH_BATCHES] if with_batches else [])


def log_scale_default(metric: str) -> bool:
    return metric in CURVES and CURVES[metric].log_by_default


def _with_smoothing(frame: pd.DataFrame, by: list[str], order: str, weight: float) -> pd.DataFrame:
    """The frame with a 'smoothed' column: each series (`by`) smoothed along `order`."""
    frame = frame.sort_values([*by, order]).reset_index(drop=True)
    frame["smoothed"] = pd.Series(dtype=float) if frame.empty else \
        frame.groupby(by, sort=False)["value"].transform(lambda v: pd.Series(smoothed(list(v), weight), index=v.index))
    return frame


def _curve_chart(frame: pd.DataFrame, *, x: alt.X, y_title: str, title: str, encodings: dict, by: list[str],
                 tooltip: list, smoothing: float, log_scale: bool) -> alt.Chart:
    """Lines of `frame` (x, value, series columns): raw with points, or raw faint behind the
    smoothed line; a log y axis drops values that are not positive (a log axis cannot show them)."""
    order = x.shorthand.split(":")[0]
    frame = frame.astype({"value": float, order: float})  # typed even when empty (old runs, no values)
    if log_scale:
        frame = frame[frame["value"] > 0]
    frame = _with_smoothing(frame, by, order, smoothing)
    # A log axis fitted to the data, not widened to whole powers of ten (AUCs would lie flat).
    y_scale = alt.Scale(type="log", nice=False) if log_scale else alt.Scale(zero=False)
    base = alt.Chart(frame).encode(x=x, **encodings)
    value_tip = alt.Tooltip("value:Q", format=".4g")
    if not smoothing:
        return base.mark_line(point=True).encode(
            y=alt.Y("value:Q", title=y_title, scale=y_scale), tooltip=[*tooltip, value_tip]).properties(
            title=title, height=CHART_HEIGHT)
    raw = base.mark_line(opacity=RAW_OPACITY).encode(
        y=alt.Y("value:Q", title=y_title, scale=y_scale), tooltip=[*tooltip, value_tip])
    line = base.mark_line().encode(
        y=alt.Y("smoothed:Q", title=y_title, scale=y_scale),
        tooltip=[*tooltip, alt.Tooltip("smoothed:Q", format=".4g"), value_tip])
    return alt.layer(raw, line).properties(title=f"{title} · smoothed {smoothing:.2f}", height=CHART_HEIGHT)


def history_chart(history: list[dict], metric: str = "loss", title: str | None = None,
                  smoothing: float = 0.0, log_scale: bool | None = None) -> alt.Chart:
    """Train vs validation curve of one run (or the one series a curve has)."""
    frame = history_frame(history, metric)
    splits = [split for split, _ in CURVES[metric].series] if metric in CURVES else ["train", "val"]
    default_title = f"{metric_title(metric)}: train vs validation" if len(splits) > 1 else metric_title(metric)
    colors = alt.Scale(domain=splits, range=[SPLIT_COLORS[split] for split in splits])
    return _curve_chart(frame, x=alt.X("epoch:Q", title="Epoch", axis=EPOCH_AXIS), y_title=metric_title(metric),
                        title=title or default_title, by=["split"],
                        encodings={"color": alt.Color("split:N", title="Split", scale=colors)},
                        tooltip=["epoch:Q", "split:N"], smoothing=smoothing,
                        log_scale=log_scale_default(metric) if log_scale is None else log_scale)


def compare_history_chart(histories: dict[str, list[dict]], metric: str = "loss", smoothing: float = 0.0,
                          log_scale: bool | None = None) -> alt.Chart:
    """Curves of several runs overlaid: colour = run, dash = train/val."""
    frames = [history_frame(rows, metric).assign(run=name) for name, rows in histories.items()]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "split", "value", "run"])
    two_splits = metric not in CURVES or len(CURVES[metric].series) > 1
    title = f"{metric_title(metric)} per epoch" + (" (solid: train, dashed: val)" if two_splits else "")
    dash = alt.StrokeDash("split:N", title="Split", scale=alt.Scale(domain=list(SPLIT_DASH),
                                                                    range=list(SPLIT_DASH.values())))
    return _curve_chart(frame, x=alt.X("epoch:Q", title="Epoch", axis=EPOCH_AXIS), y_title=metric_title(metric),
                        title=title, by=["run", "split"],
                        encodings={"color": alt.Color("run:N", title="Run", scale=SERIES_SCALE), "strokeDash": dash},
                        tooltip=["run:N", "epoch:Q", "split:N"], smoothing=smoothing,
                        log_scale=log_scale_default(metric) if log_scale is None else log_scale)


def batches_chart(batches_by_run: dict[str, list[dict]], smoothing: float = 0.0, log_scale: bool = False) -> alt.Chart:
    """The first epoch's loss batch by batch, of one run or several: each batch's own loss (solid)
    and Keras' running mean of the epoch (dashed), which is what the epoch's loss ends at."""
    frames = [batches_frame(rows).assign(run=name) for name, rows in batches_by_run.items()]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["batch", "series", "value", "run"])
    dash = alt.StrokeDash("series:N", title="Series", scale=alt.Scale(domain=["batch loss", "running mean"],
                                                                      range=[[1, 0], [6, 3]]))
    return _curve_chart(frame, x=alt.X("batch:Q", title="Batch of the first epoch", axis=EPOCH_AXIS),
                        y_title="Loss", title="First-epoch loss per batch",
                        by=["run", "series"],
                        encodings={"color": alt.Color("run:N", title="Run", scale=SERIES_SCALE), "strokeDash": dash},
                        tooltip=["run:N", "batch:Q", "series:N"], smoothing=smoothing, log_scale=log_scale)


def curve_chart(metric: str, histories: dict[str, list[dict]], batches: dict[str, list[dict]],
                smoothing: float = 0.0, log_scale: bool = False) -> alt.Chart:
    """The chart of curve `metric` (of CURVES or FIRST_EPOCH_BATCHES) for one run or several, by
    run name; curves with a log axis by default (the learning rate) always get one."""
    log_scale = log_scale or log_scale_default(metric)
    if metric == FIRST_EPOCH_BATCHES:
        return batches_chart({name: rows for name, rows in batches.items() if rows}, smoothing, log_scale)
    if len(histories) == 1:
        return history_chart(next(iter(histories.values())), metric, smoothing=smoothing, log_scale=log_scale)
    return compare_history_chart(histories, metric, smoothing, log_scale)


# ----------------------------------------------------------------------------- evaluation

def confusion_frame(matrix, class_names) -> pd.DataFrame:
    return pd.DataFrame([{"true": t, "predicted": p, "value": float(matrix[i][j])}
                         for i, t in enumerate(class_names) for j, p in enumerate(class_names)])


def confusion_matrix_chart(matrix, class_names, normalized: bool = False, title: str | None = None,
                           selection: str | None = None) -> alt.Chart:
    """Heatmap with the count (or row share) written in each cell; with `selection` (a name), a click
    selects a cell (for st.altair_chart's on_select) and outlines it."""
    frame = confusion_frame(matrix, class_names)
    fmt = ".2f" if normalized else ".0f"
    title = title or ("Confusion matrix (share of each true class)" if normalized else "Confusion matrix (counts)")
    names = [str(n) for n in class_names]
    size = max(160, 70 * len(names))
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="Predicted class", sort=names, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:N", title="True class", sort=names),
    )
    cells = base.mark_rect(**({"stroke": "black"} if selection else {})).encode(
        color=alt.Color("value:Q", title="Share" if normalized else "Images",
                        scale=alt.Scale(scheme="blues")),
        tooltip=["true", "predicted", alt.Tooltip("value:Q", format=fmt)])
    if selection:
        pick = alt.selection_point(name=selection, fields=["true", "predicted"], on="click")
        cells = cells.encode(strokeWidth=alt.condition(pick, alt.value(3), alt.value(0))).add_params(pick)
    # Dark cells get white text so the number stays readable; the text ignores the pointer, so a
    # click on a number still lands on its cell.
    threshold = frame["value"].max() / 2 if len(frame) else 0
    text = base.mark_text(fontSize=14, **({"aria": False} if selection else {})).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(alt.datum.value > threshold, alt.value("white"), alt.value("black")))
    return (cells + text).properties(title=title, width=size, height=size)


def _diagonal(x_title: str, y_title: str) -> alt.Chart:
    line = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})
    return alt.Chart(line).mark_line(strokeDash=[4, 4], color="gray").encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title=y_title))


def roc_chart(curves: dict[str, dict], title: str = "ROC curve") -> alt.Chart:
    """ROC curves overlaid, from {label: {fpr, tpr, auc}}; the legend shows each AUC."""
    frames = []
    for label, curve in curves.items():
        auc = curve.get("auc")
        name = f"{label} (AUC {auc:.3f})" if auc is not None else label
        frames.append(pd.DataFrame({"fpr": curve["fpr"], "tpr": curve["tpr"], "curve": name}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["fpr", "tpr", "curve"])
    lines = alt.Chart(frame).mark_line().encode(
        x=alt.X("fpr:Q", title="False positive rate", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="True positive rate (recall)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("curve:N", title="Curve", scale=SERIES_SCALE, legend=alt.Legend(labelLimit=0)),
        tooltip=["curve", alt.Tooltip("fpr:Q", format=".3f"), alt.Tooltip("tpr:Q", format=".3f")])
    return (_diagonal("False positive rate", "True positive rate (recall)") + lines).properties(
        title=title, height=CHART_HEIGHT + 40)


def pr_chart(pr: dict, title: str | None = None) -> alt.Chart:
    """Precision-recall curve of the binary view, average precision in the title."""
    frame = pd.DataFrame({"recall": pr["recall"], "precision": pr["precision"]})
    ap = pr.get("average_precision")
    title = title or (f"Precision-recall curve (AP {ap:.3f})" if ap is not None else "Precision-recall curve")
    return alt.Chart(frame, title=title, height=CHART_HEIGHT + 40).mark_line(color="#E45756").encode(
        x=alt.X("recall:Q", title="Recall", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", title="Precision", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("recall:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f")])


def f1_threshold_chart(f1: dict, current: float | None = None) -> alt.Chart:
    """F1 against the decision threshold; the best threshold as a red rule, the current one dashed."""
    frame = pd.DataFrame({"threshold": f1["thresholds"], "f1": f1["f1"]})
    line = alt.Chart(frame).mark_line(color="#4C78A8").encode(
        x=alt.X("threshold:Q", title="Decision threshold", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("f1:Q", title="F1 (positive class)", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("threshold:Q", format=".2f"), alt.Tooltip("f1:Q", format=".3f")])
    marks = [{"threshold": f1["best_threshold"], "label": f"best {f1['best_threshold']:.2f} (F1 {f1['best_f1']:.3f})"}]
    if current is not None:
        marks.append({"threshold": float(current), "label": f"current {current:.2f}"})
    labels = [m["label"] for m in marks]
    rules = alt.Chart(pd.DataFrame(marks)).mark_rule(strokeWidth=2).encode(
        x="threshold:Q",
        color=alt.Color("label:N", title="Threshold", sort=labels,
                        scale=alt.Scale(domain=labels, range=["#E45756", "#54A24B"][:len(labels)]),
                        legend=alt.Legend(labelLimit=0)),
        strokeDash=alt.StrokeDash("label:N", legend=None, sort=labels,
                                  scale=alt.Scale(domain=labels, range=[[1, 0], [5, 3]][:len(labels)])))
    return (line + rules).properties(title="F1 against threshold", height=CHART_HEIGHT)


def calibration_chart(cal: dict) -> alt.Chart:
    """Reliability diagram: observed frequency against mean predicted probability per bin."""
    frame = pd.DataFrame({"predicted": cal["prob_pred"], "observed": cal["prob_true"], "images": cal["counts"]})
    points = alt.Chart(frame).mark_line(point=True, color="#F58518").encode(
        x=alt.X("predicted:Q", title="Mean predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="Observed share of positives", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("predicted:Q", format=".3f"), alt.Tooltip("observed:Q", format=".3f"), "images"])
    ece = cal.get("ece")
    title = f"Calibration of the disease score (ECE {ece:.3f})" if ece is not None else "Calibration of the disease score"
    return (_diagonal("Mean predicted probability", "Observed share of positives") + points).properties(
        title=title, height=CHART_HEIGHT + 40)


def per_class_chart(per_class: dict[str, dict]) -> alt.Chart:
    """Precision, recall and F1 per class as grouped bars."""
    rows = [{"class": name, "metric": metric, "value": values[metric]}
            for name, values in per_class.items() for metric in ("precision", "recall", "f1")]
    frame = pd.DataFrame(rows)
    return alt.Chart(frame, title="Precision, recall and F1 per class", height=CHART_HEIGHT).mark_bar().encode(
        x=alt.X("class:N", title="Class", sort=list(per_class), axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("metric:N", sort=["precision", "recall", "f1"]),
        y=alt.Y("value:Q", title="Score", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("metric:N", title="Metric"),
        tooltip=["class", "metric", alt.Tooltip("value:Q", format=".3f")])


# ----------------------------------------------------------------------------- comparison

def parallel_coordinates_chart(frame: pd.DataFrame, metric: str) -> alt.Chart:
    """Parallel coordinates from `core.present.compare.parallel_coordinates_frame` (axes already on 0-1).

    One line per run, coloured by the metric; each point is labelled with the raw setting value.
    Every axis keeps its name: names break at dots onto two lines and tilt when there are many
    axes, and overlapping names are never dropped. Values off the numeric scale (an architecture's
    default) sit in a grey band below it, drawn as hollow squares.
    """
    axes = list(dict.fromkeys(frame["axis"]))
    many = len(axes) > 6
    base = alt.Chart(frame).encode(
        x=alt.X("axis:N", title="Setting (each axis scaled to its own range)", sort=axes,
                axis=alt.Axis(labelAngle=-30 if many else 0, labelAlign="right" if many else "center",
                              labelLimit=0, labelOverlap=False, labelExpr="split(datum.label, '.')",
                              labelFontSize=11)),
        y=alt.Y("position:Q", title="Relative value (min to max)",
                scale=alt.Scale(domain=[PARALLEL_FLOOR, 1.05]), axis=alt.Axis(labels=False, ticks=False)),
        detail="run:N")
    band = alt.Chart(pd.DataFrame({"low": [PARALLEL_FLOOR], "high": [-0.1],
                                   "text": ["off the scale: architecture default (or no value)"]}))
    default_band = band.mark_rect(color="#eeeeee").encode(y="low:Q", y2="high:Q")
    band_text = band.mark_text(align="left", baseline="bottom", x=4, dy=-2, fontSize=10, color="gray").encode(
        y="high:Q", text="text:N")
    lines = base.mark_line(strokeWidth=2.5, opacity=0.85).encode(
        color=alt.Color("metric_value:Q", title=metric, scale=alt.Scale(scheme="viridis")),
        tooltip=["run", "axis", "label", alt.Tooltip("metric_value:Q", title=metric, format=".4f")])
    points = base.mark_point(size=60, filled=True).encode(
        shape=alt.Shape("off_scale:N", legend=None, scale=alt.Scale(domain=[False, True],
                                                                    range=["circle", "square"])),
        fill=alt.condition("datum.off_scale", alt.value("white"), alt.Fill("metric_value:Q", legend=None,
                                                                          scale=alt.Scale(scheme="viridis"))),
        color=alt.Color("metric_value:Q", title=metric, scale=alt.Scale(scheme="viridis")),
        tooltip=["run", "axis", "label"])
    labels = base.mark_text(align="left", dx=6, dy=-7, fontSize=11).encode(text="label:N")
    layers = [default_band, band_text] if frame.get("off_scale", pd.Series(dtype=bool)).any() else []
    return alt.layer(*layers, lines, points, labels).properties(
        title=f"Settings against {metric}", height=CHART_HEIGHT + 60)
