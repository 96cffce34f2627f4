"""The Dataset page's source section: the source radio, a server path or an upload, and what the
file at that path was detected to be (with an offer to switch to the source that reads it)."""
from pathlib import Path

import streamlit as st

from core.data import datasets as data_lib
from core.data import detection
from core.present import forms
from core.settings.config import SOURCES
from ui import common

UPLOAD_TYPES = {"zip": ["zip"], "npz": ["npz"], "cifar": ["gz", "tgz", "tar"]}
PATH_HINTS = {
    "folder": "one sub-folder per class (images, or DICOM .dcm files), optionally inside train/ val/ test/",
    "zip": "…or the path of a zip already on the server",
    "npz": "…or the path of an .npz already on the server: MedMNIST (train_images, ...) or Keras' mnist.npz "
           "layout (x_train, y_train, x_test, y_test)",
    "cifar": "…or the path of cifar-10-python.tar.gz or cifar-100-python.tar.gz on the server",
    "csv": "a CSV of labels: filename,label[,patient_id], NIH's Data_Entry_2017.csv or CheXpert's train.csv; "
           "its images in its folder (or the images folder set below)",
}

def task_key(source: str) -> str:
    return f"ds_task_{source}"


def source_inputs(settings: dict) -> tuple[str, str]:
    """(source, path) from the source radio and, for non-built-in sources, a path or an upload."""
    common.init_widget("ds_source", settings["data_source"])
    source = st.radio("Source", SOURCES, format_func=forms.SOURCE_TITLES.get, horizontal=True,
                      key="ds_source")
    if source == "builtin":
        return source, ""
    path = settings.get("data_path", "") if settings["data_source"] == source else ""
    if source in UPLOAD_TYPES:
        upload = st.file_uploader(f"Upload a file ({forms.SOURCE_TITLES[source]})", type=UPLOAD_TYPES[source],
                                  key=f"ds_upload_{source}")
        if upload is not None:
            saved = forms.save_upload(upload.getvalue(), upload.name)
            st.caption(f"Saved as `{saved}`; runs refer to it by this path.")
            show_detected(source, str(saved))
            return source, str(saved)
    common.init_widget(f"ds_path_{source}", path)
    path = st.text_input("Path on the server", placeholder="/data/my_xrays", help=PATH_HINTS[source],
                         key=f"ds_path_{source}", on_change=follow_detected, args=(source,)).strip()
    show_detected(source, path)
    return source, path


@st.cache_data(show_spinner=False, max_entries=32)
def detect(path: str, stamp: tuple) -> tuple[detection.Detected | None, str | None]:
    """(what the file at `path` is, None) or (None, why it is none of the formats); `stamp` (size and
    time) makes a changed file be looked at again."""
    try:
        return detection.detect(path), None
    except data_lib.DataError as exc:
        return None, str(exc)


def detected(path: str) -> tuple[detection.Detected | None, str | None]:
    try:
        data_lib.check_data_root(Path(path).expanduser())
        stat = Path(path).expanduser().stat()
    except (OSError, data_lib.DataError):
        return None, None  # the loader says why
    return detect(path, (stat.st_size, stat.st_mtime_ns))


def follow_detected(source: str) -> None:
    """A path typed for one source that is a file of another: switch to that source (and its task)."""
    path = st.session_state[f"ds_path_{source}"].strip()
    found, _ = detected(path) if path else (None, None)
    if found is not None and found.source != source:
        use_detected(found, path)


def use_detected(found: detection.Detected, path: str) -> None:
    st.session_state["ds_source"] = found.source
    st.session_state[f"ds_path_{found.source}"] = path
    if found.task:
        st.session_state[task_key(found.source)] = found.task


def show_detected(source: str, path: str) -> None:
    """Say what the file is; when it is another source's, offer to switch."""
    found, problem = detected(path) if path else (None, None)
    if problem:
        st.warning(problem)
    elif found is not None and found.source == source:
        st.caption(f"Detected: {found.kind}.")
    elif found is not None:
        st.warning(f"Detected: {found.kind}, which the source {forms.SOURCE_TITLES[found.source]!r} reads.")
        st.button(f"Use {forms.SOURCE_TITLES[found.source]}", key="ds_use_detected_button",
                  on_click=use_detected, args=(found, path))
