"""Evaluate: one run on its validation or test split: headline numbers with 95% patient-bootstrap
intervals (and beside them with test-time augmentation, ui/tta_view.py, or as an ensemble with runs that
scored the same images, ui/ensemble_view.py), confusion matrices whose cells
open their images, per-class scores, ROC, precision-recall, F1 against threshold (with a live threshold
slider), the referral curve, calibration before and after temperature scaling, the misclassified images,
external validation on another labelled dataset, and downloads of the model and its config (the images
are ui/image_review.py, external validation ui/external_validation.py). Research tool, not for clinical
use."""
import pandas as pd
import streamlit as st

from core.ml import metrics as metrics_lib
from core.ml import calibration as calibration_lib
from core.ml import curves as curves_lib
from core.ml import intervals as intervals_lib
from core.ml.decisions import decision_sentence
from core.present import charts
from core.present import evaluation as evaluation_view
from ui import common, ensemble_view, external_validation, image_review, model_card_view, tta_view, weight_view

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

RUN_KEY = "eval_run"
LINKED_RUN_KEY = "evaluate_linked_run"  # the ?run= already followed (not a widget: no eval_ prefix)


@st.cache_data(show_spinner=False, max_entries=32)
def curves(run_path: str, split: str, modified: float) -> dict:
    """Threshold-free curves of a run's saved predictions (`modified` refreshes the cache)."""
    from core.store.run_folder import Run
    predictions = Run(run_path).predictions(split)
    return curves_lib.evaluate_predictions(predictions["probabilities"], predictions["labels"],
                                            predictions["class_names"])


@st.cache_data(show_spinner="Bootstrapping patients…", max_entries=32)
def intervals(run_path: str, split: str, threshold: float | None, modified: float) -> dict:
    """95% patient-bootstrap intervals of the headline numbers at `threshold`."""
    from core.store.run_folder import Run
    p = Run(run_path).predictions(split)
    return intervals_lib.bootstrap_intervals(p["probabilities"], p["labels"], p["class_names"], p["patient_ids"],
                                           threshold)


@st.cache_data(show_spinner=False, max_entries=32)
def calibration_report(run_path: str, split: str, modified: float) -> dict | None:
    """Temperature scaling fitted on validation, applied to `split`; None without validation predictions."""
    from core.store.run_folder import Run
    run = Run(run_path)
    val, shown = run.predictions("val"), run.predictions(split)
    return None if val is None else calibration_lib.temperature_report(val, shown)


def choose_run(store):
    runs = [r for r in store.list() if r.predictions_path("test").exists() or r.predictions_path("val").exists()]
    if not runs:
        return None
    ids = [r.id for r in runs]
    linked = common.follow_run_link(runs, LINKED_RUN_KEY)
    if linked is not None:
        st.session_state[RUN_KEY] = linked.id
    if st.session_state.get(RUN_KEY) not in ids:
        st.session_state[RUN_KEY] = ids[0]
    names = {r.id: r.display_name() for r in runs}
    run_id = st.selectbox("Run", ids, key=RUN_KEY, format_func=lambda r: f"{names[r]} ({r})")
    common.link_to_run(run_id, LINKED_RUN_KEY)
    return store.get(run_id)


def threshold_input(run, split: str, f1) -> float | None:
    """A threshold slider for datasets with a disease-vs-normal view; None (argmax) otherwise."""
    if f1 is None:
        st.caption("This dataset has no disease-vs-normal view: predictions are the most likely class.")
        return None
    best_on_val = run.summary().get("threshold")
    key = f"eval_threshold_{run.id}_{split}"
    common.init_widget(key, float(best_on_val if best_on_val is not None else 0.5))
    return st.slider("Decision threshold (disease score ≥ threshold → disease)", 0.0, 1.0, step=0.01, key=key,
                     help=f"Starts at the best-F1 threshold on the validation split"
                          f" ({best_on_val:.2f})." if best_on_val is not None else None)


def headline(metrics: dict, bootstrap: dict, class_names, disease_view: bool, run_threshold) -> None:
    """The decision rule, the headline numbers with their 95% intervals (each thresholded one named
    with its threshold), then every class's recall: a disease-vs-normal AUC can look excellent while
    one class is never predicted."""
    st.caption(decision_sentence(bootstrap["threshold"], run_threshold))
    found = bootstrap["intervals"]
    for row in evaluation_view.headline_rows(class_names, disease_view, bootstrap["threshold"]):
        for col, (label, key) in zip(st.columns(4), row):
            col.metric(label, evaluation_view.number((found.get(key) or {}).get("value")),
                       help=evaluation_view.interval_text(found.get(key)))
            col.caption(evaluation_view.interval_text(found.get(key)))
    st.caption(evaluation_view.intervals_caption(bootstrap))
    small = intervals_lib.small_set_warning(bootstrap)
    if small:
        st.warning(small, icon=":material/warning:")
    for note in metrics_lib.never_predicted_notes(metrics):
        st.warning(note, icon=":material/visibility_off:")


def confusion_and_classes(run, predictions: dict, metrics: dict, threshold: float | None) -> None:
    class_names = predictions["class_names"]
    left, right = st.columns(2)
    clickable = evaluation_view.confusion_selection_chart(metrics["confusion_matrix"], class_names)
    event = left.altair_chart(clickable, on_select="rerun", key="eval_confusion_table", width="stretch",
                              height=charts.display_height(clickable))
    common.show_chart(charts.confusion_matrix_chart(metrics["confusion_matrix_normalized"], class_names,
                                                     normalized=True), right)
    image_review.cell_images(run, predictions, metrics, threshold, evaluation_view.clicked_cell(event.selection))
    left, right = st.columns(2)  # room for all five columns of the table
    per_class = pd.DataFrame(metrics["per_class"]).T
    left.markdown("**Per-class scores**")
    left.dataframe(per_class.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}",
                                           "support": "{:.0f}", "predicted": "{:.0f}"}))
    common.show_chart(charts.per_class_chart(metrics["per_class"]), right)


def curve_charts(results: dict, threshold: float | None) -> None:
    left, right = st.columns(2)
    with left:
        if results["roc"]:
            common.show_chart(charts.roc_chart({"disease vs normal": results["roc"]}))
        elif results["roc_per_class"]:
            common.show_chart(charts.roc_chart(results["roc_per_class"], "ROC curves, one class vs the rest"))
        else:
            st.caption("No ROC curve: this split has a single class.")
    with right:
        if results["pr"]:
            common.show_chart(charts.pr_chart(results["pr"]))
        else:
            st.caption("No precision-recall curve for this dataset.")
    left, right = st.columns(2)
    with left:
        if results["f1_threshold"]:
            common.show_chart(charts.f1_threshold_chart(results["f1_threshold"], threshold))
    with right:
        if results["calibration"]:
            common.show_chart(charts.calibration_chart(results["calibration"]))


def referral(predictions: dict, threshold: float | None) -> None:
    st.subheader("Referral: accuracy vs coverage")
    curve = curves_lib.referral_curve(predictions["probabilities"], predictions["labels"],
                                       predictions["class_names"], threshold)
    st.markdown(evaluation_view.referral_sentence(curve))
    st.caption(f"The model decides the cases it is surest of ({curve['sureness']}) and refers the rest.")
    common.show_chart(evaluation_view.referral_chart(curve))


def calibration_section(run, split: str) -> None:
    st.subheader("Calibration: temperature scaling")
    report = calibration_report(str(run.path), split, run.predictions_path(split).stat().st_mtime)
    if report is None:
        st.caption("No validation predictions to fit a temperature on.")
        return
    st.markdown(evaluation_view.temperature_sentence(report))
    left, right = st.columns(2)
    common.show_chart(evaluation_view.reliability_chart(report), left)
    split_label = {"test": "test", "val": "validation"}[split]
    right.dataframe(pd.DataFrame(evaluation_view.calibration_rows(report, split_label)).set_index("predictions")
                    .style.format("{:.4f}"))
    right.caption(evaluation_view.CALIBRATION_LEGEND)


def downloads(run) -> None:
    cols = st.columns([2, 2, 3])
    cols[1].download_button("Download config", run.config_path.read_bytes(), file_name=f"{run.id}_config.json",
                            mime="application/json", icon=":material/download:")
    if run.has_model():
        cols[0].download_button("Download model (.keras)", run.model_path.read_bytes(),
                                file_name=f"{run.id}.keras", mime="application/octet-stream", icon=":material/download:")
    else:
        cols[0].caption("No saved model.")


def main() -> None:
    st.title("Evaluate")
    st.caption(evaluation_view.CLINICAL_NOTE)
    store = common.run_store()
    run = choose_run(store)
    if run is None:
        common.no_runs_yet("No finished runs to evaluate yet: go to **Train** and launch one.")
        return
    splits = [s for s in ("test", "val") if run.predictions_path(s).exists()]
    split = st.radio("Split", splits, horizontal=True, key="eval_split",
                     format_func={"test": "test", "val": "validation"}.get)
    predictions = run.predictions(split)
    results = curves(str(run.path), split, run.predictions_path(split).stat().st_mtime)
    downloads(run)
    threshold = threshold_input(run, split, results["f1_threshold"])
    metrics = metrics_lib.classification_metrics(predictions["probabilities"], predictions["labels"],
                                                 predictions["class_names"], threshold)
    bootstrap = intervals(str(run.path), split, threshold, run.predictions_path(split).stat().st_mtime)
    headline(metrics, bootstrap, predictions["class_names"], results["f1_threshold"] is not None,
             run.summary().get("threshold"))
    tta_view.section(run, split, threshold, bootstrap)
    ensemble_view.section(store, run, split, threshold, bootstrap)
    confusion_and_classes(run, predictions, metrics, threshold)
    curve_charts(results, threshold)
    referral(predictions, threshold)
    calibration_section(run, split)
    image_review.gallery(run, predictions, threshold)
    weight_view.weights_section(run)
    external_validation.external_validation(run, threshold)
    st.subheader("Model card and export")
    model_card_view.model_card_and_export(run)


main()
