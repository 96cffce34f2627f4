"""Run tables, config diffs, side-by-side metrics and time estimates for the dashboard (the runs
tables' query line: core/present/run_query.py).

Plain Python + pandas on what the run store returns (`Run.describe()`, `Run.config()`,
`Run.summary()`, `Run.history()`), so it is testable without Streamlit or TensorFlow.
"""
from __future__ import annotations

import pandas as pd

from core.ml.decisions import decision_rule
from core.settings.config import flatten_settings, with_used_dropout


TABLE_COLUMNS = ("name", "state", "arch", "task", "image_size", "epochs", "epoch", "optimizer",
                 "learning_rate", "batch_size", "dropout", "activation", "augmentation", "best_val_loss",
                 "decision", "val_accuracy", "test_accuracy", "test_macro_f1", "test_auc", "train_accuracy",
                 "train_loss", "accuracy_gap", "duration_s", "peak_memory_mb",
                 "images_per_sec", "device", "node", "sweep", "created", "starred", "tags", "notes",
                 "error", "run_id", "sweep_id")
# Overfitting at the evaluated epoch: in the table (CSV, query, the column menu), not shown at first.
OPTIONAL_COLUMNS = ("train_accuracy", "train_loss", "accuracy_gap")
# The runs table on screen: the star and tags beside the name, as in W&B; sweep_id only filters.
SHOWN_COLUMNS = ("starred", "name", "tags", *(c for c in TABLE_COLUMNS if c not in ("starred", "name", "tags",
                                                                                 "sweep_id", *OPTIONAL_COLUMNS)))
# Config keys that never make two runs "differ" in a meaningful way.
IGNORED_DIFF_KEYS = ("name",)
METRIC_ROWS = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "macro_ovr_auc", "average_precision",
               "log_loss", "brier")
DECISION_HELP = ("How the run's accuracies and macro-F1 decide: at the threshold on the disease score chosen on "
                 "its validation split (best F1), as Evaluate and the model card show them by default, or argmax "
                 "(the most likely class) where the classes have no disease-vs-normal view, or in runs saved "
                 "before their figures were at the threshold")
# How the runs tables (Runs & Compare, Home) show a column: (label, printf format or None, help or None).
RUN_COLUMNS = {
    "starred": ("★", None, "Starred runs (on Runs & Compare: select rows, press Star)"),
    "name": ("name", None, None),
    "tags": ("tags", None, None),
    "learning_rate": ("lr", "%.0e", None),
    "best_val_loss": ("best val loss", "%.4f", None),
    "decision": ("decided at", None, DECISION_HELP),
    "val_accuracy": ("val acc", "%.3f", "Validation accuracy at the run's decision (column 'decided at')"),
    "test_accuracy": ("test acc", "%.3f", "Test accuracy at the run's decision (column 'decided at')"),
    "test_macro_f1": ("test macro-F1", "%.3f", "Test macro-F1 at the run's decision (column 'decided at')"),
    "test_auc": ("test AUC", "%.3f", None),
    "train_accuracy": ("train acc", "%.3f", "Training accuracy @ argmax at the evaluated (best) epoch, as Keras "
                                            "logged it over that epoch (dropout and augmentation on)"),
    "train_loss": ("train loss", "%.4f", "Training loss at the evaluated (best) epoch"),
    "accuracy_gap": ("train − val acc", "%.3f", "Train minus validation accuracy @ argmax at the evaluated (best) "
                                                "epoch: the larger, the more the model overfits its training images"),
    "duration_s": ("duration (s)", "%.0f", None),
    "peak_memory_mb": ("peak memory (MB)", "%.0f", "Peak resident memory of the run's training process"),
    "images_per_sec": ("images/s", "%.0f", "Training speed (median of the epochs after the first)"),
    "device": ("device", None, None),
    "node": ("node", None, "The machine that trained the run: a Ray node's host name, or the worker's own"),
    "sweep": ("sweep", None, "The sweep that queued the run"),
    "notes": ("notes", None, "The first line of the run's notes"),
}


CREATED_FORMAT = "%Y-%m-%d %H:%M"  # the 'created' column (UTC)
MISSING = "—"  # an empty cell, in every table shown as text
# Where a numeric axis puts runs that kept the architecture's default (below the 0-1 scale).
DEFAULT_POSITION = -0.2


def flatten(values: dict) -> dict:
    """{'arch_params': {'width': 2}} -> {'arch_params.width': 2}; lists become 'a, b' strings."""
    return {name: ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
            for name, value in flatten_settings(values).items()}


def augmentation_label(config: dict) -> str:
    """'off' or the augmentations in use, e.g. 'rotation_degrees=10, zoom=0.1'."""
    active = {k: v for k, v in (config.get("augmentation") or {}).items() if v}
    return ", ".join(f"{k}={v}" if v is not True else k for k, v in active.items()) or "off"


def run_row(description: dict, config: dict, sweep_names: dict[str, str] | None = None) -> dict:
    """One table row: `Run.describe()` plus the settings people ablate; tags as 'a, b' and the
    sweep by its name (`sweep_names`: sweep id -> name)."""
    params = config.get("arch_params") or {}
    sweep_id = description.get("sweep_id")
    has_results = description.get("test_accuracy") is not None or description.get("val_accuracy") is not None
    return {**description, "tags": ", ".join(description.get("tags") or []),
            "decision": decision_rule(description.get("decision_threshold")) if has_results else None,
            "sweep": (sweep_names or {}).get(sweep_id, sweep_id) if sweep_id else None,
            "optimizer": config.get("optimizer"), "learning_rate": config.get("learning_rate"),
            "batch_size": config.get("batch_size"), "dropout": with_used_dropout(config)["dropout"],
            "activation": params.get("activation"), "augmentation": augmentation_label(config),
            "created": pd.to_datetime(description.get("created"), unit="s", utc=True)
            if description.get("created") else None}


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """The runs table, columns in a fixed order (missing values stay empty)."""
    frame = pd.DataFrame(rows)
    for column in TABLE_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(TABLE_COLUMNS)]


def filter_runs(table: pd.DataFrame, states=(), archs=(), text: str = "", tags=(), starred: bool = False,
                sweep: str = "") -> pd.DataFrame:
    """Rows whose state and architecture are among those chosen (none chosen = all), with any of
    `tags`, starred (with `starred`), of the sweep `sweep` (its id) and whose name or run id contains
    `text` (case-insensitive)."""
    keep = pd.Series(True, index=table.index)
    if states:
        keep &= table["state"].isin(list(states))
    if archs:
        keep &= table["arch"].isin(list(archs))
    if tags:
        keep &= table["tags"].map(lambda cell: bool(tag_set(cell) & set(tags)))
    if starred:
        keep &= table["starred"].fillna(False).astype(bool)
    if sweep:
        keep &= table["sweep_id"] == sweep
    if text.strip():
        needle = text.strip().lower()
        keep &= (table["name"].astype(str).str.lower().str.contains(needle, regex=False)
                 | table["run_id"].astype(str).str.lower().str.contains(needle, regex=False))
    return table[keep]


def tag_set(cell) -> set[str]:
    """The tags of a table cell ('a, b')."""
    return {tag.strip() for tag in cell.split(",") if tag.strip()} if isinstance(cell, str) else set()


def all_tags(table: pd.DataFrame) -> list[str]:
    return sorted(set().union(*(tag_set(cell) for cell in table["tags"]))) if len(table) else []


def runs_as_text(table: pd.DataFrame, columns) -> pd.DataFrame:
    """`columns` of the runs table as text formatted as RUN_COLUMNS says, an empty cell as MISSING
    (a numeric cell st.dataframe leaves empty reads 'None')."""
    def cell(column, value):
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return MISSING
        if column == "created":
            return value.strftime(CREATED_FORMAT)
        if column == "starred":
            return "★" if value else ""
        number_format = RUN_COLUMNS.get(column, (None, None, None))[1]
        if number_format:
            return number_format % value
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return pd.DataFrame({column: [cell(column, v) for v in table[column]] for column in columns}, index=table.index)


def table_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode()


def config_diff(configs: dict[str, dict]) -> pd.DataFrame:
    """Settings (flattened) whose value differs between the runs: one row per setting, one column per run."""
    flat = {name: flatten(with_used_dropout(config)) for name, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values} - set(IGNORED_DIFF_KEYS))
    rows = {}
    for key in keys:
        values = [flat[name].get(key) for name in flat]
        if len({repr(v) for v in values}) > 1:
            # As text: mixed types (None next to 0.3) would not fit one table column otherwise.
            rows[key] = [_setting_label(key, v) for v in values]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(flat))
    frame.index.name = "setting"
    return frame


def metrics_side_by_side(summaries: dict[str, dict], split: str = "test") -> pd.DataFrame:
    """Headline metrics of `split`, recall per class (plus best epoch and run time): one column per run.
    The first row, "decided at", names each run's decision rule, at which its accuracies, macro-F1
    and recalls were computed ('threshold 0.43' or 'argmax').

    "auc" is disease vs normal when the classes have that view; "macro_ovr_auc" averages one
    class against the rest over every class, so a class the model never finds pulls it down.
    """
    columns = {}
    for name, summary in summaries.items():
        metrics = summary.get(split) or {}
        column = {"decided at": decision_rule(metrics.get("threshold")) if metrics else None}
        column.update({metric: metrics.get(metric) for metric in METRIC_ROWS})
        for class_name, row in (metrics.get("per_class") or {}).items():
            column[f"recall: {class_name}"] = row.get("recall")
        column["best_val_loss"] = summary.get("best_val_loss")
        column["best_epoch"] = summary.get("best_epoch")
        column["seconds"] = summary.get("seconds")
        columns[name] = column
    frame = pd.DataFrame(columns)
    frame.index.name = "metric"
    return frame


def never_predicted(summary: dict, split: str = "test") -> list[dict]:
    """Classes of `split` that the run never predicts, from its confusion matrix (so summaries
    written before metrics listed them work too): [{"class", "support"}]."""
    from core.ml.metrics import (
        never_predicted as from_matrix,  # scikit-learn: not on Home's first paint
    )
    metrics = summary.get(split) or {}
    matrix, names = metrics.get("confusion_matrix"), summary.get("class_names")
    return from_matrix(matrix, names) if matrix is not None and names else []


def never_predicted_warnings(summaries: dict[str, dict], split: str = "test") -> list[str]:
    """'b: viral never predicted (0 of 168 viral images)', one line per run and class."""
    return [f"{name}: {item['class']} never predicted (0 of {item['support']} {item['class']} images)"
            for name, summary in summaries.items() for item in never_predicted(summary, split)]


def roc_curves(predictions: dict[str, dict | None]) -> dict[str, dict]:
    """Label -> test ROC curve (disease vs normal) of the runs with test predictions whose classes have
    that view."""
    from core.ml.curves import roc  # scikit-learn: not on Home's first paint
    curves = {}
    for label, found in predictions.items():
        curve = roc(found["probabilities"], found["labels"], found["class_names"]) if found is not None else None
        if curve:
            curves[label] = curve
    return curves


def unique_names(names: list[str]) -> list[str]:
    """Make display names unique by numbering repeats ('cnn', 'cnn (2)')."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return result


def parallel_coordinates_frame(configs: dict[str, dict], metric_values: dict[str, float | None],
                               settings: list[str] | None = None) -> pd.DataFrame:
    """Long frame (run, axis, position, label, metric_value, off_scale) for parallel coordinates.

    Numeric settings are scaled min-max to 0-1; categorical ones are spread evenly in sorted order.
    On a numeric axis, a run that kept the architecture's default (value None) is not mixed into
    the numbers: it sits apart at DEFAULT_POSITION, below the scale, labelled "default".
    By default the axes are the settings that differ between the runs; the metric is the last axis.
    """
    flat = {name: flatten(with_used_dropout(config)) for name, config in configs.items()}
    if settings is None:
        settings = list(config_diff(configs).index)
    columns = {axis: [flat[name].get(axis) for name in flat] for axis in settings}
    columns["metric"] = [metric_values.get(name) for name in flat]
    rows = []
    for axis, values in columns.items():
        for name, value, position in zip(flat, values, _axis_positions(values)):
            rows.append({"run": name, "axis": axis, "position": position, "label": _setting_label(axis, value),
                         "metric_value": metric_values.get(name),
                         "off_scale": position == DEFAULT_POSITION})
    return pd.DataFrame(rows, columns=["run", "axis", "position", "label", "metric_value", "off_scale"])


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _axis_positions(values: list) -> list[float]:
    numeric = [v for v in values if is_number(v)]
    if numeric and all(is_number(v) or v is None for v in values):
        low, high = min(numeric), max(numeric)
        return [DEFAULT_POSITION if v is None else 0.5 if high == low else (v - low) / (high - low)
                for v in values]
    categories = sorted({_label(v) for v in values})
    spread = max(1, len(categories) - 1)
    return [0.5 if len(categories) == 1 else categories.index(_label(v)) / spread for v in values]


def _setting_label(key: str, value) -> str:
    """A missing architecture parameter means the architecture's default; a dropout of None, that
    the architecture has none (with_used_dropout)."""
    if value is None and key.startswith("arch_params."):
        return "default"
    if value is None and key == "dropout":
        return "none"
    if value is None and key == "split_seed":
        return "= seed"
    return _label(value)


def _label(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def as_text(frame: pd.DataFrame, digits: int, whole_rows=(), whole_columns=()) -> pd.DataFrame:
    """Numbers as fixed-precision text (whole numbers in `whole_rows` and `whole_columns`) and missing
    values as MISSING (st.dataframe would print 'None' for a recall a run does not have, e.g. a binary
    run next to a 3-class one)."""
    def cell(value, whole):
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return MISSING
        if isinstance(value, (int, float)):
            return f"{value:.0f}" if whole else f"{value:.{digits}f}"
        return str(value)
    return pd.DataFrame({column: [cell(v, row in whole_rows or column in whole_columns)
                                  for row, v in frame[column].items()] for column in frame.columns},
                        index=frame.index)


def format_seconds(seconds: float | None) -> str:
    """'42 s', '3 min 5 s', '1 h 2 min'; '—' for None."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def format_count(n: float | int | None) -> str:
    """1234567 -> '1.23 M'."""
    if n is None:
        return "—"
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}"
    return str(int(n))
