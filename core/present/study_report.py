"""The report of a study a student hands in, from its points (core/present/study_answer.py).

- `results_table` / `results_numbers`: the results as shown (mean ± std) and as numbers (the CSV).
- `StudyReport` and its exports: `report_markdown` (text + PNG charts), `report_zip`, and
  `report_html`, one self-contained file (inline CSS, charts as inline SVG, no external URL).

Charts are rendered offline by vl_convert. No Streamlit, no TensorFlow.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import vl_convert

from core import document
from core.document import Codes, Document, Figure, Footer, Heading, Lead, Paragraph, Table
from core.present.study_answer import MISSING, Point, parse_points, plural


FOOTER = ("CXR Lab — research tool, not for clinical use. Metrics on held-out patients; "
          "± is one standard deviation over {repeats}.")


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
    parts = [_created_text(report), report.repeats, plural(len(report.run_ids), "run") if report.run_ids else ""]
    return " · ".join(part for part in parts if part)


def _csv(report: StudyReport) -> bytes:
    frame = report.results if report.results is not None else report.table
    return frame.to_csv(index=False).encode("utf-8")


def chart_file(index: int) -> str:
    return f"charts/chart-{index + 1}.png"


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


def report_markdown(report: StudyReport) -> tuple[str, dict[str, bytes]]:
    """report.md's text and its charts as PNG files ({relative path: bytes}), which it references."""
    images = {chart_file(i): chart_png(chart) for i, (_, chart) in enumerate(report.charts)}
    figures = [Figure(caption, image=chart_file(i)) for i, (caption, _) in enumerate(report.charts)]
    return document.markdown(report_document(report, figures)), images


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
    external URL, so it opens offline. Every text from the study is escaped (core/document.py)."""
    figures = [Figure(caption, svg=inline_svg(chart)) for caption, chart in report.charts]
    return document.html_page(report_document(report, figures))


def report_document(report: StudyReport, figures: list[Figure]) -> Document:
    """The report's blocks, its charts drawn as `figures` (PNG files for Markdown, SVG for HTML)."""
    blocks = [Heading(report.title, 1), Paragraph(_meta_line(report), "meta"),
              Lead("Question", report.question), Lead("Conclusion", report.conclusion, "conclusion"),
              *_reference(report), Heading("Results"), frame_table(report.table)]
    if figures:
        blocks += [Heading("Charts"), *figures]
    blocks += [Heading(f"Settings of the base run ({report.setting} is swept)"),
               Table(("setting", "value"), tuple(settings_rows(report.base_settings)))]
    if report.run_ids:
        blocks += [Heading("Runs"), Codes(tuple(str(run_id) for run_id in report.run_ids))]
    return Document(report.title, [*blocks, Footer(_footer(report))], STYLE)


def _reference(report: StudyReport) -> list:
    """'What such reports found', and their figures beside this run's, when the study names them."""
    if not report.reference:
        return []
    beside = [frame_table(report.beside)] if report.beside is not None else []
    return [Lead("What such reports found", report.reference), *beside]


def frame_table(frame: pd.DataFrame) -> Table:
    return Table(tuple(frame.columns), tuple(frame.itertuples(index=False)))


def inline_svg(chart) -> str:
    """The chart as SVG markup to put inside HTML, without the namespace URLs HTML does not need."""
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", chart_svg(chart))
