"""Runs & Compare: every run in a sortable, filterable table (delete, CSV export), and 2-6 runs
side by side: curves, metrics, config diff, confusion matrices, ROC and parallel coordinates
(the comparison is pages/compare_view.py; the logic core.present.compare and core.present.runs)."""
import streamlit as st

from core.present import compare
from core.present import runs as runs_view
from core.store.runs import STATES
from pages import common, compare_view, layer_table, tables

COMPARE_KEY = "runs_compare_ids"
LAST_SELECTION_KEY = "runs_last_selection"
CONFIRM_DELETE_KEY = "runs_confirm_delete"
RESUME_REPORT_KEY = "resume_report"  # no form prefix: a message, not a setting to keep


# ----------------------------------------------------------------------------- the table

def filters(table):
    cols = st.columns([2, 2, 3])
    states = cols[0].multiselect("State", STATES, key="runs_filter_states", placeholder="all states")
    archs = cols[1].multiselect("Architecture", sorted(table["arch"].dropna().unique()),
                                key="runs_filter_archs", placeholder="all architectures")
    text = cols[2].text_input("Name contains", key="runs_filter_text")
    return compare.filter_runs(table, states, archs, text)


def selected_runs(table) -> list[str]:
    """The table; selecting rows picks runs to compare. Returns the selected run ids."""
    event = tables.runs_table(table, key="runs_table")
    return [table.iloc[i]["run_id"] for i in (event.selection.rows if event else [])]


def table_actions(table, selected: list[str]) -> None:
    store = common.run_store()
    cols = st.columns([1, 1, 3])
    cols[0].download_button("Export CSV", compare.table_csv(table), file_name="cxr_runs.csv",
                            mime="text/csv", icon=":material/download:")
    if selected and cols[1].button(f"Delete {len(selected)} selected", icon=":material/delete:", key="runs_delete_button"):
        st.session_state[CONFIRM_DELETE_KEY] = list(selected)
    if len(selected) == 1 and cols[2].button("Re-run: open its settings in Train", icon=":material/replay:",
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


def resume(run_ids: list[str]) -> None:
    """Queue the runs again to go on from their checkpoints (a button callback)."""
    st.session_state[RESUME_REPORT_KEY] = runs_view.resume_report(*common.resume_runs(run_ids))


def failure_reasons(run_ids: list[str]) -> None:
    """Why each selected run failed or was interrupted, with what its training process printed last."""
    for run_id in run_ids:
        run = common.run_store().get(run_id)
        status, name = run.status(), runs_view.run_name(run)
        reason = runs_view.failure(name, status)
        if reason is None:
            continue
        st.error(reason)
        if status.get("stderr_tail"):
            with st.expander(f"What the training process of {name} printed"):
                st.code(status["stderr_tail"], language=None)


def run_layers(run_ids: list[str]) -> None:
    """The saved per-layer table of the one selected run (runs from before it was saved have none)."""
    if len(run_ids) != 1:
        return
    run = common.run_store().get(run_ids[0])
    rows = run.layer_table()
    if rows:
        layer_table.layers_expander(rows, title=f"Layers of {runs_view.run_name(run)}: output shape, "
                                                "parameters and MACs")


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
    runs = common.run_store().list()
    if not runs:
        common.no_runs_yet()
        return
    table = compare.runs_table([compare.run_row(run.describe(), run.config()) for run in runs])
    shown = filters(table)
    selected = selected_runs(shown)
    table_actions(shown, selected)
    failure_reasons(selected)
    run_layers(selected)
    st.divider()
    st.header("Compare")
    chosen = choose_runs(table, selected)
    if len(chosen) < 2:
        st.info("Pick at least two runs to compare (select rows in the table or use the box above).")
        return
    compare_view.comparison([common.run_store().get(r) for r in chosen])


main()
