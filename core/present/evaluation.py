"""What the Evaluate page shows beyond the plain metrics, without Streamlit: headline numbers with
their patient-bootstrap intervals, the clickable confusion matrix, the referral curve and its
sentence, calibration before and after temperature scaling, and external validation side by side
with the internal test split."""
from __future__ import annotations

import datetime

import altair as alt
import numpy as np
import pandas as pd

from core.ml.decisions import THRESHOLD_FREE, decision_rule, metric_label
from core.ml.intervals import interval_bounds, no_interval_reason
from core.present.charts import confusion_matrix_chart

CLINICAL_NOTE = "Research tool, not for clinical use: these numbers describe a model, not a diagnosis."
CELL_SELECTION = "cell"  # the confusion chart's point selection (its name in the selection event)


# ---------------------------------------------------------------- headline numbers with intervals

def headline_metrics(class_names, disease_view: bool) -> list[tuple[str, str]]:
    """(label, key of bootstrap_intervals) of the headline numbers, in the order shown; with 3+ classes
    also macro one-vs-rest AUC, because a disease-vs-normal AUC can hide a class never predicted."""
    multi_class = len(class_names) > 2
    shown = [("Accuracy", "accuracy"), ("Balanced accuracy", "balanced_accuracy"), ("Macro-F1", "macro_f1")]
    if not multi_class:
        shown.append(("AUC", "auc"))
    elif disease_view:
        shown += [("AUC (disease vs normal)", "auc"), ("Macro one-vs-rest AUC", "macro_ovr_auc")]
    else:
        shown.append(("AUC (macro one-vs-rest)", "macro_ovr_auc"))
    if disease_view:
        shown += [("Average precision", "average_precision"), ("Sensitivity", "sensitivity"),
                  ("Specificity", "specificity")]
    return shown


def labelled_headline(class_names, disease_view: bool, threshold) -> list[tuple[str, str]]:
    """headline_metrics, then every class's recall, each thresholded one labelled with the decision
    rule it was computed at ('Accuracy @ threshold 0.43')."""
    shown = headline_metrics(class_names, disease_view) + [(f"Recall: {n}", f"recall:{n}") for n in class_names]
    return [(metric_label(label, key, threshold), key) for label, key in shown]


def headline_rows(class_names, disease_view: bool, threshold, per_row: int = 4) -> list[list[tuple[str, str]]]:
    """labelled_headline in rows for the page: the numbers at the threshold, `per_row` at a time so
    their labels (which name it) show in full, then those that need no threshold (AUC ...)."""
    shown = labelled_headline(class_names, disease_view, threshold)
    decided = [item for item in shown if item[1] not in THRESHOLD_FREE]
    free = [item for item in shown if item[1] in THRESHOLD_FREE]
    return [decided[i:i + per_row] for i in range(0, len(decided), per_row)] + ([free] if free else [])


def number(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def interval_text(entry: dict | None) -> str:
    """'95% CI 0.887–0.934', or why there is none."""
    bounds = interval_bounds(entry)
    return no_interval_reason(entry) if bounds is None else f"95% CI {bounds[0]:.3f}–{bounds[1]:.3f}"


def value_with_interval(entry: dict | None) -> str:
    """'0.912 (0.887–0.934)' for tables; '1.000 (no interval: ...)' when there is none."""
    if not entry or entry.get("value") is None:
        return "—"
    bounds = interval_bounds(entry)
    if bounds is None:
        return f"{number(entry['value'])} ({no_interval_reason(entry)})"
    return f"{entry['value']:.3f} ({bounds[0]:.3f}–{bounds[1]:.3f})"


def headline_columns(columns: dict, class_names, threshold) -> list[dict]:
    """Rows metric | one column per name in `columns` (name -> the "intervals" of a bootstrap_intervals
    result, all at `threshold`, which the labels name; the first decides which numbers there are):
    every headline number, '0.912 (0.887–0.934)' in each."""
    disease_view = "sensitivity" in next(iter(columns.values()))
    return [{"metric": label, **{name: value_with_interval(found.get(key)) for name, found in columns.items()}}
            for label, key in labelled_headline(class_names, disease_view, threshold)]


def intervals_caption(result: dict) -> str:
    share = round(result["confidence"] * 100)
    return (f"{share}% confidence intervals from {result['n_resamples']} bootstrap resamples of the "
            f"{result['n_patients']} patients ({result['n_images']} images): whole patients are drawn, "
            "because images of one patient are not independent. Proportions (accuracy, sensitivity, "
            "specificity, recalls) are at least as wide as their exact Clopper-Pearson interval over the patients.")


# ---------------------------------------------------------------- the clickable confusion matrix

def confusion_selection_chart(matrix, class_names, title: str = "Confusion matrix (counts): click a cell"):
    """The counts heatmap with a point selection on its cells (for on_select='rerun')."""
    return confusion_matrix_chart(matrix, class_names, title=title, selection=CELL_SELECTION)


def cell_label(true: str, predicted: str, count: int) -> str:
    return f"true {true} → predicted {predicted} ({count} images)"


def cell_choices(matrix, class_names) -> dict[str, tuple[str, str]]:
    """Selectbox label -> (true, predicted) for every non-empty cell, mistakes first."""
    counts = np.asarray(matrix)
    names = [str(n) for n in class_names]
    cells = [(t, p) for t in range(len(names)) for p in range(len(names)) if counts[t, p] > 0]
    cells.sort(key=lambda cell: cell[0] == cell[1])  # stable: off-diagonal (mistakes) first
    return {cell_label(names[t], names[p], int(counts[t, p])): (names[t], names[p]) for t, p in cells}


def clicked_cell(selection) -> tuple[str, str] | None:
    """(true, predicted) of the clicked cell from st.altair_chart's selection state, or None."""
    points = (selection or {}).get(CELL_SELECTION) or []
    if not points or "true" not in points[0] or "predicted" not in points[0]:
        return None
    return str(points[0]["true"]), str(points[0]["predicted"])


# ---------------------------------------------------------------- referral

def referral_frame(curve: dict) -> pd.DataFrame:
    rows = [{"coverage": c, "measure": "accuracy", "value": a} for c, a in zip(curve["coverage"], curve["accuracy"])]
    if curve.get("sensitivity"):
        rows += [{"coverage": c, "measure": "sensitivity", "value": s}
                 for c, s in zip(curve["coverage"], curve["sensitivity"]) if s is not None]
    return pd.DataFrame(rows)


def referral_chart(curve: dict) -> alt.Chart:
    """Accuracy (and sensitivity) on the kept cases against the share kept."""
    return alt.Chart(referral_frame(curve)).mark_line(point=True).encode(
        x=alt.X("coverage:Q", title="Share of cases the model decides (the rest referred)",
                scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("value:Q", title="On the cases it decides", scale=alt.Scale(zero=False)),
        color=alt.Color("measure:N", title=None),
        tooltip=[alt.Tooltip("coverage:Q", format=".0%"), "measure", alt.Tooltip("value:Q", format=".3f")],
    ).properties(title="Accuracy vs coverage (referring the least sure cases)", height=280)


def referral_sentence(curve: dict, referred: float = 0.10) -> str:
    """'Referring the 10% least sure cases raises accuracy from 0.91 to 0.96.'"""
    coverage = np.asarray(curve["coverage"], dtype=float)
    kept = int(np.argmin(np.abs(coverage - (1 - referred))))
    everything, after = curve["accuracy"][-1], curve["accuracy"][kept]
    share = f"{round(referred * 100)}%"
    if round(after, 2) == round(everything, 2):
        return f"Referring the {share} least sure cases leaves accuracy at {everything:.2f}."
    verb = "raises" if after > everything else "lowers"
    return f"Referring the {share} least sure cases {verb} accuracy from {everything:.2f} to {after:.2f}."


# ---------------------------------------------------------------- calibration

def reliability_chart(report: dict) -> alt.Chart:
    """Top-label reliability before and after temperature scaling, with the diagonal."""
    curves = {f"{when} (ECE {curve['ece']:.3f})": curve
              for when, curve in (("before", report["reliability"]["before"]),
                                  (f"after T = {report['temperature']:.2f}", report["reliability"]["after"]))}
    rows = [{"confidence": c, "accuracy": a, "when": when}
            for when, curve in curves.items() for c, a in zip(curve["confidence"], curve["accuracy"])]
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
    lines = alt.Chart(pd.DataFrame(rows)).mark_line(point=True).encode(
        x=alt.X("confidence:Q", title="Confidence of the predicted class", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("accuracy:Q", title="Share correct", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("when:N", title=None, sort=list(curves)),  # "before" first in the legend
        tooltip=[alt.Tooltip("confidence:Q", format=".2f"), alt.Tooltip("accuracy:Q", format=".2f"), "when"])
    return (diagonal + lines).properties(title="Predicted-class calibration, before and after T",
                                         height=280)


CALIBRATION_MEASURES = (("nll", "NLL"), ("ece", "ECE"), ("brier", "Brier"))
CALIBRATION_LEGEND = ("NLL: negative log-likelihood; ECE: expected calibration error of the predicted class; "
                      "Brier: Brier score. Lower is better for all three.")


def calibration_rows(report: dict, split_label: str) -> list[dict]:
    """One row per split and moment (validation, where T was fitted, and the shown split; before and
    after T), one short column per measure, so the table fits beside the chart."""
    return [{"predictions": f"{label} {when}", **{title: report[split][key][when] for key, title in CALIBRATION_MEASURES}}
            for split, label in (("val", "validation"), ("test", split_label)) for when in ("before", "after")]


def temperature_sentence(report: dict) -> str:
    t = report["temperature"]
    kind = "overconfident, so it softens them" if t > 1 else "underconfident, so it sharpens them"
    return (f"Temperature T = {t:.2f}, fitted on the validation split: the model's probabilities were {kind}. "
            "The most likely class never changes, so accuracy at argmax is the same.")


# ---------------------------------------------------------------- external validation

def external_threshold(result: dict):
    """The decision threshold both columns of an external result were computed at (None: argmax)."""
    return (result.get("metrics") or {}).get("threshold")


def side_by_side(result: dict) -> list[dict]:
    """Rows metric | external (95% CI) | internal test (95% CI), for every headline number; both
    columns at the run's own threshold when the result was saved, which the labels name."""
    external = result["intervals"]["intervals"]
    internal = ((result.get("internal_test") or {}).get("intervals") or {}).get("intervals") or {}
    rows = headline_columns({f"external: {result['name']}": external, "internal test": internal},
                            result["class_names"], external_threshold(result))
    rows.append({"metric": "Images (patients)",
                 f"external: {result['name']}": f"{result['n_images']} ({result['n_patients']})",
                 "internal test": _size(result.get("internal_test"))})
    rows.append({"metric": "Flagged out-of-distribution", f"external: {result['name']}": ood_text(result),
                 "internal test": "—"})
    rows.append({"metric": "Seen in training or validation", f"external: {result['name']}": seen_text(result),
                 "internal test": "0 (patient-grouped split)"})
    return rows


def seen_text(result: dict) -> str:
    seen = result.get("seen")
    return "not checked" if seen is None else f"{seen['seen']} of {result['n_images']}"


def seen_sentence(result: dict) -> tuple[str | None, bool]:
    """(what the overlap check found, whether the run has seen any of the images); (None, False) for
    results saved before the check existed or when it could not run."""
    seen = result.get("seen")
    if seen is None:
        return None, False
    if not seen["seen"]:
        return (f"None of these images is one of the run's {seen['compared_with']:,} training and validation "
                "images (compared as standardised thumbnails, so re-saved, resized or re-exposed copies count), "
                "and none is named as one of their patients."), False
    parts = []
    if seen["same_pictures"]:
        examples = "; ".join(f"`{example}`" for example in seen["examples"])
        parts.append(f"{seen['same_pictures']} are the same picture as a training or validation image "
                     f"(e.g. {examples})")
    if seen["same_patient_ids"]:
        parts.append(f"{seen['same_patient_ids']} are named as one of their patients (the same file-name "
                     "scheme: the same patients, if the two sets come from one source)")
    return (f"The run has seen {seen['seen']} of these {result['n_images']} images: " + ", and ".join(parts) +
            ". Numbers on images a model trained or was tuned on are optimistic: leave them out for an "
            "external validation."), True


def _size(internal: dict | None) -> str:
    if not internal:
        return "—"
    return f"{internal['intervals']['n_images']} ({internal['intervals']['n_patients']})"


def ood_text(result: dict) -> str:
    if result.get("ood_rate") is None:
        return "not checked"
    return f"{result['ood_rate']:.0%}"


def external_sentence(result: dict) -> str:
    """How the external accuracy compares with the internal test split's, at the threshold it names."""
    external = result["metrics"].get("accuracy")
    internal = ((result.get("internal_test") or {}).get("metrics") or {}).get("accuracy")
    label = metric_label("Accuracy", "accuracy", external_threshold(result))
    flagged = ("" if result.get("ood_rate") is None else
               f" The out-of-distribution check flags {result['ood_rate']:.0%} of its images.")
    if internal is None:
        return f"{label}: {external:.3f} on {result['name']}.{flagged}"
    change = "lower than" if external < internal else "higher than" if external > internal else "equal to"
    return (f"{label}: {external:.3f} on {result['name']}, {change} {internal:.3f} on the internal test split."
            f"{flagged}")


def external_threshold_note(result: dict, slider) -> str:
    """Which threshold the external comparison used, and that the slider above does not move it."""
    used = external_threshold(result)
    if used is None:
        return "Both columns decide by argmax (the most likely class)."
    moved = ("" if slider is None or round(slider, 2) == round(used, 2)
             else f"; the threshold slider above ({decision_rule(slider)}) does not change them")
    return (f"Both columns at {decision_rule(used)}, the run's own threshold when this result was saved "
            f"(chosen on its validation split){moved}.")


SHIFT_WARNING_SHARE = 0.10  # outside the training range (1st-99th percentile): ~2% from the same source
SHIFT_TYPICAL_PERCENTILES = (10.0, 90.0)  # where the median image of a set from the same source falls


def shift_sentences(result: dict) -> tuple[str | None, bool]:
    """('- Brightness: median 157 here, the training images' 95th percentile (theirs: 123); 31% of the
    images beyond their 1st-99th percentile\n- Contrast: ...', shifted): markdown lines comparing
    brightness and contrast with the training images, and whether the set moved (its median image
    outside the training images' 10th-90th percentile, or more than SHIFT_WARNING_SHARE of its images
    beyond their range). (None, False) for results saved before the check existed or when it could
    not run."""
    shift = result.get("shift")
    if not shift:
        return None, False
    low, high = SHIFT_TYPICAL_PERCENTILES
    lines = [f"- {name.capitalize()}: median {v['external_median']:.0f} here, the training images' "
             f"{ordinal(round(v['median_percentile']))} percentile (theirs: {v['training_median']:.0f}); "
             f"{v['outside_share']:.0%} of the images beyond their 1st-99th percentile"
             for name, v in shift.items()]
    shifted = any(not low <= v["median_percentile"] <= high or v["outside_share"] > SHIFT_WARNING_SHARE
                  for v in shift.values())
    return "\n".join(lines + ["", "About 2% of images from the training images' own source lie beyond that range."]), shifted


def ordinal(number: int) -> str:
    """1 -> '1st', 22 -> '22nd', 13 -> '13th'."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def past_result_label(result: dict) -> str:
    when = datetime.datetime.fromtimestamp(result.get("evaluated") or 0).strftime("%Y-%m-%d %H:%M")
    return f"{result.get('name', '?')} · {result.get('n_images', '?')} images · {when}"
