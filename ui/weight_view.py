"""A linear model's weights (the perceptron, a logistic regression) as one picture per class: on
Evaluate, and on Diagnose in place of the saliency maps such a model has no use for."""
import streamlit as st

from core.present import weight_images


@st.cache_data(show_spinner="Reading the model's weights…", max_entries=8)
def class_pictures(run_path: str, modified: float) -> list:
    """One picture per class of a linear run's weights (`modified` refreshes the cache)."""
    from core.ml import models
    from core.ml.inference import load_model
    from core.store.run_folder import Run
    return weight_images.class_pictures(models.class_weight_images(load_model(Run(run_path))))


def run_pictures(run) -> list:
    return class_pictures(str(run.path), run.model_path.stat().st_mtime)


def weights_section(run) -> None:
    """A linear run's weights, one picture per class, and why it has no saliency maps (other
    architectures: nothing)."""
    arch = run.config().get("arch")
    if not weight_images.is_linear(arch) or not run.has_model():
        return
    st.subheader(weight_images.weights_title(arch))
    st.caption(weight_images.saliency_note(arch))
    pictures = run_pictures(run)
    names = run.summary().get("class_names") or [f"class {i}" for i in range(len(pictures))]
    for col, name, picture in zip(st.columns(len(pictures)), names, pictures):
        col.image(picture, caption=name, width="stretch")
    st.caption(weight_images.WEIGHTS_CAPTION)
    c_grid_table(run.summary().get("logistic_regression"))


def c_grid_table(fit: dict | None) -> None:
    """A logistic regression's fits, one per C, and the one kept (none for a perceptron)."""
    if not fit:
        return
    st.dataframe(weight_images.c_grid_frame(fit), hide_index=True)
    st.caption(weight_images.C_GRID_CAPTION.format(penalty=fit["penalty"].upper()))


def predicted_class_picture(run, class_name: str) -> None:
    """On Diagnose, in place of a map: the weights of the class a linear run predicted."""
    names = run.summary().get("class_names") or []
    if class_name not in names:  # a run stopped before its summary: its classes are not on record
        return
    st.image(run_pictures(run)[names.index(class_name)], width="stretch",
             caption=weight_images.WEIGHTS_INSTEAD.format(name=class_name))
    st.caption(weight_images.WEIGHTS_CAPTION)
