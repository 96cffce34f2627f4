"""Diagnose: upload chest X-rays (JPEG, PNG, DICOM, ...) and get a trained run's prediction, its
class probabilities, where the network looked (Grad-CAM, Grad-CAM++, saliency, SmoothGrad) and a
warning when the image is unlike the training data. A thin view over core.ml.diagnosis.Diagnoser.

Runs as a st.Page script (no set_page_config here); TensorFlow is imported inside cached functions.
"""
import hashlib
import threading
from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from core.ml import diagnosis as dx
from core.ml.explain import (
    CAM_METHODS,
    DEFAULT_OPACITY,
    METHODS,
    ExplainError,
    empty_map_message,
    is_empty_map,
    overlay,
)
from pages import common

DISPLAY_MAX_SIDE = 1600  # overlays of huge uploads are drawn on a copy this large, for speed
PREDICTED = "(predicted class)"
CLINICAL_NOTE = "Research tool, not for clinical use: this is not a medical diagnosis."
# Digests of the images whose empty Grad-CAM the user replaced by Grad-CAM++ (not a widget: no diag_ prefix).
PLUS_PLUS_KEY = "diagnose_gradcam_plus_plus"


@dataclass
class Controls:
    threshold: float | None
    method: str
    opacity: float
    class_name: str | None  # None: explain the predicted class
    feature_layer: str | None = None  # None: Grad-CAM's automatic choice


@st.cache_resource(show_spinner="Loading the model and its explainer…", max_entries=4)
def load_diagnoser(run_dir: str, model_mtime: float) -> dx.Diagnoser:
    """One Diagnoser per run (and model file version): built once, shared by all images and sessions.
    Its one-off costs (OOD reference, graph tracing) start in the background while the user picks files."""
    diagnoser = dx.Diagnoser(run_dir)
    threading.Thread(target=diagnoser.warm_up, name="diagnose-warm-up", daemon=True).start()
    return diagnoser


@st.cache_data(show_spinner=False, max_entries=256)
def cached_heatmap(run_dir: str, model_mtime: float, digest: str, method: str, class_name: str,
                   feature_layer: str | None, _diagnosis):
    """The map for one image, method, class and layer (the underscore argument is not hashed)."""
    return load_diagnoser(run_dir, model_mtime).heatmap(_diagnosis, method, class_name, feature_layer)


# ----------------------------------------------------------------------------- controls

def choose_run(runs):
    tasks = sorted({run.config().get("task", "binary") for run in runs})
    reset_stale_choice("diag_task", tasks, "binary" if "binary" in tasks else tasks[0])
    task = st.selectbox("Task", tasks, key="diag_task")
    in_task = [run for run in runs if run.config().get("task", "binary") == task]
    best = dx.best_run(in_task)
    ids = [run.id for run in in_task]
    reset_stale_choice("diag_run", ids, best.id)  # the remembered run may belong to another task
    labels = {run.id: run_label(run, run is best) for run in in_task}
    run_id = st.selectbox("Run (default: best test AUC)", ids, key="diag_run", format_func=labels.get)
    return next(run for run in in_task if run.id == run_id)


def run_label(run, best: bool) -> str:
    config, state = run.config(), dx.state_note(run)
    return " · ".join([common.run_name(run), str(config.get("arch")), f"{config.get('image_size')} px",
                       *([state] if state else []), *(["best"] if best else [])])


def choose_threshold(diagnoser: dx.Diagnoser):
    if not diagnoser.has_threshold:
        st.caption("No disease-vs-normal threshold for these classes: the most likely class is predicted.")
        return None
    saved = diagnoser.threshold
    origin = (f"The run's best-F1 threshold on validation is {saved:.2f}." if saved is not None
              else "The run saved no threshold, so it starts at 0.5.")
    key = f"diag_threshold_{diagnoser.run.id}"
    common.init_widget(key, 0.5 if saved is None else float(saved))
    return st.slider("Decision threshold on the disease score", 0.0, 1.0, step=0.01, key=key,
                     help=f"{origin} The disease score is P(disease), i.e. 1 - P(NORMAL) with several diseases.")


def reset_stale_choice(key: str, options: list, default) -> None:
    """Give the widget `key` its default when it has no value yet or a remembered one that the newly
    selected run does not offer (e.g. Grad-CAM on an mlp). Assigned, not deleted: only an assigned
    value makes the browser redraw the box (after a delete it keeps showing the stale option)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def choose_controls(diagnoser: dx.Diagnoser) -> Controls:
    threshold = choose_threshold(diagnoser)
    method, opacity, class_name = choose_explanation(diagnoser)
    return Controls(threshold, method, opacity, class_name, choose_feature_layer(diagnoser, method))


def choose_feature_layer(diagnoser: dx.Diagnoser, method: str) -> str | None:
    layers = diagnoser.feature_layers()
    if method not in CAM_METHODS or not layers:
        return None
    automatic = f"automatic ({diagnoser.explainer.feature_layer})"
    with st.expander("Advanced: Grad-CAM feature map"):
        reset_stale_choice("diag_layer", [automatic, *layers], automatic)
        layer = st.selectbox("Layer whose feature map Grad-CAM weights", [automatic, *layers], key="diag_layer",
                             help="Earlier layers give sharper but less class-specific maps.")
    return None if layer == automatic else layer


def choose_explanation(diagnoser: dx.Diagnoser):
    columns = st.columns(3)
    methods = diagnoser.explainer.methods
    reset_stale_choice("diag_method", methods, methods[0])
    reset_stale_choice("diag_class", [PREDICTED, *diagnoser.class_names], PREDICTED)
    method = columns[0].selectbox("Heatmap method", methods, format_func=METHODS.get, key="diag_method")
    common.init_widget("diag_opacity", DEFAULT_OPACITY)
    opacity = columns[1].slider("Heatmap opacity", 0.0, 1.0, step=0.05, key="diag_opacity")
    target = columns[2].selectbox("Explain class", [PREDICTED, *diagnoser.class_names], key="diag_class")
    if diagnoser.explainer.cam_unavailable:
        st.info(diagnoser.explainer.cam_unavailable, icon=":material/info:")
    return method, opacity, None if target == PREDICTED else target


# ----------------------------------------------------------------------------- results

def probability_chart(result: dx.Diagnosis) -> alt.Chart:
    frame = pd.DataFrame({"label": list(result.probabilities), "probability": list(result.probabilities.values())})
    return alt.Chart(frame, title=f"Class probabilities: {result.file}", height=220).mark_bar().encode(
        x=alt.X("label:N", title="Class", sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("probability:Q", title="Probability", scale=alt.Scale(domain=[0, 1])),
        color=alt.condition(alt.datum.label == result.predicted, alt.value("#d62728"), alt.value("#4c78a8")),
        tooltip=[alt.Tooltip("label:N", title="class"), alt.Tooltip("probability:Q", format=".3f")],
    )


def show_result(run_key: tuple, result: dx.Diagnosis, digest: str, controls: Controls, index: int) -> None:
    if not result.ok:
        st.error(f"**{result.file}**: cannot be diagnosed: {result.error}", icon=":material/block:")
        return
    if result.ood and result.ood.unusual:
        st.warning(result.ood.message(), icon=":material/warning:")
    detail = ""
    if result.score is not None:
        versus = "" if controls.threshold is None else f" vs threshold {controls.threshold:.2f}"
        detail = f" (disease score {result.score:.3f}{versus})"
    st.markdown(f"**{result.file}**: predicted **{result.predicted}**{detail}")
    st.caption(CLINICAL_NOTE)
    left, right = st.columns(2)
    shown = result.image.copy()
    shown.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE))
    left.image(shown, caption=f"Original ({result.image.width}x{result.image.height})", width="stretch")
    with right:
        show_heatmap(run_key, result, digest, controls, shown, index)
    st.altair_chart(probability_chart(result), width="stretch")


def show_heatmap(run_key: tuple, result: dx.Diagnosis, digest: str, controls: Controls, shown, index: int) -> None:
    """The overlay; for an empty map, why it is empty and (for Grad-CAM) a switch to Grad-CAM++."""
    target = controls.class_name or result.predicted
    switched = controls.method == "gradcam" and digest in st.session_state.get(PLUS_PLUS_KEY, set())
    method = "gradcam++" if switched else controls.method
    try:
        heatmap = cached_heatmap(*run_key, digest, method, target, controls.feature_layer, result)
    except ExplainError as exc:
        st.info(str(exc), icon=":material/info:")
        return
    if is_empty_map(heatmap):
        st.info(empty_map_message(method), icon=":material/info:")
        if method == "gradcam":
            st.button("Show Grad-CAM++ for this image", key=f"diag_plus_plus_{index}_button",
                      on_click=use_plus_plus_for, args=(digest,))
        return
    caption = f"{METHODS[method]} for {target}" + (" (Grad-CAM was empty for this image)" if switched else "")
    st.image(overlay(shown, heatmap, controls.opacity), width="stretch", caption=caption)


def use_plus_plus_for(digest: str) -> None:
    """Button callback: show Grad-CAM++ instead of the empty Grad-CAM for this image."""
    st.session_state[PLUS_PLUS_KEY] = st.session_state.get(PLUS_PLUS_KEY, set()) | {digest}


def results_table(results: list[dx.Diagnosis]) -> None:
    rows = [{"thumbnail": dx.thumbnail_data_url(r.image) if r.ok else None, **r.row()} for r in results]
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"thumbnail": st.column_config.ImageColumn("Image", width="small")})
    st.download_button("Download results (CSV)", frame.drop(columns="thumbnail").to_csv(index=False),
                       file_name="diagnoses.csv", mime="text/csv", icon=":material/download:", key="diag_csv_button")


def diagnose_uploads(diagnoser: dx.Diagnoser, uploads, controls: Controls) -> list[tuple]:
    """[(Diagnosis, content digest)] for the uploaded files, in upload order."""
    with st.spinner("Preparing the unusual-input check (once per run)…"):
        diagnoser.reference()
    if diagnoser.ood_error:
        st.info(diagnoser.ood_error, icon=":material/info:")
    diagnosed = []
    for upload in uploads:
        data = upload.getvalue()
        diagnosed.append((diagnoser.diagnose(data, upload.name, controls.threshold), hashlib.sha1(data).hexdigest()))
    return diagnosed


def show_results(run_key: tuple, diagnosed: list[tuple], controls: Controls) -> None:
    if len(diagnosed) > 1:
        results_table([result for result, _ in diagnosed])
    for index, (result, digest) in enumerate(diagnosed):
        with st.expander(result.file, expanded=index < 3 or not result.ok):
            show_result(run_key, result, digest, controls, index)


# ----------------------------------------------------------------------------- the page

def main() -> None:
    st.title("Diagnose")
    st.warning("**Research and teaching tool, not for clinical use.** Predictions come from models trained "
               "on small public datasets; they are not a medical diagnosis.", icon=":material/medical_information:")
    runs = dx.diagnosable_runs(common.run_store())
    if not runs:
        common.no_runs_yet("No finished run with a saved model yet (queued and running runs are not listed): "
                           "go to **Train** and launch one.")
        return
    run = choose_run(runs)
    run_key = (str(run.path), run.model_path.stat().st_mtime)
    try:
        diagnoser = load_diagnoser(*run_key)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign model.keras: say so, keep the page
        st.error(f"The model of run {run.id} cannot be loaded: {type(exc).__name__}: {exc}", icon=":material/block:")
        return
    config = diagnoser.config
    st.caption(f"Preprocessing as in training: {config.image_size}x{config.image_size} px, "
               f"{config.color_mode}, pixels 0-255 (the model rescales them itself).")
    controls = choose_controls(diagnoser)
    uploads = st.file_uploader("Chest X-ray images (JPEG, PNG, DICOM, ...)", accept_multiple_files=True,
                               key="diag_upload")
    if not uploads:
        st.info("Drop one or more images above.", icon=":material/info:")
        return
    show_results(run_key, diagnose_uploads(diagnoser, uploads, controls), controls)


main()
