"""A study's answer in one sentence, and the report a student hands in.

A study sweeps one setting (dropout 0.2 .. 0.8), each point repeated over seeds or folds. Its
results are plain dicts, one per point, in the axis order:

    {"label": "0.4", "value": 0.4, "mean": 0.912, "std": 0.010, "n": 3}

`mean` and `std` are None when no run of the point finished; `std` is 0.0 when n == 1. An optional
"runs" (the runs planned for the point) lets a sentence say "0.8: 1 of 3 runs finished"; without
it, the most runs any point finished stands for the plan.

- `conclusion`: the best value, and the values the data cannot tell apart from it. Two values tie
  when their means differ by at most the larger of their two standard deviations.
- `trend_conclusion`: how speed and memory change from the smallest setting value to the largest.
- `results_table` / `results_numbers`: the results as shown (mean ± std) and as numbers (the CSV).
- `StudyReport` and its exports: `report_markdown` (text + PNG charts), `report_zip`, and
  `report_html`, one self-contained file (inline CSS, charts as inline SVG, no external URL).

Charts are rendered offline by vl_convert. No Streamlit, no TensorFlow.
"""
from __future__ import annotations

import html
import io
import json
import math
import numbers
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import vl_convert

FOOTER = ("CXR Lab — research tool, not for clinical use. Metrics on held-out patients; "
          "± is one standard deviation over {repeats}.")
REPEAT_ADVICE = "repeat with seeds to know whether the difference is real"
MISSING = "—"


# ----------------------------------------------------------------------------- the points

@dataclass(frozen=True)
class Point:
    """One point of a study, checked: `mean` None means no run of it finished (then n == 0)."""
    label: str
    value: object
    mean: float | None
    std: float
    n: int
    runs: int | None = None

    @property
    def finished(self) -> bool:
        return self.mean is not None


def parse_points(points) -> list[Point]:
    """The study's result dicts as `Point`s, each checked, with one clear message for a bad one."""
    if isinstance(points, (str, bytes, Mapping)) or not hasattr(points, "__iter__"):
        raise ValueError(f"points must be a list of result dicts (label, value, mean, std, n); got {points!r}")
    return [_parse_point(raw, index) for index, raw in enumerate(points)]


def _parse_point(raw, index: int) -> Point:
    if not isinstance(raw, Mapping):
        raise ValueError(f"point {index + 1} must be a dict with label, value, mean, std and n; got {raw!r}")
    if "label" not in raw or "mean" not in raw:
        raise ValueError(f"point {index + 1} needs a 'label' and a 'mean' (None when no run finished); "
                         f"got keys {sorted(map(str, raw))}")
    label = str(raw["label"])
    runs = _count(raw.get("runs"), f"the planned runs of {label}", allow_none=True)
    mean = _number(raw["mean"], f"the mean of {label}")
    if mean is None:
        return Point(label, raw.get("value", label), None, 0.0, 0, runs)
    std = _number(raw.get("std"), f"the standard deviation of {label}") or 0.0
    if std < 0:
        raise ValueError(f"the standard deviation of {label} must be 0 or more; got {std}")
    n = _count(raw.get("n"), f"n (finished runs) of {label}")
    if n < 1:
        raise ValueError(f"{label} has a mean but n = {n}: a mean needs at least one finished run")
    return Point(label, raw.get("value", label), mean, std, n, runs)


def _number(value, what: str) -> float | None:
    """A float, or None for a missing value (None or NaN, as pandas gives it)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number or None; got {value!r}")
    return None if math.isnan(value) else float(value)


def _count(value, what: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value != int(value) or value < 0):
        raise ValueError(f"{what} must be a whole number, 0 or more; got {value!r}")
    return int(value)


def is_numeric(points: list[Point]) -> bool:
    return bool(points) and all(isinstance(p.value, (int, float)) and not isinstance(p.value, bool)
                                for p in points)


def within_noise(a: Point, b: Point) -> bool:
    """Whether the data cannot tell two finished points apart: means within the larger std."""
    return abs(a.mean - b.mean) <= max(a.std, b.std)


# ----------------------------------------------------------------------------- one sentence

def conclusion(points, *, setting_label: str, metric_title: str, higher_is_better: bool = True,
               digits: int = 3, repeat_unit: str = "seed") -> str:
    """The study's answer in one sentence drawn from the numbers: the best value and the values
    within one standard deviation of it, or that none stands out, or what is still missing.
    `repeat_unit` names one repeat ("seed", or "fold" for cross-validation)."""
    parsed = parse_points(points)
    finished = [p for p in parsed if p.finished]
    metric, unit = _split_unit(_mid_sentence(metric_title))
    words = _Words(setting_label, metric, unit, digits, repeat_unit, higher_is_better)
    if not finished:
        return "No run has finished yet, so there is nothing to compare."
    if len(finished) == 1:
        only = finished[0]
        waiting = [p.label for p in parsed if not p.finished]
        return _sentence(f"only {_subject(setting_label, only.label)} has finished runs so far ({words.score(only)}); "
                         f"{_and(waiting)} {'has' if len(waiting) == 1 else 'have'} none yet, so nothing can be "
                         f"compared{_runs_note(parsed, [only], unfinished=False)}.")
    best = (max if higher_is_better else min)(finished, key=lambda p: p.mean)
    tied = [p for p in finished if p is not best and within_noise(p, best)]
    if all(p.n == 1 for p in finished):
        return _single_runs(parsed, finished, best, words)
    if len(tied) == len(finished) - 1:
        everyone = "both are" if len(finished) == 2 else f"all {len(finished)} are"
        if len(finished) < len(parsed):
            everyone = everyone.replace(" are", " values with results are")
        extreme = "best" if higher_is_better else "lowest"
        return _sentence(f"no value{_of(setting_label)} stands out: {everyone} within one standard deviation "
                         f"of the {extreme} ({best.label}, {words.score(best)}){_runs_note(parsed, finished)}.")
    head = f"{_subject(setting_label, best.label)} {words.verb} ({words.score(best)})"
    if tied:
        group = _tied_group(parsed, best, tied)
        return _sentence(f"{head}; {group} within one standard deviation of it, so the data cannot tell "
                         f"them apart{_runs_note(parsed, [best, *tied])}.")
    runner_up = _runner_up([p for p in finished if p is not best], higher_is_better)
    ahead = "ahead of" if higher_is_better else "below"
    return _sentence(f"{head}, more than one standard deviation {ahead} every other value "
                     f"(next: {runner_up.label}, {words.amount(runner_up)}){_runs_note(parsed, [best, runner_up])}.")


@dataclass(frozen=True)
class _Words:
    """How a sentence writes the study's numbers."""
    setting: str
    metric: str
    unit: str  # 's' for 'wall time (s)': written after the numbers
    digits: int
    repeat_unit: str
    higher_is_better: bool

    @property
    def verb(self) -> str:
        return "scores best" if self.higher_is_better else "is lowest"

    def number(self, x: float, unit: bool = True) -> str:
        return f"{x:,.{self.digits}f}" + (f" {self.unit}" if unit and self.unit else "")

    def amount(self, p: Point) -> str:
        """'0.912 ± 0.010', or '0.912' for a single run (whose std says nothing)."""
        if p.n == 1:
            return self.number(p.mean)
        return f"{self.number(p.mean, unit=False)} ± {self.number(p.std)}"

    def score(self, p: Point) -> str:
        """'test accuracy 0.912 ± 0.010, 3 seeds'."""
        return f"{self.metric} {self.amount(p)}, {_plural(p.n, self.repeat_unit)}"


def _single_runs(parsed: list[Point], finished: list[Point], best: Point, words: _Words) -> str:
    """One run per value: name the best, and say the comparison has no uncertainty."""
    equal = [p for p in finished if p.mean == best.mean]
    extreme = "best" if words.higher_is_better else "lowest"
    who = f"{_and([p.label for p in equal])} tie for {extreme}" if len(equal) > 1 else f"{best.label} {words.verb}"
    head = f"{_subject(words.setting, who)} ({words.metric} {words.number(best.mean)}"
    rest = [p for p in finished if p.mean != best.mean]
    runner_up = _runner_up(rest, words.higher_is_better) if rest else None
    head += f"; next: {runner_up.label}, {words.number(runner_up.mean)})" if runner_up else ")"
    named = equal + ([runner_up] if runner_up else [])
    return _sentence(f"{head}, but with one run per value the comparison has no uncertainty: {REPEAT_ADVICE}"
                     f"{_runs_note(parsed, named)}.")


def _runner_up(others: list[Point], higher_is_better: bool) -> Point:
    return (max if higher_is_better else min)(others, key=lambda p: p.mean)


def _tied_group(parsed: list[Point], best: Point, tied: list[Point]) -> str:
    """'0.2 to 0.6 are' on a numeric axis (contiguous tied values, the best among them, as ranges);
    'elu and tanh are' otherwise (the others, listed)."""
    if not is_numeric(parsed):
        return f"{_and([p.label for p in tied])} {'is' if len(tied) == 1 else 'are'}"
    members = {id(best)} | {id(p) for p in tied}
    runs, current = [], []
    for point in sorted(parsed, key=lambda p: p.value):  # an unfinished value breaks a range
        if id(point) in members:
            current.append(point)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    runs = [run for run in runs if not (len(run) == 1 and run[0] is best)]  # the best alone is "it"
    items = [f"{run[0].label} to {run[-1].label}" if len(run) > 1 else run[0].label for run in runs]
    return f"{_and(items)} {'is' if len(runs) == 1 and len(runs[0]) == 1 else 'are'}"


def _runs_note(parsed: list[Point], named: list[Point], unfinished: bool = True) -> str:
    """' — 0.8 has 1 of 3 runs finished and 0.6 has none finished yet' for the named points that miss
    runs and (with `unfinished`) the values with no finished run, which could change the answer;
    '' when nothing is missing."""
    planned_default = max((p.n for p in parsed), default=0)
    named_ids = {id(p) for p in named}
    notes = []
    for p in parsed:
        planned = p.runs if p.runs is not None else planned_default
        if p.n >= planned or not (id(p) in named_ids or (unfinished and not p.finished)):
            continue
        notes.append(f"{p.label} has {p.n} of {_plural(planned, 'run')} finished" if p.finished
                     else f"{p.label} has none finished yet")
    return f" — {_and(notes)}" if notes else ""


# ----------------------------------------------------------------------------- speed and memory

def trend_conclusion(points_by_metric: Mapping, *, setting_label: str) -> str:
    """How each metric changes from the smallest setting value to the largest, with the factor:
    'Images / s rises from 210 at batch size 16 to 540 at 128 (2.6x); peak memory rises from
    1,410 MB to 1,980 MB (1.4x).' A change within one standard deviation is said to be noise."""
    if not isinstance(points_by_metric, Mapping) or not points_by_metric:
        raise ValueError(f"points_by_metric must map a metric title to its points; got {points_by_metric!r}")
    clauses, first_ends, single_runs = [], None, True
    for title, points in points_by_metric.items():
        parsed = parse_points(points)
        if not is_numeric(parsed):
            raise ValueError(f"a trend needs a numeric setting (batch size, image size); {title} has values "
                             f"{[p.label for p in parsed]}")
        finished = sorted((p for p in parsed if p.finished), key=lambda p: p.value)
        name, unit = _split_unit(_mid_sentence(str(title)))
        if len(finished) < 2:
            clauses.append(_trend_missing(name, setting_label, finished))
            continue
        low, high = finished[0], finished[-1]
        single_runs = single_runs and all(p.n == 1 for p in finished)
        # The setting values are written once, unless a metric's finished values span other ones.
        where = first_ends is None or first_ends != (low.label, high.label)
        first_ends = first_ends or (low.label, high.label)
        clauses.append(_trend_clause(name, unit, setting_label, low, high, where))
    text = "; ".join(clauses)
    if single_runs and first_ends:
        text += f" — one run per value: {REPEAT_ADVICE}"
    return _sentence(text + ".")


def _trend_clause(name: str, unit: str, setting_label: str, low: Point, high: Point, where: bool) -> str:
    at_low = f" at {_subject(setting_label, low.label)}" if where else ""
    at_high = f" at {high.label}" if where else ""
    if within_noise(low, high):
        span = f" from {_subject(setting_label, low.label)} to {high.label}" if where else ""
        return (f"{name} stays within one standard deviation{span} "
                f"({_quantity(low.mean, unit)} to {_quantity(high.mean, unit)})")
    verb = "rises" if high.mean > low.mean else "falls"
    return (f"{name} {verb} from {_quantity(low.mean, unit)}{at_low} to {_quantity(high.mean, unit)}{at_high}"
            f"{_factor(low.mean, high.mean)}")


def _trend_missing(name: str, setting_label: str, finished: list[Point]) -> str:
    if not finished:
        return f"{name}: no run has finished yet"
    return f"{name}: only {_subject(setting_label, finished[0].label)} has finished runs so far"


def _factor(low: float, high: float) -> str:
    """' (2.6x)': the largest value over the smallest one's; '' when a ratio means nothing."""
    if low <= 0 or high <= 0:
        return ""
    ratio = high / low
    return f" ({ratio:.0f}x)" if ratio >= 10 else f" ({ratio:.1f}x)" if ratio >= 1 else f" ({ratio:.2f}x)"


def _split_unit(title: str) -> tuple[str, str]:
    """'peak memory (MB)' -> ('peak memory', 'MB'); 'images / s' -> ('images / s', '')."""
    match = re.fullmatch(r"\s*(.*?)\s*\(([^()]*)\)\s*", title)
    return (match.group(1), match.group(2)) if match and match.group(1) else (title.strip(), "")


def _quantity(x: float, unit: str) -> str:
    return f"{magnitude_text(x)} {unit}" if unit else magnitude_text(x)


def magnitude_text(x: float) -> str:
    """A number with as many digits as its size deserves: '1,410', '45.3', '2.61', '0.912'."""
    size = abs(x)
    if size >= 100:
        return f"{x:,.0f}"
    if size >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if size >= 1 else f"{x:.3g}"


# ----------------------------------------------------------------------------- words

def _subject(setting_label: str, label: str) -> str:
    """'dropout 0.4'; the label alone when the study's labels say what they are ('3 conv layers')."""
    return f"{setting_label} {label}" if setting_label else label


def _of(setting_label: str) -> str:
    return f" of {setting_label}" if setting_label else ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mid_sentence(title: str) -> str:
    """'Test accuracy' -> 'test accuracy' inside a sentence; 'AUC' stays 'AUC'."""
    first = title.split(" ", 1)[0]
    return title if first.isupper() else title[:1].lower() + title[1:]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


# ----------------------------------------------------------------------------- the results tables

def results_table(points_by_metric: Mapping, *, setting_label: str, digits: int = 3) -> pd.DataFrame:
    """The results as shown in a report, one row per point in axis order: the setting's value,
    'mean ± std' per metric and n (finished runs). A metric's cell adds '(n=k)' where its count
    differs from the row's n. Digits follow each column's size (`digits` below 10)."""
    per_metric = {title: {p.label: p for p in parse_points(points)} for title, points in points_by_metric.items()}
    labels = list(dict.fromkeys(label for by_label in per_metric.values() for label in by_label))
    rows = {setting_label: labels}
    counts = [max((by_label[label].n for by_label in per_metric.values() if label in by_label), default=0)
              for label in labels]
    for title, by_label in per_metric.items():
        places = _column_digits([p.mean for p in by_label.values() if p.finished], digits)
        rows[title] = [_cell(by_label.get(label), n, places) for label, n in zip(labels, counts)]
    rows["n"] = counts
    return pd.DataFrame(rows)


def results_numbers(points_by_metric: Mapping, *, setting_label: str) -> pd.DataFrame:
    """The same results as numbers (mean, std, n per metric), for results.csv."""
    per_metric = {title: {p.label: p for p in parse_points(points)} for title, points in points_by_metric.items()}
    labels = list(dict.fromkeys(label for by_label in per_metric.values() for label in by_label))
    rows = {setting_label: labels}
    for title, by_label in per_metric.items():
        found = [by_label.get(label) for label in labels]
        rows[f"{title} mean"] = [p.mean if p and p.finished else None for p in found]
        rows[f"{title} std"] = [p.std if p and p.finished else None for p in found]
        rows[f"{title} n"] = [p.n if p else 0 for p in found]
    return pd.DataFrame(rows)


def _column_digits(means: list[float], digits: int) -> int:
    largest = max((abs(m) for m in means), default=0.0)
    return 0 if largest >= 100 else 1 if largest >= 10 else digits


def _cell(point: Point | None, row_n: int, places: int) -> str:
    if point is None or not point.finished:
        return MISSING
    count = "" if point.n == row_n else f" (n={point.n})"
    return f"{point.mean:,.{places}f} ± {point.std:,.{places}f}{count}"


# ----------------------------------------------------------------------------- the report

@dataclass
class StudyReport:
    """Everything a study's report shows.

    `table` is the results table as it is shown: the caller formats it (`results_table` does), and
    every cell is written as `str(cell)`. `results` holds the numbers for results.csv
    (`results_numbers`); without it, results.csv is `table`. `repeats` reads after "over" in the
    footer: "3 seeds per point", "5-fold cross-validation grouped by patient". `charts` are
    (caption, Altair chart) pairs. `reference` and `beside` put what such reports found next to the
    conclusion."""
    title: str
    question: str
    conclusion: str
    setting: str
    base_settings: dict
    table: pd.DataFrame
    charts: list = field(default_factory=list)
    repeats: str = ""
    run_ids: list = field(default_factory=list)
    created: datetime = field(default_factory=datetime.now)
    results: pd.DataFrame | None = None
    reference: str = ""                 # what such reports found on the question, with its source
    beside: pd.DataFrame | None = None  # their figures beside this run's (core.present.studies.beside)

    def __post_init__(self):
        if not isinstance(self.table, pd.DataFrame):
            raise ValueError(f"the report's table must be a pandas DataFrame; got {type(self.table).__name__}")
        if not isinstance(self.base_settings, Mapping):
            raise ValueError(f"base_settings must be a dict of setting: value; got {type(self.base_settings).__name__}")
        if not isinstance(self.created, datetime):
            raise ValueError(f"created must be a datetime; got {self.created!r}")
        for chart in self.charts:
            if not (isinstance(chart, tuple) and len(chart) == 2 and hasattr(chart[1], "to_dict")):
                raise ValueError(f"each chart must be a (caption, Altair chart) pair; got {chart!r}")


def settings_rows(settings: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """The base run's settings as (name, value) rows, nested ones dotted: 'augmentation.zoom'."""
    rows = []
    for name, value in settings.items():
        if isinstance(value, Mapping) and value:
            rows += settings_rows(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", _setting_text(value)))
    return rows


def _setting_text(value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def _created_text(report: StudyReport) -> str:
    return report.created.strftime("%Y-%m-%d %H:%M")


def _footer(report: StudyReport) -> str:
    return FOOTER.format(repeats=report.repeats or "the repeats of each point")


def _meta_line(report: StudyReport) -> str:
    parts = [_created_text(report), report.repeats, _plural(len(report.run_ids), "run") if report.run_ids else ""]
    return " · ".join(part for part in parts if part)


def _csv(report: StudyReport) -> bytes:
    frame = report.results if report.results is not None else report.table
    return frame.to_csv(index=False).encode("utf-8")


def chart_file(index: int) -> str:
    return f"charts/chart-{index + 1}.png"


# ----------------------------------------------------------------------------- charts, drawn offline

# The plot's size in a report. Without a width, a categorical axis gets Vega-Lite's 20 px per value,
# and labels such as MLP and CNN ran together under a 176 px wide chart.
REPORT_CHART_WIDTH, REPORT_CHART_HEIGHT = 640, 360
LABEL_CHAR_PX = 7.0   # a generous width of one character of an axis label (10 px sans-serif)
LABEL_GAP_PX = 8      # room left between two labels set level
SLANTED_ANGLE = -35   # labels too long to sit level are slanted, each below its own value
SLANTED_LIMIT_PX = 180


def report_spec(chart) -> dict:
    """The chart's Vega-Lite spec as a report draws it: REPORT_CHART_WIDTH x REPORT_CHART_HEIGHT (each
    panel of a chart in panels keeps its own size), the labels of a categorical x axis level when they
    fit their share of the width, else slanted."""
    spec = chart.to_dict()
    plot = spec.get("spec", spec) if "facet" in spec else spec  # a chart in panels: sized per panel
    if plot is spec:
        spec["width"], spec["height"] = REPORT_CHART_WIDTH, REPORT_CHART_HEIGHT
    for view in [plot, *plot.get("layer", [])]:
        x = (view.get("encoding") or {}).get("x")
        if x and x.get("type") in ("nominal", "ordinal") and x.get("field"):
            x["axis"] = {**(x.get("axis") or {}), **category_axis(_values_of(spec, view, x), plot["width"])}
    return spec


def category_axis(labels: list, width: float = REPORT_CHART_WIDTH) -> dict:
    """Axis settings that keep the labels of a categorical axis apart on a plot `width` pixels wide."""
    share = width / max(1, len(labels)) - LABEL_GAP_PX  # one value's width on the axis
    longest = max((len(str(label)) for label in labels), default=0) * LABEL_CHAR_PX
    if longest <= share:
        return {"labelAngle": 0, "labelLimit": share}
    return {"labelAngle": SLANTED_ANGLE, "labelAlign": "right", "labelBaseline": "middle",
            "labelLimit": SLANTED_LIMIT_PX}


def _values_of(spec: dict, view: dict, x: dict) -> list:
    """The x axis's values: its sort order when it lists them, else the distinct values in the data."""
    if isinstance(x.get("sort"), list):
        return x["sort"]
    rows = [row for data in (view.get("data"), spec.get("data")) if isinstance(data, dict)
            for row in (data.get("values") or spec.get("datasets", {}).get(data.get("name"), []))]
    return list(dict.fromkeys(row.get(x["field"]) for row in rows if isinstance(row, dict)))


def chart_png(chart) -> bytes:
    return vl_convert.vegalite_to_png(report_spec(chart), scale=2)


def chart_svg(chart) -> str:
    return vl_convert.vegalite_to_svg(report_spec(chart))


# ----------------------------------------------------------------------------- Markdown

def report_markdown(report: StudyReport) -> tuple[str, dict[str, bytes]]:
    """report.md's text and its charts as PNG files ({relative path: bytes}), which it references."""
    images = {chart_file(i): chart_png(chart)
              for i, (_, chart) in enumerate(report.charts)}
    lines = [f"# {_md_text(report.title)}", "", f"*{_md_text(_meta_line(report))}*", "",
             f"**Question.** {_md_text(report.question)}", "",
             f"**Conclusion.** {_md_text(report.conclusion)}", "", *_md_reference(report),
             "## Results", "", *_md_table(list(report.table.columns), report.table.itertuples(index=False)), ""]
    if report.charts:
        lines += ["## Charts", ""]
        for i, (caption, _) in enumerate(report.charts):
            lines += [f"![{_md_alt(caption)}]({chart_file(i)})", "", f"*{_md_text(caption)}*", ""]
    lines += [f"## Settings of the base run ({_md_text(report.setting)} is swept)", "",
              *_md_table(["setting", "value"], settings_rows(report.base_settings)), ""]
    if report.run_ids:
        lines += ["## Runs", "", ", ".join(f"`{_md_code(run_id)}`" for run_id in report.run_ids), ""]
    lines += ["---", "", _md_text(_footer(report)), ""]
    return "\n".join(lines), images


def _md_reference(report: StudyReport) -> list[str]:
    """'What such reports found', and their figures beside this run's, when the study names them."""
    if not report.reference:
        return []
    lines = [f"**What such reports found.** {_md_text(report.reference)}", ""]
    if report.beside is not None:
        lines += [*_md_table(list(report.beside.columns), report.beside.itertuples(index=False)), ""]
    return lines


def report_zip(report: StudyReport) -> bytes:
    """A zip of report.md, the PNG charts it references and results.csv."""
    text, images = report_markdown(report)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.md", text.encode("utf-8"))
        for path, png in images.items():
            archive.writestr(path, png)
        archive.writestr("results.csv", _csv(report))
    return buffer.getvalue()


def _md_text(text) -> str:
    """Text as Markdown shows it literally: no raw HTML, one line."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(value) -> str:
    return _md_text(value).replace("|", "\\|") or " "


def _md_alt(caption) -> str:
    return _md_text(caption).replace("[", "\\[").replace("]", "\\]")


def _md_code(text) -> str:
    return str(text).replace("`", "'")


def _md_table(header: list, rows) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]


# ----------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.5rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; border-bottom: 1px solid #d9dee3; padding-bottom: .2rem; }
.meta { color: #52606d; margin: 0 0 1rem; }
.conclusion { background: #eef5fb; border-left: 4px solid #4c78a8; padding: .6rem 1rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d9dee3; padding: .3rem .7rem; text-align: left; }
th { background: #f5f7fa; }
figure { margin: 1rem 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #52606d; font-size: .9rem; }
code { font-size: .85rem; background: #f5f7fa; padding: 0 .25rem; }
footer { margin-top: 2.5rem; padding-top: .8rem; border-top: 1px solid #d9dee3; color: #52606d; font-size: .85rem; }
"""


def report_html(report: StudyReport) -> str:
    """The report as ONE self-contained HTML file: inline CSS, the charts as inline SVG, and no
    external URL, so it opens offline. Every text from the study is escaped."""
    e = html.escape
    parts = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(report.title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", "<main>",
             f"<h1>{e(report.title)}</h1>", f'<p class="meta">{e(_meta_line(report))}</p>',
             "<h2>Question</h2>", f"<p>{e(report.question)}</p>",
             "<h2>Conclusion</h2>", f'<p class="conclusion">{e(report.conclusion)}</p>', *_html_reference(report),
             "<h2>Results</h2>", _html_table(list(report.table.columns), report.table.itertuples(index=False))]
    if report.charts:
        parts.append("<h2>Charts</h2>")
        parts += [f"<figure>{inline_svg(chart)}<figcaption>{e(caption)}</figcaption></figure>"
                  for caption, chart in report.charts]
    parts += [f"<h2>Settings of the base run ({e(report.setting)} is swept)</h2>",
              _html_table(["setting", "value"], settings_rows(report.base_settings))]
    if report.run_ids:
        parts += ["<h2>Runs</h2>", "<p>" + " ".join(f"<code>{e(str(i))}</code>" for i in report.run_ids) + "</p>"]
    parts += [f"<footer>{e(_footer(report))}</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _html_reference(report: StudyReport) -> list[str]:
    if not report.reference:
        return []
    parts = ["<h2>What such reports found</h2>", f"<p>{html.escape(report.reference)}</p>"]
    if report.beside is not None:
        parts.append(_html_table(list(report.beside.columns), report.beside.itertuples(index=False)))
    return parts


def inline_svg(chart) -> str:
    """The chart as SVG markup to put inside HTML, without the namespace URLs HTML does not need."""
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", chart_svg(chart))


def _html_table(header: list, rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
