"""Dataset: choose the source, task, image size, colour and split; see counts, patients, samples
and the load report. The settings carry over to the Train page (st.session_state)."""
import html

import numpy as np
import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.data import formats, label_csv
from core.data.imaging import displayable
from core.present import charts, forms
from core.settings.config import SETTINGS, TASKS
from ui import common, dataset_source, widgets

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py

# The settings of the form, each drawn from its declaration under "ds_" + its name; the task's key
# is per source, since each source offers its own tasks.
FORM_FIELDS = ("image_size", "color_mode", "split", "val_fraction", "test_fraction", "split_seed")
# A data format's own settings (CSV target, CIFAR-100 labels, ...), drawn for the source that reads them.
FORMAT_FIELDS = tuple(formats.FormatOptions.__dataclass_fields__)
SPLIT_TITLES = {"grouped": "Grouped by patient", "own": "Dataset's own split"}
SAMPLES_PER_CLASS = 8
# The datasets this session has loaded (no progress bar needed for them again), and the one whose
# loading the user cancelled (not started again until asked). Not "ds_" keys: never saved.
LOADED_KEY = "dataset_loaded"
CANCELLED_KEY = "dataset_load_cancelled"
CANCELLED = ("loading was cancelled. Nothing was lost: the partly decoded images were removed, and "
             "the dataset can be loaded again at any time.")


def tasks_for(source: str) -> tuple[str, ...]:
    if source in formats.OWN_CLASSES:
        return ("classes",)
    return {"builtin": ("binary", "subtype")}.get(source, TASKS)


def init_settings_widgets(settings: dict, source: str) -> None:
    """Give the form's widgets their values from the applied settings (once; then they keep theirs)."""
    widgets.start(SETTINGS["task"], dataset_source.task_key(source), settings["task"], tasks_for(source))
    for name in FORM_FIELDS + FORMAT_FIELDS:
        widgets.start(SETTINGS[name], "ds_" + name, settings[name])


def applied_settings(source: str, path: str, settings: dict) -> dict:
    """The settings as last applied with the form (the form's widgets hold them in the session; a
    format's setting not drawn for this source keeps its value in `settings`)."""
    state = st.session_state
    chosen = {name: forms.from_widget(SETTINGS[name], state["ds_" + name]) for name in FORM_FIELDS}
    chosen |= {name: forms.from_widget(SETTINGS[name], state.get("ds_" + name, settings[name]))
               for name in FORMAT_FIELDS}
    return {"data_source": source, "data_path": path, "task": state[dataset_source.task_key(source)], **chosen}


def settings_form(source: str, has_own_split: bool) -> None:
    """Task, size, colour and split in one form: nothing reloads until "Apply" is pressed."""
    with st.form("ds_settings_form", border=False):
        cols = st.columns(3)
        widgets.setting_input(SETTINGS["task"], dataset_source.task_key(source), cols[0], choices=tasks_for(source),
                              format_func=lambda t: f"{t}: {data_lib.TASK_TITLES[t]}")
        widgets.setting_input(SETTINGS["image_size"], "ds_image_size", cols[1])
        widgets.setting_input(SETTINGS["color_mode"], "ds_color_mode", cols[2], radio=True, horizontal=True)
        cols = st.columns(4)
        split = SETTINGS["split"]
        widgets.setting_input(split, "ds_split", cols[0], radio=True, format_func=SPLIT_TITLES.get,
                              choices=("grouped", "own") if has_own_split else ("grouped",),
                              help=split.help + ("" if has_own_split else
                                                 " (This dataset has no train/val/test folders of its own.)"))
        widgets.setting_input(SETTINGS["val_fraction"], "ds_val_fraction", cols[1])
        widgets.setting_input(SETTINGS["test_fraction"], "ds_test_fraction", cols[2])
        widgets.setting_input(SETTINGS["split_seed"], "ds_split_seed", cols[3], label="Split seed",
                              help="Seeds the patient split shown here, which the Train page's runs use; "
                                   "their training seed is set there.")
        own = formats.OPTIONS_OF.get(source, ())
        for col, name in zip(st.columns(max(2, len(own))), own):
            widgets.setting_input(SETTINGS[name], "ds_" + name, col)
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
    elif not report.per_image:  # without patient ids there is nothing to check (its warning says so)
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
        st.markdown(f"<span style='color:{color};font-weight:600'>■ {html.escape(name)}</span> "  # a folder's name
                    f"({len(members):,} images)", unsafe_allow_html=True)
        images = [displayable(dataset.images[i]) for i in chosen]
        st.image(images, width=96, caption=[str(dataset.patient_ids[i]) for i in chosen])


def load_report(dataset) -> None:
    report = dataset.report
    with st.expander(f"Load report: {data_lib.load_summary(report)}", expanded=bool(report.skipped)):
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
        source, path = dataset_source.source_inputs(settings)
        init_settings_widgets(settings, source)
        chosen = applied_settings(source, path, settings)
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
    if problem == CANCELLED:
        st.info(f"The dataset's {problem}", icon=":material/cancel:")
        st.button("Load it", key="ds_load_again_button", on_click=load_again, icon=":material/refresh:")
        return
    if problem:
        st.error(f"This dataset cannot be used: {problem}")
        return
    st.success(f"Ready to train on: {forms.dataset_label(settings)}")
    missing = label_csv.missing_summary(dataset.report.skipped)
    if missing:
        st.warning(missing)
    overview(dataset, split)
    sample_grid(dataset, settings["split_seed"])
    load_report(dataset)


def cancel_loading(args: tuple) -> None:
    st.session_state[CANCELLED_KEY] = args


def load_again() -> None:
    st.session_state.pop(CANCELLED_KEY, None)


def decode_with_progress(settings: dict, args: tuple) -> None:
    """Decode into the disk cache with a progress bar and a Cancel button. Pressing it (or Stop)
    ends this script run inside the progress callback; the decoding cleans up after itself."""
    bar = st.progress(0.0, text="Looking for the dataset's decoded images…")
    st.button("Cancel loading", key="ds_cancel_load_button", on_click=cancel_loading, args=(args,))
    common.decode_into_cache(settings, common.progress_bar(bar))
    bar.empty()


def load(settings: dict):
    """(dataset, split, None), or (dataset or None, None, the reason) when it cannot be used."""
    if settings["data_source"] != "builtin" and not settings["data_path"]:
        return None, None, None
    dataset = None
    args = common.dataset_args(settings)
    try:
        if args not in st.session_state.get(LOADED_KEY, []):
            if st.session_state.get(CANCELLED_KEY) == args:
                return None, None, CANCELLED
            placeholder = st.empty()
            with placeholder.container():
                decode_with_progress(settings, args)
            placeholder.empty()
            st.session_state[LOADED_KEY] = [*st.session_state.get(LOADED_KEY, []), args]
        with st.spinner("Loading the dataset…"):
            dataset = common.load_dataset(*args)
            return (*common.dataset_and_split(settings), None)
    except data_lib.DataError as exc:
        return dataset, None, str(exc)


main()
