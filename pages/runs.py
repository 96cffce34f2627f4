"""Runs & Compare: every run in a sortable, filterable table (star, tags, notes, rename; filter by any
setting or metric; group by sweep; open in Evaluate or Diagnose; delete, CSV export; the TensorBoard
command), and 2-6 runs side by side: curves, metrics, config diff, confusion matrices, ROC and parallel
coordinates (the comparison is ui/compare_view.py, the annotation form ui/run_annotations.py, the filters
ui/run_filters.py; the logic core.present.compare and core.present.runs)."""
import streamlit as st

from core.present import compare
from core.present import runs as runs_view
from core.store import sweeps as sweeps_lib
from ui import common, compare_view, layer_table, model_card_view, run_annotations, run_filters, tables

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

COMPARE_KEY = "runs_compare_ids"
TABLE_KEY = "runs_table"
TABLE_ROWS_KEY = "runs_table_run_ids"  # the run ids of the table's rows, in order, when last drawn
SELECTED_KEY = "runs_selected_ids"  # the runs selected in the table when last drawn
LAST_SELECTION_KEY = "runs_last_selection"
CONFIRM_DELETE_KEY = "runs_confirm_delete"
RESUME_REPORT_KEY = "resume_report"  # no form prefix: a message, not a setting to keep
CONFIRM_SWEEP_DELETE_KEY = "confirm_sweep_delete"  # the sweep id waiting for "Yes, delete"
SWEEP_REPORT_KEY = "sweep_delete_report"  # (ok, text) after deleting a sweep


# ----------------------------------------------------------------------------- the table

def selected_runs(table) -> list[str]:
    """The table; selecting rows picks runs to compare. Returns the selected run ids.

    Streamlit keeps a table's selection as row positions, whatever rows it is drawn with next; so
    when the rows shown change (a filter, a deletion), the selection is set again to the same runs
    where they are still shown, and the table, its actions and the Compare box name the same runs."""
    shown = table["run_id"].tolist()
    keep_selection_on_the_same_runs(shown)
    event = tables.runs_table(table, key=TABLE_KEY)
    rows = event.selection.rows if event else []
    selected = [shown[i] for i in rows if i < len(shown)]
    st.session_state[SELECTED_KEY], st.session_state[TABLE_ROWS_KEY] = selected, shown
    return selected


def keep_selection_on_the_same_runs(shown: list[str]) -> None:
    state = st.session_state
    if TABLE_KEY not in state:  # a table not drawn in the last run (the page was just opened): none selected
        state.pop(SELECTED_KEY, None)
    elif state.get(TABLE_ROWS_KEY) != shown:
        rows = runs_view.rows_of(state.get(SELECTED_KEY, []), shown)
        state[TABLE_KEY] = {"selection": {"rows": rows, "columns": [], "cells": []}}


def table_actions(table, selected: list[str]) -> None:
    store = common.run_store()
    row = st.container(horizontal=True)  # buttons as wide as their labels, wrapping when the page is narrow
    row.download_button("Export CSV", compare.table_csv(table), file_name="cxr_runs.csv",
                        mime="text/csv", icon=":material/download:")
    run_annotations.star_button([store.get(run_id) for run_id in selected], row)
    if selected and row.button(f"Delete {len(selected)} selected", icon=":material/delete:", key="runs_delete_button"):
        st.session_state[CONFIRM_DELETE_KEY] = list(selected)
    if len(selected) == 1:
        open_in_page(store.get(selected[0]), row, row)
    if len(selected) == 1 and row.button("Re-run: open its settings in Train", icon=":material/replay:",
                                         key="runs_rerun_button"):
        st.session_state[common.RERUN_CONFIG_KEY] = store.get(selected[0]).config()
        st.switch_page(common.PAGE_PATHS["train"])
    resumable = [r for r in selected if store.get(r).can_resume()]
    if resumable:
        st.button(f"Resume {len(resumable)} selected from their last completed epoch", key="runs_resume_button",
                  icon=":material/play_circle:", on_click=resume, args=(resumable,),
                  help="Queue them again: each goes on from its last checkpoint (weights and optimizer state).")
    report = st.session_state.pop(RESUME_REPORT_KEY, None)
    if report:
        (st.error if report["failed"] else st.success)(report["text"])
    if st.session_state.get(CONFIRM_DELETE_KEY):
        confirm_delete(st.session_state[CONFIRM_DELETE_KEY])


def open_in_page(run, evaluate_column, diagnose_column) -> None:
    """Evaluate and Diagnose buttons that open those pages with this run chosen (?run=<id>)."""
    if evaluate_column.button("Evaluate", icon=":material/fact_check:", key="runs_evaluate_button",
                              disabled=not runs_view.can_evaluate(run), help="Open this run in Evaluate"):
        st.switch_page(common.PAGE_PATHS["evaluate"], query_params={"run": run.id})
    if diagnose_column.button("Diagnose", icon=":material/stethoscope:", key="runs_diagnose_button",
                              disabled=not runs_view.can_diagnose(run), help="Open this run in Diagnose"):
        st.switch_page(common.PAGE_PATHS["diagnose"], query_params={"run": run.id})


# ----------------------------------------------------------------------------- a sweep's runs

def sweep_actions(sweep_id: str, sweep_names: dict) -> None:
    """With a sweep chosen in the filter: delete all its runs (after a confirmation)."""
    report = st.session_state.pop(SWEEP_REPORT_KEY, None)
    if report:
        (st.success if report[0] else st.error)(report[1])
    if not sweep_id:
        return
    store = common.run_store()
    count = len(sweeps_lib.sweep_run_ids(store, sweep_id))
    label = sweep_names.get(sweep_id, sweep_id)
    if st.session_state.get(CONFIRM_SWEEP_DELETE_KEY) != sweep_id:
        st.button(f"Delete all {count} runs of sweep {label}", icon=":material/delete_sweep:",
                  key="runs_delete_sweep_button", on_click=ask_to_delete_sweep, args=(sweep_id,))
        return
    st.warning(f"Delete all {count} runs of sweep {label}, their files and the sweep's record? "
               "This cannot be undone.")
    cols = st.columns([1, 1, 4])
    cols[0].button("Yes, delete the sweep", type="primary", key="runs_confirm_sweep_button",
                   on_click=delete_sweep, args=(sweep_id,))
    cols[1].button("Keep it", key="runs_keep_sweep_button", on_click=keep_sweep)


def ask_to_delete_sweep(sweep_id: str) -> None:
    st.session_state[CONFIRM_SWEEP_DELETE_KEY] = sweep_id


def keep_sweep() -> None:
    st.session_state.pop(CONFIRM_SWEEP_DELETE_KEY, None)


def delete_sweep(sweep_id: str) -> None:
    """Button callback: delete the sweep's runs and record, then show all runs again."""
    state = st.session_state
    state.pop(CONFIRM_SWEEP_DELETE_KEY, None)
    try:
        deleted = sweeps_lib.delete_sweep(common.run_store(), sweep_id)
    except (KeyError, RuntimeError) as exc:
        state[SWEEP_REPORT_KEY] = (False, str(exc).strip("'\""))
        return
    state["runs_filter_sweep"] = ""
    state.pop(COMPARE_KEY, None)
    state[SWEEP_REPORT_KEY] = (True, f"Deleted sweep {sweep_id} and its {len(deleted)} runs.")


def tensorboard_hint() -> None:
    st.caption("Open every run in TensorBoard: run this where the dashboard runs, then browse "
               f"http://localhost:{runs_view.TENSORBOARD_PORT}")
    st.code(runs_view.tensorboard_command(common.run_store().root), language="bash")


def resume(run_ids: list[str]) -> None:
    """Queue the runs again to go on from their checkpoints (a button callback)."""
    st.session_state[RESUME_REPORT_KEY] = runs_view.resume_report(*common.resume_runs(run_ids))


def failure_reasons(run_ids: list[str]) -> None:
    """Why each selected run failed or was interrupted, with what its training process printed last."""
    for run_id in run_ids:
        run = common.run_store().get(run_id)
        status, name = run.status(), run.display_name()
        reason = runs_view.failure(name, status)
        if reason is None:
            continue
        st.error(reason)
        if status.get("stderr_tail"):
            with st.expander(f"What the training process of {name} printed"):
                st.code(status["stderr_tail"], language=None)


def one_run_details(run_ids: list[str]) -> None:
    """For one selected run: its saved per-layer table (runs from before it was saved have none), and
    once it has predictions its model card and the SavedModel / TFLite export."""
    if len(run_ids) != 1:
        return
    run = common.run_store().get(run_ids[0])
    rows = run.layer_table()
    if rows:
        layer_table.layers_expander(rows, title=f"Layers of {run.display_name()}: output shape, "
                                                "parameters and MACs")
    if run.predictions_path("test").exists():
        model_card_view.model_card_and_export(run)


def confirm_delete(run_ids: list[str]) -> None:
    st.warning(f"Delete {len(run_ids)} run(s) and all their files? This cannot be undone.")
    cols = st.columns([1, 1, 4])
    if cols[0].button("Yes, delete", type="primary", key="runs_confirm_button"):
        for run_id in run_ids:
            try:
                common.run_store().delete(run_id)
            except (KeyError, RuntimeError) as exc:
                st.error(str(exc))
        st.session_state.pop(CONFIRM_DELETE_KEY, None)
        st.session_state.pop(COMPARE_KEY, None)
        st.rerun()
    if cols[1].button("Keep them", key="runs_cancel_delete_button"):
        st.session_state.pop(CONFIRM_DELETE_KEY, None)
        st.rerun()


# ----------------------------------------------------------------------------- comparison

def choose_runs(table, selected: list[str]) -> list[str]:
    """Runs to compare: the table selection when there is one, else the multiselect (which
    starts with the latest finished runs)."""
    state = st.session_state
    state[COMPARE_KEY] = runs_view.compare_choice(state.get(COMPARE_KEY), selected, state.get(LAST_SELECTION_KEY),
                                                  table)
    state[LAST_SELECTION_KEY] = selected
    names = dict(zip(table["run_id"], table["name"]))
    return st.multiselect("Runs to compare (2 to 6; or select rows in the table)", list(names),
                          format_func=lambda r: f"{names[r]} ({r})", key=COMPARE_KEY,
                          max_selections=runs_view.MAX_COMPARE)


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Runs & Compare")
    store = common.run_store()
    runs = store.list()
    if not runs:
        sweep_actions("", {})
        common.no_runs_yet()
        return
    sweep_names = runs_view.sweep_names(sweeps_lib.list_sweeps(store))
    configs = {run.id: run.config() for run in runs}
    table = compare.runs_table([compare.run_row(run.describe(), configs[run.id], sweep_names) for run in runs])
    shown = run_filters.filters(table, configs, sweep_names)
    sweep_actions(st.session_state.get("runs_filter_sweep", ""), sweep_names)
    selected = selected_runs(shown)
    table_actions(shown, selected)
    run_annotations.annotate([store.get(run_id) for run_id in selected])
    failure_reasons(selected)
    one_run_details(selected)
    tensorboard_hint()
    st.divider()
    st.header("Compare")
    chosen = choose_runs(table, selected)
    if len(chosen) < 2:
        st.info("Pick at least two runs to compare (select rows in the table or use the box above).")
        return
    compare_view.comparison([store.get(r) for r in chosen])


main()
