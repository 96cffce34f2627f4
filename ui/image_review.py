"""The images behind the Evaluate page's numbers: a confusion-matrix cell's cases and the most
confident mistakes, each with why it got its class, and Grad-CAM overlays on request. A component
of pages/evaluate.py, not a page."""
import json

import streamlit as st

from core.data import datasets as data_lib
from core.data.imaging import displayable
from core.ml import metrics as metrics_lib
from core.present import evaluation as evaluation_view
from core.present import review
from ui import common

GALLERY_SIZE = 12
GALLERY_COLUMNS = 6
CELL_KEY = "eval_cell"
CLICKED_KEY = "eval_cell_clicked"  # the last click applied, so a later keyboard choice is not undone


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
