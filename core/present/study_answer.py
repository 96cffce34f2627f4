"""A study's answer in one sentence, from its points.

A study sweeps one setting (dropout 0.2 .. 0.8), each point repeated over seeds or folds. Its
results are plain dicts, one per point, in the axis order:

    {"label": "0.4", "value": 0.4, "mean": 0.912, "std": 0.010, "n": 3}

`mean` and `std` are None when no run of the point finished; `std` is 0.0 when n == 1. An optional
"runs" (the runs planned for the point) lets a sentence say "0.8: 1 of 3 runs finished"; without
it, the most runs any point finished stands for the plan.

- `conclusion`: the best value, and the values the data cannot tell apart from it. Two values tie
  when their means differ by at most the larger of their two standard deviations.
- `trend_conclusion`: how speed and memory change from the smallest setting value to the largest.

The report a student hands in: core/present/study_report.py. No Streamlit, no TensorFlow.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass


REPEAT_ADVICE = "repeat with seeds to know whether the difference is real"
MISSING = "—"


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
        return f"{self.metric} {self.amount(p)}, {plural(p.n, self.repeat_unit)}"


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
        notes.append(f"{p.label} has {p.n} of {plural(planned, 'run')} finished" if p.finished
                     else f"{p.label} has none finished yet")
    return f" — {_and(notes)}" if notes else ""


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


def plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"
