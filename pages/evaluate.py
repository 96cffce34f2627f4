"""Evaluate: one run on its validation or test split: confusion matrices, per-class scores, ROC,
precision-recall, F1 against threshold (with a live threshold slider), calibration, the
misclassified images, and downloads of the model and its config."""
import json

import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.data.imaging import displayable
from core.ml import metrics as metrics_lib
from core.present import charts, review
from core.present import runs as runs_view
from pages import common

RUN_KEY = "eval_run"
GALLERY_SIZE = 12
GALLERY_COLUMNS = 6


@st.cache_data(show_spinner=False, max_entries=32)
def curves(run_path: str, split: str, modified: float) -> dict:
    """Threshold-free curves of a run's saved predictions (`modified` refreshes the cache)."""
    from core.store.runs import Run
    predictions = Run(run_path).predictions(split)
    return metrics_lib.evaluate_predictions(predictions["probabilities"], predictions["labels"],
                                            predictions["class_names"])


def choose_run(store):
    runs = [r for r in store.list() if r.predictions_path("test").exists() or r.predictions_path("val").exists()]
    if not runs:
        return None
    ids = [r.id for r in runs]
    wanted = st.query_params.get("run")
    if wanted in ids:
        st.session_state[RUN_KEY] = wanted
    if st.session_state.get(RUN_KEY) not in ids:
        st.session_state[RUN_KEY] = ids[0]
    names = {r.id: runs_view.run_name(r) for r in runs}
    run_id = st.selectbox("Run", ids, key=RUN_KEY, format_func=lambda r: f"{names[r]} ({r})")
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


def headline(metrics: dict, class_names, disease_view: bool) -> None:
    """The headline numbers; with 3+ classes also macro one-vs-rest AUC and every class's recall,
    because a disease-vs-normal AUC can look excellent while one class is never predicted."""
    multi_class = len(class_names) > 2
    shown = [("Accuracy", "accuracy"), ("Balanced accuracy", "balanced_accuracy"), ("Macro-F1", "macro_f1")]
    if not multi_class:
        shown.append(("AUC", "auc"))
    elif disease_view:
        shown += [("AUC (disease vs normal)", "auc"), ("Macro one-vs-rest AUC", "macro_ovr_auc")]
    else:
        shown.append(("AUC (macro one-vs-rest)", "macro_ovr_auc"))
    shown.append(("Average precision", "average_precision"))
    for col, (label, key) in zip(st.columns(len(shown)), shown):
        value = metrics.get(key)
        col.metric(label, f"{value:.3f}" if value is not None else "—")
    recalls = metrics.get("recall_per_class") or {}
    if recalls:
        for col, (name, value) in zip(st.columns(len(recalls)), recalls.items()):
            col.metric(f"Recall: {name}", f"{value:.3f}" if value is not None else "—")
    for note in metrics_lib.never_predicted_notes(metrics):
        st.warning(note, icon=":material/visibility_off:")


def confusion_and_classes(metrics: dict, class_names) -> None:
    left, right = st.columns(2)
    common.show_chart(charts.confusion_matrix_chart(metrics["confusion_matrix"], class_names), left)
    common.show_chart(charts.confusion_matrix_chart(metrics["confusion_matrix_normalized"], class_names,
                                                     normalized=True), right)
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


def gallery(run, predictions: dict, threshold: float | None) -> None:
    st.subheader("Misclassified images")
    wrong = review.misclassified(predictions, threshold, GALLERY_SIZE)
    if not wrong:
        st.success("No misclassified images in this split at this threshold.")
        return
    st.caption(f"The {len(wrong)} most confident mistakes.")
    try:
        with st.spinner("Loading the run's images…"):
            dataset = common.run_dataset(json.dumps(run.config(), sort_keys=True))
    except data_lib.DataError as exc:
        st.warning(f"The run's dataset cannot be loaded any more, so no images: {exc}")
        return
    images = review.images_by_file(dataset.files, dataset.images, [w["file"] for w in wrong])
    show_overlay = run.has_model() and st.checkbox("Show Grad-CAM overlays", key="eval_gradcam")
    reasons = decision_reasons(predictions, threshold)
    cols = st.columns(GALLERY_COLUMNS)
    for i, item in enumerate(wrong):
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
    headline(metrics, predictions["class_names"], results["f1_threshold"] is not None)
    confusion_and_classes(metrics, predictions["class_names"])
    curve_charts(results, threshold)
    gallery(run, predictions, threshold)


main()
