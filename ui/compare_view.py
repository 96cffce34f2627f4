"""The comparison of 2-6 runs on Runs & Compare: curves, metrics, one common test split, the settings
that differ, confusion matrices, ROC and parallel coordinates. A component of pages/runs.py, not a page."""
import pandas as pd
import streamlit as st

from core.ml import common_split
from core.ml import metrics as metrics_lib
from core.present import charts, compare
from core.present import runs as runs_view
from core.store.run_folder import ACTIVE_STATES
from ui import common, train_live

COMMON_RESULTS_KEY = "compare_common_test_results"  # {selection key: result}, kept for the session
COMPARE_METRICS = ("test_accuracy", "test_macro_f1", "test_auc", "val_accuracy", "best_val_loss",
                   "peak_memory_mb", "images_per_sec", "wall_s")


def comparison(runs) -> None:
    labels = compare.unique_names([r.display_name() for r in runs])
    for run, label in zip(runs, labels):
        status = run.status()
        reason = runs_view.failure(label, status)
        if reason:
            st.error(reason)
            if status.get("traceback"):
                with st.expander(f"Traceback of {label}"):
                    st.code(status["traceback"])
    curves(runs, labels)
    test_set_warning(runs, labels)
    side_by_side_metrics(runs, labels)
    common_test_split(runs, labels)
    config_difference(runs, labels)
    confusion_matrices(runs, labels)
    roc_overlay(runs, labels)
    parallel_coordinates(runs, labels)


def curves(runs, labels) -> None:
    """The runs' curves overlaid (loss and accuracy at first; any curve, smoothed, on a log scale);
    refreshed every 2 s while one of the runs is training."""
    live = any(r.state() in ACTIVE_STATES for r in runs)

    @st.fragment(run_every=2 if live else None)
    def draw():
        histories = {label: run.history() for run, label in zip(runs, labels)}
        if not any(histories.values()):
            st.info("No finished epochs yet in these runs.")
            return
        batches = {label: run.first_epoch_batches() for run, label in zip(runs, labels)}
        train_live.curves(histories, batches, "runs_compare")

    st.subheader("Training curves")
    draw()


def test_set_warning(runs, labels) -> None:
    """Say plainly when the runs were not scored on the same test images."""
    differences = common_split.test_set_differences({label: run.config() for run, label in zip(runs, labels)})
    if differences:
        lines = "\n".join(f"- {line}" for line in common_split.describe_differences(differences))
        st.warning("**These runs were tested on different test sets (or saw them differently)**, so their "
                   "saved metrics below are not directly comparable:\n" + lines +
                   "\n\nUse **Score on one common test split** below for a fair comparison.",
                   icon=":material/warning:")


def side_by_side_metrics(runs, labels) -> None:
    st.subheader("Metrics")
    split = st.radio("Split", ("test", "val"), horizontal=True, key="runs_metrics_split")
    summaries = {label: run.summary() for run, label in zip(runs, labels)}
    for line in compare.never_predicted_warnings(summaries, split):
        st.warning(line, icon=":material/visibility_off:")
    frame = compare.metrics_side_by_side(summaries, split)
    st.dataframe(compare.as_text(frame, 4, whole_rows=("best_epoch", "seconds")))
    st.caption("decided at: each run's decision rule, at which its accuracy, balanced accuracy, macro-F1 and "
               "recalls were computed (the threshold chosen on its validation split, as on Evaluate and in its "
               "model card, or argmax); auc: disease vs normal where the classes have that view (else macro one-vs-rest); "
               "macro_ovr_auc: each class against the rest, averaged, so a class the model never "
               "finds pulls it down; recall: the share of each class that was found.")


def common_test_split(runs, labels) -> None:
    """Score the chosen runs on one common test split (the reference's unseen test patients)."""
    st.subheader("Score on one common test split")
    st.caption("Takes the test patients of a reference run, removes every patient that any of these "
               "runs trained or validated on, and scores each run's model on the remaining images at "
               "its own image size and colour mode (most likely class decides).")
    by_label = dict(zip(labels, runs))
    if st.session_state.get("runs_common_reference") not in labels:  # another selection of runs
        st.session_state.pop("runs_common_reference", None)
    reference = st.selectbox("Reference run (whose test patients are the starting point)", labels,
                             key="runs_common_reference")
    selection = runs_view.common_split_key(runs, by_label[reference])
    results = st.session_state.setdefault(COMMON_RESULTS_KEY, {})
    if st.button("Score these runs on one common test split", icon=":material/balance:",
                 key="runs_common_button"):
        results[selection] = score_common(by_label, reference)
    result = results.get(selection)
    if result is None:
        return
    if isinstance(result, str):
        st.warning(result)
        return
    st.success(f"Common test set: {result['test_set'].describe()}")
    table = pd.DataFrame(common_split.scores_table(result["scores"])).set_index("run")
    st.dataframe(compare.as_text(table, 3, whole_columns=("images", "patients")))
    for label, score in result["scores"].items():
        for note in metrics_lib.never_predicted_notes(score["metrics"]):
            st.warning(f"{label}: {note}", icon=":material/visibility_off:")
    st.caption("95% CI: bootstrap over patients (500 resamples). Runs with different tasks are scored "
               "against their own labels for the same images.")


def score_common(by_label: dict, reference: str):
    """The scores, or a message saying why the runs cannot be scored together."""
    bar = st.progress(0.0, text="Rebuilding the runs' splits…")
    try:
        return common_split.score_runs(by_label, reference, common.progress_bar(bar))
    except (ValueError, OSError) as exc:  # CommonSplitError, DataError, a missing dataset or model
        return f"Cannot score these runs on one common test split: {exc}"
    finally:
        bar.empty()


def config_difference(runs, labels) -> None:
    st.subheader("Settings that differ")
    diff = compare.config_diff({label: run.config() for run, label in zip(runs, labels)})
    if diff.empty:
        st.caption("These runs have identical settings (apart from their names).")
    else:
        st.dataframe(diff)


def confusion_matrices(runs, labels) -> None:
    st.subheader("Confusion matrices (test)")
    for col, run, label in zip(st.columns(len(runs)), runs, labels):
        test = run.summary().get("test") or {}
        with col:
            if test.get("confusion_matrix") is None:
                st.caption(f"{label}: no test results yet")
                continue
            names = run.summary().get("class_names") or []
            common.show_chart(charts.confusion_matrix_chart(test["confusion_matrix"], names, title=label))


def roc_overlay(runs, labels) -> None:
    st.subheader("ROC curves (test)")
    curves_by_run = compare.roc_curves({label: run.predictions("test") for run, label in zip(runs, labels)})
    if curves_by_run:
        common.show_chart(charts.roc_chart(curves_by_run, "ROC curves, test split (disease vs normal)"))
    else:
        st.caption("No ROC curves: the runs have no test predictions yet, or their classes have no "
                   "disease-vs-normal view.")


def parallel_coordinates(runs, labels) -> None:
    st.subheader("Settings against a metric")
    metric = st.selectbox("Metric", COMPARE_METRICS, key="runs_parallel_metric")
    values = {label: run.describe().get(metric) for run, label in zip(runs, labels)}
    frame = compare.parallel_coordinates_frame({label: run.config() for run, label in zip(runs, labels)}, values)
    if frame.empty or frame["axis"].nunique() < 2:
        st.caption("The runs share all settings: nothing to draw.")
        return
    common.show_chart(charts.parallel_coordinates_chart(frame, metric))
