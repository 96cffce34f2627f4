"""The runs tables of Runs & Compare and Home, with one column set-up (core.present.compare.RUN_COLUMNS).
A component of those pages, not a page."""
import streamlit as st

from core.present import compare

# Home's glance at the latest runs.
RECENT_COLUMNS = ("name", "state", "arch", "image_size", "epochs", "decision", "val_accuracy", "test_accuracy",
                  "test_macro_f1", "test_auc", "duration_s", "created")


def column_config(numbers: bool) -> dict:
    """Labels and help of every declared column; with `numbers`, Streamlit formats the numbers itself
    (they stay numbers, so the table sorts them as numbers)."""
    config = {}
    for column, (label, number_format, help_text) in compare.RUN_COLUMNS.items():
        if numbers and number_format:
            config[column] = st.column_config.NumberColumn(label, format=number_format, help=help_text)
        else:
            config[column] = st.column_config.Column(label, help=help_text, pinned=column == "name" or None)
    config["created"] = (st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm") if numbers
                         else st.column_config.Column("created"))
    return config


def runs_table(table, key: str):
    """Every run (sortable numbers; empty cells read '—' as on Home), rows selectable; returns the selection event."""
    return st.dataframe(table, hide_index=True, column_config=column_config(numbers=True), on_select="rerun",
                        selection_mode="multi-row", key=key, column_order=compare.SHOWN_COLUMNS,
                        placeholder=compare.MISSING)


def recent_runs_table(table) -> None:
    """A short glance at the latest runs, as text: empty cells read '—' as in the comparison tables."""
    st.dataframe(compare.runs_as_text(table, RECENT_COLUMNS), hide_index=True, column_config=column_config(False))
