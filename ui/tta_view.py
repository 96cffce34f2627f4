"""Test-time augmentation on the Evaluate page: the run's split scored once through core.ml.tta's
views (saved in the run folder), its headline numbers beside the plain ones at the page's threshold,
and what it cost. A component of pages/evaluate.py, not a page."""
import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.ml import intervals as intervals_lib
from core.ml import tta
from core.present import tta as tta_view
from ui import common

SPLIT_LABELS = {"test": "test", "val": "validation"}


@st.cache_data(show_spinner="Bootstrapping patients…", max_entries=16)
def tta_intervals(run_path: str, split: str, threshold: float | None, modified: float) -> dict:
    """95% patient-bootstrap intervals of the TTA probabilities at `threshold` (`modified`: the saved
    file's time, which refreshes the cache)."""
    from core.store.run_folder import Run
    run = Run(run_path)
    saved, predictions = tta.load_saved(run, split), run.predictions(split)
    return intervals_lib.bootstrap_intervals(saved["probabilities"], predictions["labels"],
                                             predictions["class_names"], predictions["patient_ids"], threshold)


def section(run, split: str, threshold: float | None, plain_bootstrap: dict) -> None:
    """The comparison when the split was scored with TTA for the run's current model; else the offer."""
    st.subheader("Test-time augmentation")
    saved = tta.load_saved(run, split)
    if saved is None:
        if not run.has_model():
            st.caption("This run has no saved model, so it cannot predict other views of its images.")
            return
        st.caption(tta_view.offer(SPLIT_LABELS[split]))
        if not st.button(f"Score the {SPLIT_LABELS[split]} split with test-time augmentation", key="eval_tta_button",
                         icon=":material/burst_mode:"):
            return
        saved = score(run, split)
        if saved is None:
            return
    with_tta = tta_intervals(str(run.path), split, threshold, tta.saved_path(run, split).stat().st_mtime)
    rows = tta_view.comparison_rows(plain_bootstrap, with_tta, saved, run.predictions(split)["class_names"])
    st.dataframe(pd.DataFrame(rows).set_index("metric"), width="stretch", height="content")
    st.caption(tta_view.caption(saved, threshold))


def score(run, split: str) -> dict | None:
    """Predict the split through the views with a progress bar; None (and the reason shown) on failure."""
    bar = st.progress(0.0, text="Loading the model and the images…")
    try:
        saved = tta.score_split(run, split, progress=common.progress_bar(bar))
    except (data_lib.DataError, FileNotFoundError, ValueError) as exc:
        bar.empty()
        st.error(f"Test-time augmentation could not run: {exc}")
        return None
    bar.empty()
    return saved
