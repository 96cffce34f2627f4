"""Dataset: choose the source, task, image size, colour and split; see counts, patients, samples
and the load report. The settings carry over to the Train page (st.session_state)."""
import numpy as np
import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.present import charts, forms
from core.settings.config import SOURCES, TASKS
from pages import common

IMAGE_SIZES = (32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
SAMPLES_PER_CLASS = 8


def source_inputs(settings: dict) -> tuple[str, str]:
    """(source, path) from the source radio and, for non-built-in sources, a path or an upload."""
    common.init_widget("ds_source", settings["data_source"])
    source = st.radio("Source", SOURCES, format_func=forms.SOURCE_TITLES.get, horizontal=True,
                      key="ds_source")
    if source == "builtin":
        return source, ""
    path = settings.get("data_path", "") if settings["data_source"] == source else ""
    if source in ("zip", "npz"):
        upload = st.file_uploader(f"Upload a .{source} file", type=[source], key=f"ds_upload_{source}")
        if upload is not None:
            saved = forms.save_upload(upload.getvalue(), upload.name)
            st.caption(f"Saved as `{saved}`; runs refer to it by this path.")
            return source, str(saved)
    hint = {"folder": "one sub-folder per class, optionally inside train/ val/ test/",
            "zip": "…or the path of a zip already on the server",
            "npz": "…or the path of an .npz already on the server (MedMNIST layout)"}[source]
    common.init_widget(f"ds_path_{source}", path)
    path = st.text_input("Path on the server", placeholder="/data/my_xrays", help=hint, key=f"ds_path_{source}")
    return source, path.strip()


def tasks_for(source: str) -> tuple[str, ...]:
    return {"builtin": ("binary", "subtype"), "npz": ("classes",)}.get(source, TASKS)


def init_settings_widgets(settings: dict, source: str) -> None:
    """Give the form's widgets their values from the applied settings (once; then they keep theirs)."""
    tasks = tasks_for(source)
    common.init_widget(f"ds_task_{source}", settings["task"] if settings["task"] in tasks else tasks[0])
    common.init_widget("ds_image_size", settings["image_size"] if settings["image_size"] in IMAGE_SIZES else 128)
    for key, value in (("ds_color", settings["color_mode"]), ("ds_split", settings["split"]),
                       ("ds_val", float(settings["val_fraction"])), ("ds_test", float(settings["test_fraction"])),
                       ("ds_seed", int(settings["seed"]))):
        common.init_widget(key, value)


def applied_settings(source: str, path: str) -> dict:
    """The settings as last applied with the form (the form's widgets hold them in the session)."""
    state = st.session_state
    return {"data_source": source, "data_path": path, "task": state[f"ds_task_{source}"],
            "image_size": int(state["ds_image_size"]), "color_mode": state["ds_color"], "split": state["ds_split"],
            "val_fraction": float(state["ds_val"]), "test_fraction": float(state["ds_test"]),
            "seed": int(state["ds_seed"])}


def settings_form(source: str, has_own_split: bool) -> None:
    """Task, size, colour and split in one form: nothing reloads until "Apply" is pressed."""
    splits = ("grouped", "own") if has_own_split else ("grouped",)
    with st.form("ds_settings_form", border=False):
        cols = st.columns(3)
        cols[0].selectbox("Task", tasks_for(source), key=f"ds_task_{source}",
                          format_func=lambda t: f"{t}: {data_lib.TASK_TITLES[t]}")
        cols[1].selectbox("Image size (px)", IMAGE_SIZES, key="ds_image_size",
                          help="Images are resized to this square size; small is fast, large sees more detail.")
        cols[2].radio("Colour", ("grayscale", "rgb"), horizontal=True, key="ds_color")
        cols = st.columns(4)
        cols[0].radio("Split", splits, key="ds_split",
                      format_func={"grouped": "Grouped by patient", "own": "Dataset's own split"}.get,
                      help="Grouped: no patient appears in two splits." + (
                          " Own: the dataset's train/val/test folders." if has_own_split else
                          " (This dataset has no train/val/test folders of its own.)"))
        cols[1].slider("Validation fraction", 0.05, 0.4, step=0.01, key="ds_val")
        cols[2].slider("Test fraction", 0.05, 0.4, step=0.01, key="ds_test")
        cols[3].number_input("Split seed", 0, 2**31 - 1, key="ds_seed")
        st.form_submit_button("Apply", type="primary", icon=":material/check:", key="ds_apply_button")


def source_caption(settings: dict) -> str:
    task = data_lib.TASK_TITLES.get(settings["task"], settings["task"])
    if settings["data_source"] == "builtin":
        return f"Pediatric chest X-rays (Kermany et al.), {task}, shipped with CXR Lab at 128 px."
    return f"Task: {task}."


def overview(dataset, split) -> None:
    summary = data_lib.dataset_summary(dataset)
    cols = st.columns(4)
    cols[0].metric("Images", f"{summary['images']:,}")
    cols[1].metric("Patients", f"{summary['patients']:,}")
    cols[2].metric("Classes", len(summary["classes"]))
    cols[3].metric("Skipped files", summary["skipped"])
    left, right = st.columns([3, 2])
    with left:
        common.show_chart(charts.class_counts_chart(split.report.counts))
    with right:
        patients_and_overlap(split.report)


def patients_and_overlap(report) -> None:
    st.markdown("**Patients per split**")
    frame = pd.DataFrame({"patients": report.patients,
                          "images": {k: sum(v.values()) for k, v in report.counts.items()},
                          "share": report.fractions})
    st.dataframe(frame, column_config={"share": st.column_config.NumberColumn(format="percent")})
    if report.leaks:
        st.error(f"Patient overlap between splits: {report.overlap}. Examples: "
                 f"{', '.join(report.overlap_examples)}")
    else:
        st.success("Overlap check passed: no patient appears in more than one split.")
    for warning in report.warnings:
        if not warning.startswith("patient leak"):
            st.warning(warning)


def sample_grid(dataset, seed: int) -> None:
    st.subheader("Sample images")
    rng = np.random.default_rng(seed)
    for index, name in enumerate(dataset.class_names):
        members = np.flatnonzero(dataset.labels == index)
        if not len(members):
            continue
        chosen = rng.choice(members, size=min(SAMPLES_PER_CLASS, len(members)), replace=False)
        color = charts.class_color(name, index)
        st.markdown(f"<span style='color:{color};font-weight:600'>■ {name}</span> "
                    f"({len(members):,} images)", unsafe_allow_html=True)
        images = [_displayable(dataset.images[i]) for i in chosen]
        st.image(images, width=96, caption=[str(dataset.patient_ids[i]) for i in chosen])


def _displayable(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


def load_report(dataset) -> None:
    report = dataset.report
    origin = "from the cache" if report.from_cache else "decoded"
    with st.expander(f"Load report: {report.n_images:,} images {origin} in {report.seconds:.1f} s, "
                     f"{len(report.skipped)} skipped", expanded=bool(report.skipped)):
        st.caption(f"Source: `{report.source}`")
        if not report.skipped:
            st.write("No file was skipped.")
            return
        skipped = pd.DataFrame(report.skipped)
        st.dataframe(skipped["reason"].value_counts().rename("files"))
        st.dataframe(skipped, hide_index=True)


def main() -> None:
    st.title("Dataset")
    st.caption("Choose the images to train on. These settings are used by the Train page.")
    settings = dict(common.dataset_settings())
    with st.container(border=True):
        source, path = source_inputs(settings)
        init_settings_widgets(settings, source)
        chosen = applied_settings(source, path)
        dataset, split, problem = load(chosen)
        if chosen["split"] == "own" and dataset is not None and not dataset.has_own_split:
            st.session_state["ds_split"] = chosen["split"] = "grouped"  # offered only where there is one
            dataset, split, problem = load(chosen)
        st.caption(source_caption(chosen))
        settings_form(source, dataset is not None and dataset.has_own_split)
    settings.update(chosen)
    st.session_state[common.DATASET_SETTINGS_KEY] = settings
    if source != "builtin" and not path:
        st.info("Enter a path or upload a file to load a dataset.")
        return
    if problem:
        st.error(f"This dataset cannot be used: {problem}")
        return
    st.success(f"Ready to train on: {forms.dataset_label(settings)}")
    overview(dataset, split)
    sample_grid(dataset, settings["seed"])
    load_report(dataset)


def load(settings: dict):
    """(dataset, split, None), or (dataset or None, None, the reason) when it cannot be used."""
    if settings["data_source"] != "builtin" and not settings["data_path"]:
        return None, None, None
    dataset = None
    try:
        with st.spinner("Loading the dataset…"):
            dataset = common.load_dataset(settings["data_source"], settings["data_path"], settings["task"],
                                          settings["image_size"], settings["color_mode"])
            return (*common.dataset_and_split(settings), None)
    except data_lib.DataError as exc:
        return dataset, None, str(exc)


main()
