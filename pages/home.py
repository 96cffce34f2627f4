"""Home: what CXR Lab is, the dataset in use, the job queue and the latest runs."""
import streamlit as st

from core.present import forms
from pages import common

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


def queue(store) -> None:
    """Every queued or running run of the store, from this dashboard or any other process; the
    progress is what the run's training process writes to its folder."""
    st.subheader("Job queue")
    active = common.active_runs(store)
    if not active:
        st.caption("Nothing running or queued. Launch a run on the Train page.")
        return
    manager = common.job_manager()
    for run in active:
        progress = manager.progress(run.id)
        state = progress.get("state") or run.state()
        epoch, epochs = progress.get("epoch") or 0, progress.get("epochs") or 0
        label = f"**{common.run_name(run)}** — {state}{state_detail(run, state, manager.stop_requested(run.id))}"
        if state == "running" and epochs:
            st.progress(min(1.0, (epoch + 1) / epochs), text=f"{label}, epoch {epoch + 1} of {epochs}")
        else:
            st.markdown(label)


def state_detail(run, state: str, stopping: bool) -> str:
    if stopping:
        return " (stopping after the current batch)"
    if state == "queued" and run.status().get("resume"):
        return f" (to resume from epoch {run.checkpoint_epoch()})"
    return ""


def recent_runs(store) -> None:
    st.subheader("Recent runs")
    runs = store.list()[:RECENT_RUNS]
    if not runs:
        common.no_runs_yet()
        return
    from core.present import (
        compare,  # pandas: imported after the title and the queue are drawn
    )
    table = compare.runs_table([compare.run_row(r.describe(), r.config()) for r in runs])
    st.dataframe(table[["name", "state", "arch", "image_size", "epochs", "val_accuracy", "test_accuracy",
                        "test_macro_f1", "test_auc", "duration_s", "created"]],
                 hide_index=True, column_config=RUN_COLUMNS)


RUN_COLUMNS = {
    "val_accuracy": st.column_config.NumberColumn("val accuracy", format="%.3f"),
    "test_accuracy": st.column_config.NumberColumn("test accuracy", format="%.3f"),
    "test_macro_f1": st.column_config.NumberColumn("test macro-F1", format="%.3f"),
    "test_auc": st.column_config.NumberColumn("test AUC", format="%.3f"),
    "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


def main() -> None:
    intro()
    store = common.run_store()
    has_active = bool(common.active_runs(store))

    # Refresh the queue every 2 s only while something is queued or running.
    @st.fragment(run_every=2 if has_active else None)
    def live_queue():
        queue(store)

    live_queue()
    recent_runs(store)


main()
