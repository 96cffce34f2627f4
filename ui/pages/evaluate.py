"""Evaluate: one run on its validation or test split: headline numbers with 95% patient-bootstrap
intervals, confusion matrices whose cells open their images, per-class scores, ROC, precision-recall,
F1 against threshold (with a live threshold slider), the referral curve, calibration before and after
temperature scaling, the misclassified images, external validation on another labelled dataset, and
downloads of the model and its config. Research tool, not for clinical use."""
import json

import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.data.imaging import displayable
from core.ml import metrics as metrics_lib
from core.ml.decisions import decision_sentence
from core.present import charts, forms, review
from core.present import evaluation as evaluation_view
from ui import common, model_card_view

RUN_KEY = "eval_run"
LINKED_RUN_KEY = "evaluate_linked_run"  # the ?run= already followed (not a widget: no eval_ prefix)
GALLERY_SIZE = 12
GALLERY_COLUMNS = 6
CELL_KEY = "eval_cell"
CLICKED_KEY = "eval_cell_clicked"  # the last click applied, so a later keyboard choice is not undone


@st.cache_data(show_spinner=False, max_entries=32)
def curves(run_path: str, split: str, modified: float) -> dict:
    """Threshold-free curves of a run's saved predictions (`modified` refreshes the cache)."""
    from core.store.runs import Run
    predictions = Run(run_path).predictions(split)
    return metrics_lib.evaluate_predictions(predictions["probabilities"], predictions["labels"],
                                            predictions["class_names"])


@st.cache_data(show_spinner="Bootstrapping patients…", max_entries=32)
def intervals(run_path: str, split: str, threshold: float | None, modified: float) -> dict:
    """95% patient-bootstrap intervals of the headline numbers at `threshold`."""
    from core.store.runs import Run
    p = Run(run_path).predictions(split)
    return metrics_lib.bootstrap_intervals(p["probabilities"], p["labels"], p["class_names"], p["patient_ids"],
                                           threshold)


@st.cache_data(show_spinner=False, max_entries=32)
def calibration_report(run_path: str, split: str, modified: float) -> dict | None:
    """Temperature scaling fitted on validation, applied to `split`; None without validation predictions."""
    from core.store.runs import Run
    run = Run(run_path)
    val, shown = run.predictions("val"), run.predictions(split)
    return None if val is None else metrics_lib.temperature_report(val, shown)


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
    small = metrics_lib.small_set_warning(bootstrap)
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
    cell_images(run, predictions, metrics, threshold, evaluation_view.clicked_cell(event.selection))
    left, right = st.columns(2)  # room for all five columns of the table
    per_class = pd.DataFrame(metrics["per_class"]).T
    left.markdown("**Per-class scores**")
    left.dataframe(per_class.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}",
                                           "support": "{:.0f}", "predicted": "{:.0f}"}))
    common.show_chart(charts.per_class_chart(metrics["per_class"]), right)


def cell_images(run, predictions: dict, metrics: dict, threshold: float | None, clicked) -> None:
    """The images behind the chosen confusion-matrix cell: clicked on the chart, or picked by keyboard."""
    choices = evaluation_view.cell_choices(metrics["confusion_matrix"], predictions["class_names"])
    by_cell = {cell: label for label, cell in choices.items()}
    if clicked and clicked != st.session_state.get(CLICKED_KEY) and clicked in by_cell:
        st.session_state[CELL_KEY] = by_cell[clicked]
    st.session_state[CLICKED_KEY] = clicked
    if st.session_state.get(CELL_KEY) not in choices:
        st.session_state.pop(CELL_KEY, None)
    label = st.selectbox("Images of a confusion-matrix cell (or click a cell above)", list(choices), index=None,
                         key=CELL_KEY, placeholder="Choose a cell")
    if label is None:
        return
    true, predicted = choices[label]
    cases = review.cell_cases(predictions, true, predicted, threshold, GALLERY_SIZE)
    st.caption(f"{label}: the {len(cases)} most confident shown.")
    image_grid(run, predictions, cases, threshold, "eval_cell_gradcam")


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


def gallery(run, predictions: dict, threshold: float | None) -> None:
    st.subheader("Misclassified images")
    wrong = review.misclassified(predictions, threshold, GALLERY_SIZE)
    if not wrong:
        st.success("No misclassified images in this split at this threshold.")
        return
    st.caption(f"The {len(wrong)} most confident mistakes.")
    image_grid(run, predictions, wrong, threshold, "eval_gradcam")


def image_grid(run, predictions: dict, items: list[dict], threshold: float | None, overlay_key: str) -> None:
    """The items' images (model input) with their decision, and Grad-CAM overlays on request."""
    try:
        with st.spinner("Loading the run's images…"):
            dataset = common.run_dataset(json.dumps(run.config(), sort_keys=True))
    except data_lib.DataError as exc:
        st.warning(f"The run's dataset cannot be loaded any more, so no images: {exc}")
        return
    images = review.images_by_file(dataset.files, dataset.images, [w["file"] for w in items])
    show_overlay = run.has_model() and st.checkbox("Show Grad-CAM overlays", key=overlay_key)
    reasons = decision_reasons(predictions, threshold)
    cols = st.columns(GALLERY_COLUMNS)
    for i, item in enumerate(items):
        if item["file"] not in images:
            continue
        image = displayable(images[item["file"]])
        caption = f"true {item['true']} → predicted {item['predicted']} · {reasons[item['file']]}"
        if show_overlay:
            explained = review.explanation_overlay(run, item["file"], image)
            image = image if explained.image is None else explained.image
            caption += f" · {explained.note}" if explained.note else ""
        cols[i % GALLERY_COLUMNS].image(image, caption=caption, width="stretch")


def decision_reasons(predictions: dict, threshold: float | None) -> dict[str, str]:
    """File -> why it got its class: disease score against the threshold when one decides,
    else the predicted class's probability."""
    notes = metrics_lib.decision_notes(predictions["probabilities"], predictions["class_names"], threshold)
    return dict(zip((str(f) for f in predictions["files"]), notes))


def referral(predictions: dict, threshold: float | None) -> None:
    st.subheader("Referral: accuracy vs coverage")
    curve = metrics_lib.referral_curve(predictions["probabilities"], predictions["labels"],
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


def external_source() -> str | None:
    """A labelled folder or zip: a server path, or an uploaded zip saved like the Dataset page's."""
    how = st.radio("External dataset", ("Path on the server", "Upload a zip"), horizontal=True, key="eval_ext_how")
    if how == "Upload a zip":
        upload = st.file_uploader("A .zip of class folders (the run's classes)", type=["zip"], key="eval_ext_upload")
        return None if upload is None else str(forms.save_upload(upload.getvalue(), upload.name))
    path = st.text_input("Folder or .zip of labelled X-rays on the server", key="eval_ext_path",
                         placeholder="/data/hospital_b", help="one sub-folder per class, the run's class names")
    return path.strip() or None


def external_validation(run, threshold: float | None) -> None:
    st.subheader("External validation")
    st.caption("The run's model on another labelled dataset: the same metrics and intervals, and how many "
               "images the out-of-distribution check flags, beside the internal test split.")
    if not run.has_model():
        st.caption("This run has no saved model, so it cannot predict another dataset.")
        return
    try:
        source = external_source()
    except data_lib.DataError as exc:
        st.error(str(exc))
        return
    if st.button("Evaluate on this dataset", disabled=source is None, icon=":material/fact_check:",
                 key="eval_ext_button"):
        run_external(run, source)
    past = run.external_results()
    if past:
        labels = [evaluation_view.past_result_label(r) for r in past]
        chosen = st.selectbox("Results", range(len(past)), format_func=labels.__getitem__, key="eval_ext_result")
        show_external(past[chosen], threshold)


def run_external(run, source: str) -> None:
    from core.ml.external import evaluate_external
    bar = st.progress(0.0, text="Starting…")
    try:
        evaluate_external(run, source, progress=lambda message, share: bar.progress(min(share, 1.0), text=message))
    except (data_lib.DataError, FileNotFoundError, ValueError) as exc:
        bar.empty()
        st.error(str(exc))
        return
    bar.empty()
    st.session_state["eval_ext_result"] = 0  # the newest result


def show_external(result: dict, slider: float | None) -> None:
    """A saved external result beside the internal test split; `slider` is the page's threshold,
    which the saved result (at the run's own threshold) does not follow: the caption says so."""
    st.markdown(evaluation_view.external_sentence(result))
    rows = evaluation_view.side_by_side(result)
    st.dataframe(pd.DataFrame(rows).set_index("metric"), width="stretch", height="content")  # every row in view
    st.caption(evaluation_view.external_threshold_note(result, slider))
    small = metrics_lib.small_set_warning(result["intervals"])
    if small:
        st.warning(small, icon=":material/warning:")
    if result.get("ood_error"):
        st.caption(result["ood_error"])
    seen, any_seen = evaluation_view.seen_sentence(result)
    if any_seen:
        st.warning(seen, icon=":material/content_copy:")
    elif seen:
        st.caption(seen)
    shift, shifted = evaluation_view.shift_sentences(result)
    if shifted:
        st.warning("These images differ from the training images in brightness or contrast, as another scanner "
                   "or protocol would make them. Check the threshold on this site's own labelled cases before "
                   f"relying on the numbers above.\n\n{shift}", icon=":material/compare:")
    elif shift or result.get("shift_error"):
        st.caption(shift or result["shift_error"])
    st.caption(f"Source: `{result['source']}` · {result['n_images']} images of {result['n_patients']} patients · "
               "values with their 95% patient-bootstrap intervals.")


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
    confusion_and_classes(run, predictions, metrics, threshold)
    curve_charts(results, threshold)
    referral(predictions, threshold)
    calibration_section(run, split)
    gallery(run, predictions, threshold)
    external_validation(run, threshold)
    st.subheader("Model card and export")
    model_card_view.model_card_and_export(run)


main()
