"""The Sweeps page's results: a sweep's progress, ablation table and chart (live while it runs), its
runs (stop them, compare some), its export, and importing runs or sweeps. A component of
pages/sweeps.py, not a page."""
import streamlit as st

from core.present import sweeps as sweep_view
from core.store.portable import ImportRefused
from core.store.sweeps import list_sweeps, sweep_results
from ui import common

VIEW_KEY = "sweep_view_id"
COMPARE_KEY = "runs_compare_ids"  # what pages/runs.py reads as the runs to compare
MAX_COMPARE = 6


def view(store) -> None:
    sweeps = list_sweeps(store)
    if not sweeps:
        st.info("No sweeps yet: set one up above and press **Launch sweep**, or import a sweep zip.",
                icon=":material/info:")
        return
    record = sweep_picker(sweeps)
    st.caption(sweep_view.sweep_caption(record))
    common.init_widget("sweep_metric", "test_accuracy")
    metric = st.selectbox("Metric", sweep_view.SWEEP_METRICS, key="sweep_metric",
                          format_func=sweep_view.METRIC_TITLES.get,
                          help="A score, or what the runs used: peak memory of the training process, "
                               "training speed or wall time (e.g. batch size against memory and speed).")
    active = sweep_view.is_active(store, record)
    st.fragment(results, run_every=2.0 if active else None)(store, record, metric, active)
    if active:
        stop_section(store, record)
    compare_section(store, record)
    export_section(store, record, active)


def sweep_picker(sweeps: list[dict]) -> dict:
    records = {record["id"]: record for record in sweeps}
    if st.session_state.get(VIEW_KEY) not in records:
        st.session_state[VIEW_KEY] = sweeps[0]["id"]
    sweep_id = st.selectbox("Sweep", list(records), key=VIEW_KEY,
                            format_func=lambda s: sweep_view.sweep_label(records[s]))
    return records[sweep_id]


def results(store, record: dict, metric: str, live: bool) -> None:
    """Progress, the table and the chart; re-drawn every 2 s while runs of the sweep are active."""
    settings = [axis["setting"] for axis in record["axes"]]
    frame = sweep_view.results_frame(sweep_results(store, record["id"]), settings)
    counts = sweep_view.progress_counts(frame)
    if live and not counts["active"]:
        st.rerun()  # the sweep just ended: stop the timer and refresh the whole page
    cols = st.columns(4)
    cols[0].metric("Runs", counts["runs"])
    cols[1].metric("Done", counts["done"])
    cols[2].metric("Queued or running", counts["active"])
    cols[3].metric("Failed or cancelled", counts["stopped"])
    ended = counts["done"] + counts["stopped"]
    st.progress(ended / max(1, counts["runs"]), text=f"{ended} of {counts['runs']} runs ended")
    st.dataframe(sweep_view.display_frame(frame, settings, halving=sweep_view.halving_on(record)),
                 hide_index=True, width="stretch", key="sweep_results_table")
    halving = sweep_view.halving_summary(record, frame)
    if halving:
        st.caption(halving)
    if frame[f"{metric}_mean"].notna().any():
        st.altair_chart(sweep_view.sweep_chart(frame, record["axes"], metric), width="stretch")
    elif counts["done"]:
        st.caption(f"No finished run of this sweep recorded {sweep_view.METRIC_TITLES[metric].lower()} "
                   "(runs from before it was measured): pick another metric.")
    else:
        st.caption("The chart appears when the first run of the sweep finishes.")
    st.download_button("Results table (CSV)", frame.to_csv(index=False), file_name=f"{record['id']}.csv",
                       mime="text/csv", icon=":material/download:", key="sweep_results_csv_button")


def stop_section(store, record: dict) -> None:
    """Cancel the sweep's queued runs and stop its running one after the current batch."""
    if st.button("Stop this sweep", icon=":material/stop_circle:", key="sweep_stop_button"):
        stopped = sweep_view.stop_sweep(store, record, common.job_manager().cancel)
        if stopped:
            st.toast(f"Stopping {len(stopped)} run(s) of the sweep…")
        else:
            st.warning("None of its runs is queued or running any more.")


def compare_section(store, record: dict) -> None:
    """The sweep's runs, and a way into Runs & Compare with some of them picked."""
    members = sweep_view.member_table(store, record)
    with st.expander(f"The {len(members)} runs of this sweep"):
        st.dataframe(members, hide_index=True, key="sweep_members_table")
    labels = sweep_view.compare_labels(members)
    key, offered_key = f"sweep_compare_{record['id']}", f"sweep_compare_{record['id']}_offered"
    st.session_state[key], st.session_state[offered_key] = sweep_view.compare_pick(
        st.session_state.get(key), st.session_state.get(offered_key),
        sweep_view.compare_offer(members, MAX_COMPARE), labels)
    picked = st.multiselect(f"Runs to compare (2 to {MAX_COMPARE})", list(labels), key=key,
                            format_func=lambda r: labels.get(r, r), max_selections=MAX_COMPARE)
    if st.button("Compare them on Runs & Compare", icon=":material/leaderboard:", key="sweep_compare_button",
                 disabled=len(picked) < 2):
        st.session_state[COMPARE_KEY] = list(picked)
        st.switch_page(common.PAGE_PATHS["runs"])


def export_section(store, record: dict, active: bool) -> None:
    st.download_button("Export the whole sweep (zip)", lambda: sweep_view.sweep_zip_bytes(store, record["id"]),
                       file_name=f"{record['id']}.zip", mime="application/zip", icon=":material/archive:",
                       key="sweep_export_button",
                       help="Every run (settings, metrics, predictions, model) and the sweep itself, "
                            "to import into another CXR Lab.")
    if active:
        st.caption("Runs are still training: the zip holds what has finished so far.")


def import_section(store) -> None:
    upload = st.file_uploader("A zip exported from CXR Lab (runs or a whole sweep)", type=["zip"],
                              key="sweep_import_upload_zip")
    if upload is None or not st.button("Import", icon=":material/upload:", key="sweep_import_button"):
        return
    try:
        with st.spinner("Checking every file of the zip…"):
            result = sweep_view.import_zip_bytes(store, upload.getvalue())
    except ImportRefused as exc:
        st.error(f"{upload.name} was not imported: {exc}")
        return
    except OSError as exc:
        st.error(f"{upload.name} could not be read: {exc}")
        return
    if result.sweep_id:
        st.session_state[VIEW_KEY] = result.sweep_id
    st.success(f"{upload.name}: {sweep_view.import_summary(result)}")
