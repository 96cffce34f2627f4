"""External validation on the Evaluate page: the run's model on another labelled dataset (a server
path or an uploaded zip), its saved results beside the internal test split. A component of
pages/evaluate.py, not a page."""
import pandas as pd
import streamlit as st

from core.data import datasets as data_lib
from core.ml import intervals as intervals_lib
from core.present import evaluation as evaluation_view
from core.present import forms
from ui import common


def external_source() -> str | None:
    """A labelled dataset in any format the Dataset page reads: a server path, or an uploaded file saved
    like the Dataset page's."""
    how = st.radio("External dataset", ("Path on the server", "Upload a file"), horizontal=True, key="eval_ext_how")
    if how == "Upload a file":
        upload = st.file_uploader("A .zip of class folders, an .npz or a CIFAR tarball (the run's classes)",
                                  type=["zip", "npz", "gz", "tar"], key="eval_ext_upload")
        return None if upload is None else str(forms.save_upload(upload.getvalue(), upload.name))
    path = st.text_input("Labelled dataset on the server", key="eval_ext_path", placeholder="/data/hospital_b",
                         help="A folder of class folders, a .zip of one, a MedMNIST or Keras .npz, a CSV of "
                              "labels with its images, or a CIFAR tarball: the format is told from the file, "
                              "read with this run's format settings (e.g. the CSV's label column). Its classes "
                              "must be the run's.")
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
        evaluate_external(run, source, progress=common.progress_bar(bar))
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
    small = intervals_lib.small_set_warning(result["intervals"])
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
