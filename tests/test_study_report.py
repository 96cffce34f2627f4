"""A study's one-sentence conclusion and its report (Markdown zip, self-contained HTML), on
constructed results whose answer is known."""
import html
import io
import math
import re
import zipfile
from datetime import datetime

import altair as alt
import pandas as pd
import pytest

from core.present.study_answer import conclusion, trend_conclusion
from core.present.study_report import StudyReport, report_html, report_markdown, report_zip, results_numbers, results_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DROPOUT = {"setting_label": "dropout", "metric_title": "Test accuracy"}


def point(label, mean, std, n=3, value=None, **extra):
    value = float(label) if value is None else value
    return {"label": label, "value": value, "mean": mean, "std": std, "n": n, **extra}


def dropout_points(*means_stds, n=3):
    return [point(label, m, s, n) for label, (m, s) in zip(["0.2", "0.4", "0.6", "0.8"], means_stds)]


# ----------------------------------------------------------------------------- conclusion

def test_a_clear_winner_is_named_with_the_runner_up():
    points = dropout_points((0.800, 0.010), (0.912, 0.010), (0.871, 0.012), (0.850, 0.010))
    assert conclusion(points, **DROPOUT) == (
        "Dropout 0.4 scores best (test accuracy 0.912 ± 0.010, 3 seeds), more than one standard deviation "
        "ahead of every other value (next: 0.6, 0.871 ± 0.012).")


def test_contiguous_tied_values_on_a_numeric_axis_read_as_a_range():
    points = dropout_points((0.905, 0.010), (0.912, 0.010), (0.904, 0.012), (0.850, 0.010))
    assert conclusion(points, **DROPOUT) == (
        "Dropout 0.4 scores best (test accuracy 0.912 ± 0.010, 3 seeds); 0.2 to 0.6 are within one "
        "standard deviation of it, so the data cannot tell them apart.")


def test_tied_values_apart_on_the_axis_are_listed_and_a_lone_tie_takes_is():
    split = dropout_points((0.905, 0.010), (0.912, 0.010), (0.850, 0.012), (0.910, 0.010))
    assert "; 0.2 to 0.4 and 0.8 are within one standard deviation of it" in conclusion(split, **DROPOUT)
    lone = dropout_points((0.800, 0.010), (0.912, 0.010), (0.850, 0.012), (0.910, 0.010))
    assert "; 0.8 is within one standard deviation of it, so the data cannot" in conclusion(lone, **DROPOUT)


def test_a_numeric_axis_given_out_of_order_still_forms_ranges_by_value():
    points = dropout_points((0.905, 0.010), (0.912, 0.010), (0.904, 0.012), (0.850, 0.010))
    shuffled = [points[2], points[0], points[3], points[1]]
    assert "; 0.2 to 0.6 are within one standard deviation" in conclusion(shuffled, **DROPOUT)


def test_categorical_ties_are_listed_without_the_best():
    points = [point(name, mean, 0.01, value=name) for name, mean in
              [("relu", 0.905), ("elu", 0.912), ("sigmoid", 0.700), ("leaky_relu", 0.909), ("tanh", 0.910)]]
    assert conclusion(points, setting_label="activation", metric_title="Test AUC") == (
        "Activation elu scores best (test AUC 0.912 ± 0.010, 3 seeds); relu, leaky_relu and tanh are within "
        "one standard deviation of it, so the data cannot tell them apart.")


def test_when_every_value_is_within_one_std_of_the_best_none_stands_out():
    points = dropout_points((0.905, 0.010), (0.912, 0.010), (0.904, 0.012), (0.910, 0.010))
    assert conclusion(points, **DROPOUT) == (
        "No value of dropout stands out: all 4 are within one standard deviation of the best "
        "(0.4, test accuracy 0.912 ± 0.010, 3 seeds).")
    two = dropout_points((0.905, 0.010), (0.912, 0.010))
    assert conclusion(two, **DROPOUT).startswith("No value of dropout stands out: both are within")


def test_a_tie_is_within_the_larger_of_the_two_standard_deviations():
    at_the_edge = dropout_points((0.75, 0.25), (0.5, 0.0), (0.1, 0.0))
    assert "0.2 to 0.4 are within one standard deviation" in conclusion(at_the_edge, **DROPOUT)
    just_past = dropout_points((0.75, 0.0), (0.5, 0.2499), (0.1, 0.0))
    assert "more than one standard deviation ahead of every other value (next: 0.4" in conclusion(just_past, **DROPOUT)


def test_lower_is_better_names_the_lowest_and_its_unit():
    points = [point("16", 30.0, 1.0), point("32", 22.0, 1.0), point("64", 25.0, 1.0)]
    assert conclusion(points, setting_label="batch size", metric_title="Wall time (s)", higher_is_better=False,
                      digits=1) == (
        "Batch size 32 is lowest (wall time 22.0 ± 1.0 s, 3 seeds), more than one standard deviation below "
        "every other value (next: 64, 25.0 ± 1.0 s).")
    tied = [point("16", 30.0, 1.0), point("32", 22.0, 1.0), point("64", 22.5, 1.0)]
    assert "Batch size 32 is lowest" in conclusion(tied, setting_label="batch size", metric_title="wall time (s)",
                                                   higher_is_better=False)
    all_tied = [point("16", 22.4, 1.0), point("32", 22.0, 1.0)]
    assert "within one standard deviation of the lowest (32," in conclusion(
        all_tied, setting_label="batch size", metric_title="wall time (s)", higher_is_better=False)


def test_one_run_per_value_names_the_best_and_says_the_comparison_has_no_uncertainty():
    points = dropout_points((0.880, 0.0), (0.912, 0.0), (0.871, 0.0), n=1)
    assert conclusion(points, **DROPOUT) == (
        "Dropout 0.4 scores best (test accuracy 0.912; next: 0.2, 0.880), but with one run per value the "
        "comparison has no uncertainty: repeat with seeds to know whether the difference is real.")
    equal = dropout_points((0.880, 0.0), (0.912, 0.0), (0.912, 0.0), n=1)
    assert conclusion(equal, **DROPOUT).startswith("Dropout 0.4 and 0.6 tie for best (test accuracy 0.912; next: 0.2")


def test_a_study_with_one_or_no_finished_value_says_what_is_missing():
    one = [point("0.2", None, None, 0), point("0.4", 0.912, 0.010), point("0.6", None, None, 0)]
    assert conclusion(one, **DROPOUT) == (
        "Only dropout 0.4 has finished runs so far (test accuracy 0.912 ± 0.010, 3 seeds); 0.2 and 0.6 have "
        "none yet, so nothing can be compared.")
    none = [point("0.2", None, None, 0), point("0.4", None, None, 0)]
    assert conclusion(none, **DROPOUT) == "No run has finished yet, so there is nothing to compare."
    assert conclusion([], **DROPOUT) == "No run has finished yet, so there is nothing to compare."


def test_unfinished_values_are_left_out_of_the_comparison_and_break_a_range():
    points = [point("0.2", 0.905, 0.010), point("0.4", None, None, 0), point("0.6", 0.912, 0.012),
              point("0.8", 0.850, 0.010)]
    assert conclusion(points, **DROPOUT) == (
        "Dropout 0.6 scores best (test accuracy 0.912 ± 0.012, 3 seeds); 0.2 is within one standard deviation "
        "of it, so the data cannot tell them apart — 0.4 has none finished yet.")
    nan_mean = [point("0.2", 0.905, 0.010), point("0.4", float("nan"), float("nan"), 0), point("0.6", 0.906, 0.01)]
    assert conclusion(nan_mean, **DROPOUT).startswith(
        "No value of dropout stands out: both values with results are within one standard deviation")


def test_named_values_with_fewer_finished_runs_are_mentioned():
    points = [point("0.2", 0.800, 0.010), point("0.4", 0.912, 0.010), point("0.6", 0.871, 0.0, n=1),
              point("0.8", 0.700, 0.010, n=2)]
    # 0.8 misses a run too, but the answer does not rest on it.
    assert conclusion(points, **DROPOUT) == (
        "Dropout 0.4 scores best (test accuracy 0.912 ± 0.010, 3 seeds), more than one standard deviation "
        "ahead of every other value (next: 0.6, 0.871) — 0.6 has 1 of 3 runs finished.")
    planned = [point("0.2", 0.800, 0.010, runs=5), point("0.4", 0.912, 0.010, runs=5)]
    assert conclusion(planned, **DROPOUT).endswith("— 0.2 has 3 of 5 runs finished and 0.4 has 3 of 5 runs finished.")


def test_folds_are_counted_as_folds():
    points = dropout_points((0.800, 0.010), (0.912, 0.010))
    assert "(test accuracy 0.912 ± 0.010, 3 folds)" in conclusion(points, **DROPOUT, repeat_unit="fold")


@pytest.mark.parametrize("points, message", [
    ("0.4", "points must be a list"),
    ([0.4], "point 1 must be a dict"),
    ([{"label": "0.4"}], "point 1 needs a 'label' and a 'mean'"),
    ([point("0.4", "high", 0.01)], "the mean of 0.4 must be a number or None; got 'high'"),
    ([point("0.4", 0.9, -0.1)], "the standard deviation of 0.4 must be 0 or more"),
    ([point("0.4", 0.9, 0.01, n=0)], "0.4 has a mean but n = 0"),
    ([point("0.4", 0.9, 0.01, n=2.5)], "n \\(finished runs\\) of 0.4 must be a whole number"),
])
def test_bad_points_say_what_is_wrong(points, message):
    with pytest.raises(ValueError, match=message):
        conclusion(points, **DROPOUT)


# ----------------------------------------------------------------------------- speed and memory

def test_trends_give_the_change_from_the_smallest_to_the_largest_value_with_its_factor():
    speed = [point("16", 210.0, 5.0), point("32", 400.0, 5.0), point("128", 540.0, 9.0)]
    memory = [point("128", 1980.0, 9.0), point("16", 1410.0, 5.0), point("32", 1500.0, 5.0)]
    assert trend_conclusion({"images / s": speed, "peak memory (MB)": memory}, setting_label="batch size") == (
        "Images / s rises from 210 at batch size 16 to 540 at 128 (2.6x); peak memory rises from 1,410 MB "
        "to 1,980 MB (1.4x).")


def test_a_falling_trend_and_one_within_noise():
    time = [point("64", 30.0, 1.0), point("128", 12.0, 1.0)]
    memory = [point("64", 1410.0, 15.0), point("128", 1420.0, 9.0)]
    assert trend_conclusion({"Time per epoch (s)": time, "Peak memory (MB)": memory}, setting_label="image size") == (
        "Time per epoch falls from 30.0 s at image size 64 to 12.0 s at 128 (0.40x); peak memory stays within "
        "one standard deviation (1,410 MB to 1,420 MB).")


def test_trends_name_other_ends_missing_values_and_single_runs():
    speed = [point("16", 210.0, 5.0), point("32", 300.0, 5.0), point("128", 540.0, 9.0)]
    memory = [point("16", 1410.0, 5.0), point("32", 1600.0, 5.0), point("128", None, None, 0)]
    text = trend_conclusion({"images / s": speed, "peak memory (MB)": memory, "wall time (s)": [
        point("16", None, None, 0)]}, setting_label="batch size")
    assert text == ("Images / s rises from 210 at batch size 16 to 540 at 128 (2.6x); peak memory rises from "
                    "1,410 MB at batch size 16 to 1,600 MB at 32 (1.1x); wall time: no run has finished yet.")
    single = trend_conclusion({"images / s": [point("16", 210.0, 0.0, 1), point("128", 540.0, 0.0, 1)]},
                              setting_label="batch size")
    assert single.endswith("(2.6x) — one run per value: repeat with seeds to know whether the difference is real.")


def test_a_trend_needs_a_numeric_setting():
    with pytest.raises(ValueError, match="a trend needs a numeric setting"):
        trend_conclusion({"images / s": [point("relu", 1.0, 0.1, value="relu")]}, setting_label="activation")
    with pytest.raises(ValueError, match="must map a metric title to its points"):
        trend_conclusion({}, setting_label="batch size")


# ----------------------------------------------------------------------------- tables

def test_the_results_table_shows_mean_std_and_n_per_point():
    accuracy = [point("0.2", 0.9051, 0.0104), point("0.4", 0.912, 0.01, n=2), point("0.6", None, None, 0)]
    speed = [point("0.2", 1234.4, 12.2), point("0.4", 1300.0, 10.0), point("0.6", None, None, 0)]
    table = results_table({"Test accuracy": accuracy, "images / s": speed}, setting_label="dropout")
    assert table.to_dict("records") == [
        {"dropout": "0.2", "Test accuracy": "0.905 ± 0.010", "images / s": "1,234 ± 12", "n": 3},
        {"dropout": "0.4", "Test accuracy": "0.912 ± 0.010 (n=2)", "images / s": "1,300 ± 10", "n": 3},
        {"dropout": "0.6", "Test accuracy": "—", "images / s": "—", "n": 0}]
    numbers = results_numbers({"Test accuracy": accuracy}, setting_label="dropout")
    assert list(numbers.columns) == ["dropout", "Test accuracy mean", "Test accuracy std", "Test accuracy n"]
    assert numbers["Test accuracy mean"].tolist()[:2] == [0.9051, 0.912] and pd.isna(numbers["Test accuracy mean"][2])


# ----------------------------------------------------------------------------- the report

MALICIOUS = "<script>alert(1)</script>"


def study_chart(points) -> alt.LayerChart:
    frame = pd.DataFrame({"label": [p["label"] for p in points], "mean": [p["mean"] for p in points],
                          "std": [p["std"] for p in points]})
    frame["lower"], frame["upper"] = frame["mean"] - frame["std"], frame["mean"] + frame["std"]
    base = alt.Chart(frame).encode(x=alt.X("label:N", title="dropout"))
    bars = base.mark_errorbar().encode(y=alt.Y("lower:Q", scale=alt.Scale(domain=[0.8, 0.95])), y2="upper:Q")
    line = base.mark_line(point=True, clip=True).encode(y="mean:Q")  # clipped: the SVG holds a clip id
    return (bars + line).properties(title="Test accuracy against dropout")


@pytest.fixture(scope="module")
def report() -> StudyReport:
    points = [point("0.2", 0.905, 0.010), point(MALICIOUS, 0.912, 0.010, value=MALICIOUS),
              point("a|b", 0.850, 0.010, value="a|b")]
    by_metric = {"Test accuracy": points}
    return StudyReport(
        title="Dropout study", question="Which dropout gives the best test accuracy?",
        conclusion=conclusion(points, **DROPOUT), setting="dropout",
        base_settings={"epochs": 3, "augmentation": {"zoom": 0.1, "flip": True}, "arch_params": {"filters": [16, 32]},
                       "note": MALICIOUS},
        table=results_table(by_metric, setting_label="dropout"),
        results=results_numbers(by_metric, setting_label="dropout"),
        charts=[(f"Test accuracy {MALICIOUS}", study_chart(points)), ("The same, again", study_chart(points))],
        repeats="3 seeds per point", run_ids=["run-0001", "run-0002", "run-0003"],
        created=datetime(2025, 3, 4, 15, 30))


@pytest.fixture(scope="module")
def page(report) -> str:
    return report_html(report)


def test_the_html_report_is_self_contained(page, report):
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") == len(report.charts)
    assert "<link" not in page and "<script" not in page and " src=" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert ids and len(ids) == len(set(ids))  # the two charts' clip paths do not collide


def test_the_html_report_shows_the_study_and_escapes_every_text(page, report):
    assert MALICIOUS not in page and html.escape(MALICIOUS) in page
    assert html.escape(report.conclusion) in page and report.conclusion.startswith("Dropout <script>")
    footer = ("CXR Lab — research tool, not for clinical use. Metrics on held-out patients; ± is one standard "
              "deviation over 3 seeds per point.")
    for text in ("<h1>Dropout study</h1>", "Which dropout gives the best test accuracy?", "2025-03-04 15:30",
                 "<td>augmentation.zoom</td><td>0.1</td>", "<td>arch_params.filters</td><td>[16, 32]</td>",
                 "<td>0.905 ± 0.010</td><td>3</td>", "<code>run-0002</code>", "3 seeds per point", footer):
        assert text in page, text


def test_the_markdown_zip_holds_the_report_its_charts_and_the_results(report):
    archive = zipfile.ZipFile(io.BytesIO(report_zip(report)))
    text = archive.read("report.md").decode("utf-8")
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert referenced == ["charts/chart-1.png", "charts/chart-2.png"]
    for path in referenced:
        assert archive.read(path).startswith(PNG_SIGNATURE)
    assert sorted(archive.namelist()) == sorted(["report.md", "results.csv", *referenced])
    results = pd.read_csv(io.BytesIO(archive.read("results.csv")))
    assert results["dropout"].tolist() == ["0.2", MALICIOUS, "a|b"]
    assert results["Test accuracy mean"].tolist() == [0.905, 0.912, 0.85]


def test_markdown_cells_escape_pipes_and_the_text_has_no_raw_html(report):
    text, images = report_markdown(report)
    assert "| a\\|b | 0.850 ± 0.010 | 3 |" in text
    assert "| note | &lt;script&gt;alert(1)&lt;/script&gt; |" in text
    assert MALICIOUS not in text
    assert f"**Conclusion.** {report.conclusion.replace('<', '&lt;').replace('>', '&gt;')}" in text
    assert text.rstrip().endswith("± is one standard deviation over 3 seeds per point.")
    assert set(images) == {"charts/chart-1.png", "charts/chart-2.png"}


def test_a_report_without_numbers_writes_its_table_as_the_csv(report):
    shown = StudyReport(title="t", question="q", conclusion="c", setting="dropout", base_settings={},
                        table=report.table, created=report.created)
    archive = zipfile.ZipFile(io.BytesIO(report_zip(shown)))
    assert pd.read_csv(io.BytesIO(archive.read("results.csv")))["Test accuracy"].tolist()[0] == "0.905 ± 0.010"
    assert archive.namelist() == ["report.md", "results.csv"]


@pytest.mark.parametrize("change, message", [
    ({"table": [["0.2", "0.9"]]}, "the report's table must be a pandas DataFrame"),
    ({"base_settings": ["epochs"]}, "base_settings must be a dict"),
    ({"created": "today"}, "created must be a datetime"),
    ({"charts": [("caption only",)]}, "each chart must be a \\(caption, Altair chart\\) pair"),
])
def test_a_bad_report_says_what_is_wrong(report, change, message):
    fields = {"title": "t", "question": "q", "conclusion": "c", "setting": "dropout", "base_settings": {},
              "table": report.table} | change
    with pytest.raises(ValueError, match=message):
        StudyReport(**fields)


def test_labels_that_say_what_they_are_need_no_setting_name():
    points = [{"label": "MLP", "value": "mlp", "mean": 0.89, "std": 0.005, "n": 3},
              {"label": "CNN", "value": "cnn", "mean": 0.93, "std": 0.008, "n": 3}]
    assert conclusion(points, setting_label="", metric_title="Test accuracy").startswith(
        "CNN scores best (test accuracy 0.930 ± 0.008, 3 seeds), more than one standard deviation ahead")
    points[1]["mean"] = 0.893
    assert conclusion(points, setting_label="", metric_title="Test accuracy").startswith(
        "No value stands out: both are within one standard deviation of the best (CNN,")


# ----------------------------------------------------------------------------- the charts as drawn in a report

def category_chart(labels: list[str]) -> alt.LayerChart:
    """The Studies page's chart of a study over named values (core.present.sweeps.sweep_chart)."""
    from core.present.sweeps import sweep_chart
    frame = pd.DataFrame({"arch": labels, "test_auc_mean": [0.8 + 0.01 * i for i in range(len(labels))],
                          "test_auc_std": [0.01] * len(labels), "test_auc_n": [3] * len(labels)})
    return sweep_chart(frame, [{"setting": "arch", "values": labels}], "test_auc")


def chart_report(chart) -> StudyReport:
    return StudyReport(title="Architecture study", question="q", conclusion="c", setting="arch",
                       base_settings={}, table=pd.DataFrame({"arch": ["MLP"]}), charts=[("Test AUC", chart)])


def label_positions(svg: str, labels: list[str]) -> dict[str, tuple[float, float, float]]:
    """Each axis label's (x, y, rotation in degrees) as drawn in the SVG."""
    found = {}
    for attributes, text in re.findall(r"<text([^>]*)>([^<]*)</text>", svg):
        if text in labels:
            x, y = map(float, re.search(r"translate\(([-\d.]+),([-\d.]+)\)", attributes).groups())
            rotation = re.search(r"rotate\(([-\d.]+)\)", attributes)
            found[text] = (x, y, float(rotation.group(1)) if rotation else 0.0)
    return found


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE)
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_report_charts_are_drawn_at_a_readable_size_with_level_labels_apart():
    labels = ["MLP", "CNN"]
    report = chart_report(category_chart(labels))
    svg = re.search(r"<svg[^>]*>.*?</svg>", report_html(report), re.DOTALL).group(0)
    width, height = (float(re.search(fr'<svg[^>]*\b{side}="([\d.]+)"', svg).group(1)) for side in ("width", "height"))
    assert width >= 640 and height >= 360, (width, height)  # it was 148 x 384: a strip
    (x_mlp, y_mlp, angle_mlp), (x_cnn, y_cnn, angle_cnn) = (label_positions(svg, labels)[label] for label in labels)
    assert angle_mlp == angle_cnn == 0 and y_mlp == y_cnn
    assert x_cnn - x_mlp > 3 * 7 + 20  # centres far more than a label's width apart (20 px: they read 'MLPCNN')
    _, images = report_markdown(report)
    png_width, png_height = png_size(images["charts/chart-1.png"])
    assert png_width >= 2 * 640 and png_height >= 2 * 360  # drawn at twice the size for sharpness


def test_long_labels_are_slanted_so_neighbours_do_not_overlap():
    labels = ["ImageNet weights, frozen", "ImageNet weights, fine-tuned", "from scratch, random init",
              "from scratch, wider", "from scratch, deeper", "from scratch, smaller"]
    svg = report_html(chart_report(category_chart(labels)))
    drawn = label_positions(svg, labels)
    assert list(drawn) == labels  # each drawn, in the axis order
    xs = [drawn[label][0] for label in labels]
    angle = drawn[labels[0]][2]
    assert angle != 0 and all(drawn[label][2] == angle for label in labels)
    # Slanted parallel labels a step apart are step * sin(angle) apart: more than a 10 px line of text.
    step = min(b - a for a, b in zip(xs, xs[1:]))
    assert step * abs(math.sin(math.radians(angle))) > 12, (step, angle)
