"""Home: what CXR Lab is, the dataset in use, the job queue and the latest runs."""
import streamlit as st

from core.present import estimate, forms
from core.present import runs as runs_view
from ui import common

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

RECENT_RUNS = 8


def intro() -> None:
    st.title("CXR Lab")
    st.markdown(
        "Train and compare image classifiers on chest X-rays (or your own images) without writing "
        "Keras: pick a dataset, set up a run, watch it train live, and compare runs side by side. "
        "Every run is saved to disk, so nothing is lost when you close the tab.")
    st.warning("Research tool, not for clinical use: results must not guide the care of any patient.",
               icon=":material/warning:")
    st.markdown(f"**Dataset in use:** {forms.dataset_label(common.dataset_settings())}")
    cols = st.columns(4)
    for col, key in zip(cols, ("dataset", "train", "runs", "evaluate")):
        with col:
            st.page_link(common.PAGE_PATHS[key], label=f"Go to {key.title()}")


def queue(store, past: list) -> None:
    """Every queued or running run of the store, from this dashboard or any other process, with the
    time left of each; the progress is what the run's training process writes to its folder. `past`:
    the finished runs the time left is estimated from (estimate.past_runs)."""
    st.subheader("Job queue")
    active = runs_view.active_runs(store)
    if not active:
        st.caption("Nothing running or queued. Launch a run on the Train page.")
        return
    manager = common.job_manager()
    progress = {run.id: manager.progress(run.id) for run in active}
    ends = runs_view.queue_times(active, progress, past, slots=manager.max_concurrent)
    for run in active:
        text, share = runs_view.queue_entry(run, progress[run.id], manager.stop_requested(run.id))
        text += f" · {runs_view.time_left_text(ends[run.id])}"
        if share is None:
            st.markdown(text)
        else:
            st.progress(share, text=text)
    st.caption(runs_view.queue_summary(ends))


def recent_runs(store) -> None:
    st.subheader("Recent runs")
    runs = store.list()[:RECENT_RUNS]
    if not runs:
        common.no_runs_yet()
        return
    from core.present import (
        compare,  # pandas: imported after the title and the queue are drawn
    )
    from ui import tables
    tables.recent_runs_table(compare.runs_table([compare.run_row(r.describe(), r.config()) for r in runs]))


def main() -> None:
    intro()
    store = common.run_store()
    has_active = bool(runs_view.active_runs(store))
    past = estimate.past_runs(store) if has_active else []  # once a page run, not every refresh

    # Refresh the queue every 2 s only while something is queued or running.
    @st.fragment(run_every=2 if has_active else None)
    def live_queue():
        queue(store, past)

    live_queue()
    recent_runs(store)


main()
