"""Diagnose: upload chest X-rays (JPEG, PNG, DICOM, ...) and get a trained run's prediction, its
class probabilities, where the network looked (Grad-CAM, Grad-CAM++, saliency, SmoothGrad) and a
warning when the image is unlike the training data. A thin view over core.ml.diagnosis.Diagnoser.

Runs as a st.Page script (no set_page_config here); TensorFlow is imported inside cached functions.
"""
import hashlib
import threading
from pathlib import Path

import streamlit as st

from core.ml import diagnosis as dx
from core.ml import explain, maps, saliency_graph, tta
from core.present import diagnose as present
from core.present import weight_images
from core.store.run_folder import Run
from ui import common, weight_view

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

PREDICTED = "(predicted class)"
CLINICAL_NOTE = "Research tool, not for clinical use: this is not a medical diagnosis."
LINKED_RUN_KEY = "diagnose_linked_run"  # the ?run= already followed (not a widget: no diag_ prefix)
SANITY_HELP = ("Adebayo et al. (2018), \"Sanity checks for saliency maps\": the same map is computed for a copy "
               "of the model whose classifier head has random weights, and the two maps are compared by their "
               f"Spearman rank correlation ρ. A map that stays alike (ρ ≥ {maps.SANITY_RHO_LIMIT}) does not "
               "depend on what the model learned: it shows the image's structure, not evidence.")


@st.cache_resource(show_spinner="Loading the model and its explainer…", max_entries=4)
def load_diagnoser(run_dir: str, model_mtime: float) -> dx.Diagnoser:
    """One Diagnoser per run (and model file version): built once, shared by all images and sessions.
    Its one-off costs (OOD reference, graph tracing) start in the background while the user picks files."""
    diagnoser = dx.Diagnoser(run_dir)
    threading.Thread(target=diagnoser.warm_up, name="diagnose-warm-up", daemon=True).start()
    return diagnoser


@st.cache_data(show_spinner=False, max_entries=256)
def cached_explanation(run_dir: str, model_mtime: float, digest: str, method: str, class_name: str,
                       feature_layer: str | None, _diagnosis) -> explain.Explanation:
    """The map (with its fallback and sanity check) for one image, method, class and layer (the
    underscore argument is not hashed)."""
    return load_diagnoser(run_dir, model_mtime).explanation(_diagnosis, method, class_name, feature_layer)


# ----------------------------------------------------------------------------- controls

def choose_run(runs):
    tasks = present.tasks_of(runs)
    linked = common.follow_run_link(runs, LINKED_RUN_KEY)
    if linked is not None:  # the Runs page's Diagnose button: that run, in its task
        st.session_state["diag_task"] = linked.config().get("task", "binary")
        st.session_state["diag_run"] = linked.id
    reset_stale_choice("diag_task", tasks, present.default_task(tasks))
    in_task = present.runs_of_task(runs, st.selectbox("Task", tasks, key="diag_task"))
    best = dx.best_run(in_task)
    ids = [run.id for run in in_task]
    reset_stale_choice("diag_run", ids, best.id)  # the remembered run may belong to another task
    labels = {run.id: present.run_label(run, dx.state_note(run), run is best) for run in in_task}
    run_id = st.selectbox("Run (default: best test AUC)", ids, key="diag_run", format_func=labels.get)
    common.link_to_run(run_id, LINKED_RUN_KEY)
    return next(run for run in in_task if run.id == run_id)


def choose_threshold(diagnoser: dx.Diagnoser):
    if not diagnoser.has_threshold:
        st.caption("No disease-vs-normal threshold for these classes: the most likely class is predicted.")
        return None
    saved = diagnoser.threshold
    origin = present.threshold_origin(saved)
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


def choose_controls(diagnoser: dx.Diagnoser) -> present.Controls:
    threshold = choose_threshold(diagnoser)
    if weight_images.is_linear(diagnoser.config.arch):  # no maps: its weights stand in for them
        st.info(weight_images.saliency_note(diagnoser.config.arch), icon=":material/info:")
        return present.Controls(threshold, None, 0.0, None)
    method, opacity, class_name = choose_explanation(diagnoser)
    with_tta = st.checkbox(f"Also average over {len(tta.VIEWS)} views (test-time augmentation)", key="diag_tta",
                           help=f"The probabilities averaged over {tta.views_sentence()}: "
                                f"one forward pass each. {tta.NOT_A_VIEW}")
    return present.Controls(threshold, method, opacity, class_name, choose_feature_layer(diagnoser, method),
                            with_tta)


def choose_feature_layer(diagnoser: dx.Diagnoser, method: str) -> str | None:
    layers = diagnoser.feature_layers()
    if method not in explain.CAM_METHODS or not layers:
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
    method = columns[0].selectbox("Heatmap method", methods, format_func=explain.METHODS.get, key="diag_method")
    common.init_widget("diag_opacity", maps.DEFAULT_OPACITY)
    opacity = columns[1].slider("Heatmap opacity", 0.0, 1.0, step=0.05, key="diag_opacity")
    target = columns[2].selectbox("Explain class", [PREDICTED, *diagnoser.class_names], key="diag_class")
    if diagnoser.explainer.cam_unavailable:
        st.info(diagnoser.explainer.cam_unavailable, icon=":material/info:")
    return method, opacity, None if target == PREDICTED else target


# ----------------------------------------------------------------------------- results

def show_result(run_key: tuple, result: dx.Diagnosis, digest: str, controls: present.Controls) -> None:
    """The prediction, the image beside its map (a linear model: its weights), the probabilities."""
    if not result.ok:
        st.error(f"**{result.file}**: cannot be diagnosed: {result.error}", icon=":material/block:")
        return
    if result.ood and result.ood.unusual:
        st.warning(result.ood.message(), icon=":material/warning:")
    st.markdown(present.headline(result, controls.threshold))
    if result.tta:
        st.markdown(present.tta_sentence(result, controls.threshold))
    if result.ensemble:
        st.markdown(present.ensemble_sentence(result, controls.threshold))
    st.caption(CLINICAL_NOTE)
    left, right = st.columns(2)
    shown = present.display_copy(result.image)
    left.image(shown, caption=f"Original ({result.image.width}x{result.image.height})", width="stretch")
    with right:
        if controls.method is None:
            weight_view.predicted_class_picture(Run(Path(run_key[0])), result.predicted)
        else:
            show_heatmap(run_key, result, digest, controls, shown)
    st.altair_chart(present.probability_chart(result), width="stretch")


def show_heatmap(run_key: tuple, result: dx.Diagnosis, digest: str, controls: present.Controls, shown) -> None:
    """The overlay, captioned with its method and class (and why another method stands in for an empty
    one), and the randomisation sanity check; for a map that stays empty, why."""
    target = controls.class_name or result.predicted
    try:
        explanation = cached_explanation(*run_key, digest, controls.method, target, controls.feature_layer, result)
    except saliency_graph.ExplainError as exc:
        st.info(str(exc), icon=":material/info:")
        return
    if explanation.empty:
        st.info(explain.empty_map_message(explanation.requested, target, list(result.probabilities)),
                icon=":material/info:")
        return
    st.image(maps.overlay(shown, explanation.heatmap, controls.opacity), width="stretch",
             caption=explanation.caption(result.predicted))
    if explanation.method != explanation.requested:
        st.caption(explain.empty_map_message(explanation.requested, target, list(result.probabilities)))
    st.markdown(explanation.sanity.sentence(), help=SANITY_HELP)


def results_table(results: list[dx.Diagnosis]) -> None:
    frame = present.results_frame(results, dx.thumbnail_data_url)
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"thumbnail": st.column_config.ImageColumn("Image", width="small")})
    st.download_button("Download results (CSV)", frame.drop(columns="thumbnail").to_csv(index=False),
                       file_name="diagnoses.csv", mime="text/csv", icon=":material/download:", key="diag_csv_button")


def choose_ensemble(run, runs) -> list[dx.Diagnoser]:
    """Other runs of the same classes to average with this one: their (cached) Diagnosers."""
    classes = run.summary().get("class_names")
    names = {other.id: f"{other.display_name()} ({other.id})" for other in runs
             if other.id != run.id and other.summary().get("class_names") == classes}
    chosen = st.multiselect("Average with other runs (an ensemble)", list(names), format_func=names.get,
                            key=f"diag_ensemble_{run.id}", placeholder="none: this run alone",
                            help="Each image through every chosen run's model too (each preprocessed as its own "
                                 "training was), the probabilities averaged: a forward pass per run.")
    return [load_diagnoser(str(other.path), other.model_path.stat().st_mtime)
            for other in runs if other.id in chosen]


def diagnose_uploads(diagnoser: dx.Diagnoser, uploads, controls: present.Controls, others=()) -> list[tuple]:
    """[(Diagnosis, content digest)] for the uploaded files, in upload order."""
    with st.spinner("Preparing the unusual-input check (once per run)…"):
        diagnoser.reference()
    if diagnoser.ood_error:
        st.info(diagnoser.ood_error, icon=":material/info:")
    diagnosed = []
    for upload in uploads:
        data = upload.getvalue()
        result = diagnoser.diagnose(data, upload.name, controls.threshold, controls.tta)
        if others and result.ok:
            result.ensemble = diagnoser.with_ensemble(result, others, controls.threshold)
        diagnosed.append((result, hashlib.sha1(data).hexdigest()))
    return diagnosed


def show_results(run_key: tuple, diagnosed: list[tuple], controls: present.Controls) -> None:
    if len(diagnosed) > 1:
        results_table([result for result, _ in diagnosed])
    for index, (result, digest) in enumerate(diagnosed):
        with st.expander(result.file, expanded=index < 3 or not result.ok):
            show_result(run_key, result, digest, controls)


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
    others = choose_ensemble(run, runs)
    uploads = st.file_uploader("Chest X-ray images (JPEG, PNG, DICOM, ...)", accept_multiple_files=True,
                               key="diag_upload")
    if not uploads:
        st.info("Drop one or more images above.", icon=":material/info:")
        return
    show_results(run_key, diagnose_uploads(diagnoser, uploads, controls, others), controls)


main()
