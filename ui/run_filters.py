"""The Runs page's filters: state, architecture, sweep, name, tags, starred, and a query over any
setting or metric (kept with the forms: session_keys.RUNS_FILTER_KEYS). A component of
pages/runs.py, not a page."""
import streamlit as st

from core.present import compare, run_query
from core.present import runs as runs_view
from core.store.run_folder import STATES

QUERY_HELP = (f"Conditions `column operator value` joined by `and`, e.g. `{run_query.QUERY_EXAMPLE}`. Operators: "
              f"{', '.join(run_query.QUERY_OPERATORS)}. Columns: any column of the table (e.g. `test_auc`, `arch`, "
              "`starred`, `tags`) and any setting (e.g. `optimizer`, `augmentation.zoom`, `arch_params.width`). "
              "Quote text with spaces; empty cells never match.")


def forget_stale_filters(table, sweep_ids: list[str]) -> None:
    """Drop remembered choices the table no longer offers (e.g. after runs were deleted)."""
    state = st.session_state
    for key, options in (("runs_filter_archs", set(table["arch"].dropna())),
                         ("runs_filter_tags", set(compare.all_tags(table)))):
        if key in state:
            state[key] = runs_view.known_choices(state[key], options)
    if state.get("runs_filter_sweep") not in ("", None, *sweep_ids):
        state["runs_filter_sweep"] = ""


def filters(table, configs: dict, sweep_names: dict):
    sweep_ids = sorted(set(table["sweep_id"].dropna()), reverse=True)
    forget_stale_filters(table, sweep_ids)
    cols = st.columns([2, 2, 3, 3])
    states = cols[0].multiselect("State", STATES, key="runs_filter_states", placeholder="all states")
    archs = cols[1].multiselect("Architecture", sorted(table["arch"].dropna().unique()),
                                key="runs_filter_archs", placeholder="all architectures")
    sweep = cols[2].selectbox("Sweep", ["", *sweep_ids], key="runs_filter_sweep",
                              format_func=lambda s: sweep_names.get(s, s) if s else "all runs")
    text = cols[3].text_input("Name contains", key="runs_filter_text")
    cols = st.columns([3, 1.3, 6], vertical_alignment="bottom")
    tags = cols[0].multiselect("Tags", compare.all_tags(table), key="runs_filter_tags", placeholder="any tags")
    starred = cols[1].checkbox("Starred only", key="runs_filter_starred")
    query = cols[2].text_input("Filter by any setting or metric", key="runs_filter_query", help=QUERY_HELP,
                               placeholder=run_query.QUERY_EXAMPLE)
    shown = compare.filter_runs(table, states, archs, text, tags=tags, starred=starred, sweep=sweep)
    try:
        return run_query.query_runs(shown, query, run_query.query_frame(shown, configs))
    except run_query.QueryError as exc:
        st.error(f"Filter not applied: {exc}", icon=":material/filter_alt_off:")
        return shown
