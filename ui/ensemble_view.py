"""Ensembles on the Evaluate page: this run averaged with other runs that scored the same images
(core.ml.ensemble), its headline numbers beside the plain ones at the page's threshold, with the cost.
A component of pages/evaluate.py, not a page."""
import pandas as pd
import streamlit as st

from core.ml import ensemble as ensemble_lib
from core.ml import intervals as intervals_lib
from core.present import ensemble as ensemble_view

SPLIT_LABELS = {"test": "test", "val": "validation"}


def section(store, run, split: str, threshold: float | None, plain_bootstrap: dict) -> None:
    """A choice of runs to average with this one, then the comparison."""
    st.subheader("Ensemble")
    partners = ensemble_lib.partners(store, run, split)
    if not partners:
        st.caption(ensemble_view.no_partners(SPLIT_LABELS[split]))
        return
    names = {other.id: f"{other.display_name()} ({other.id})" for other in partners}
    chosen = st.multiselect(f"Average this run with other runs that scored the same {SPLIT_LABELS[split]} images",
                            list(names), format_func=names.get, key=f"eval_ensemble_{run.id}_{split}",
                            placeholder="choose runs")
    if not chosen:
        return
    members = [run, *(other for other in partners if other.id in chosen)]
    ensemble = ensemble_lib.average(members, split)
    averaged = intervals(tuple(str(member.path) for member in members), split, threshold,
                         tuple(member.predictions_path(split).stat().st_mtime for member in members))
    rows = ensemble_view.comparison_rows(plain_bootstrap, averaged, ensemble, run.wall_seconds())
    st.dataframe(pd.DataFrame(rows).set_index("metric"), width="stretch", height="content")
    st.caption(ensemble_view.caption(ensemble, threshold))


@st.cache_data(show_spinner="Bootstrapping patients…", max_entries=16)
def intervals(run_paths: tuple, split: str, threshold: float | None, modified: tuple) -> dict:
    """95% patient-bootstrap intervals of the averaged probabilities at `threshold` (`modified`: the
    members' prediction files' times, which refresh the cache)."""
    from core.store.run_folder import Run
    ensemble = ensemble_lib.average([Run(path) for path in run_paths], split)
    return intervals_lib.bootstrap_intervals(ensemble.probabilities, ensemble.labels, ensemble.class_names,
                                             ensemble.patient_ids, threshold)
