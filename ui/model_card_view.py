"""A run's model card and model exports: the card folded away with its downloads (.md, .html),
and a button that exports model.keras as a SavedModel and a TFLite model, then offers them. Not a
page: the Evaluate and Runs pages call `model_card_and_export(run)`."""
import streamlit as st

from core.ml import export
from core.ml import model_card as card_view
from core.store.run_folder import Run
from ui import common


@st.cache_data(max_entries=16, show_spinner="Bootstrapping patients for the model card...")
def card_texts(run_path: str, sources: tuple) -> tuple[str, str]:
    """(Markdown, HTML) of the card; `sources` (card_view.card_sources) renews it when the run changes."""
    return card_view.model_card_both(Run(run_path))


def model_card_and_export(run: Run) -> None:
    markdown, html = card_texts(str(run.path), card_view.card_sources(run))
    with st.expander("Model card"):
        st.markdown(markdown)
    left, right, _ = st.columns([1, 1, 2])
    left.download_button("Model card (.md)", markdown, file_name=f"{run.id}-model_card.md", mime="text/markdown",
                         key=f"card-md-{run.id}", on_click="ignore")
    right.download_button("Model card (.html)", html, file_name=f"{run.id}-model_card.html", mime="text/html",
                          key=f"card-html-{run.id}", on_click="ignore")
    export_section(run)


def export_section(run: Run) -> None:
    why_not = export_blocker(run)
    clicked = st.button("Export SavedModel + TFLite", key=f"export-{run.id}", disabled=why_not is not None,
                        help=why_not or "Writes saved_model/ and model.tflite beside model.keras, and model_card.md")
    if why_not:
        st.caption(why_not)
    if clicked and run_export(run):
        st.success("Exported; model_card.md written beside them.")
    exports_and_downloads(run)


def export_blocker(run: Run) -> str | None:
    """Why this run cannot be exported now, or None."""
    try:
        export.check_exportable(run)
    except (FileNotFoundError, RuntimeError) as exc:
        return str(exc)
    return None


def run_export(run: Run) -> bool:
    bar = st.progress(0.0, text="Exporting")
    try:
        export.export_run(run, progress=common.progress_bar(bar))
        card_view.write_model_card(run)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        bar.empty()
        st.error(f"Export failed: {exc}")
        return False
    bar.empty()
    return True


def exports_and_downloads(run: Run) -> None:
    files = export.exported_files(run)
    if files["saved_model"]:
        st.caption(f"SavedModel ({files['saved_model_bytes'] / 1e6:.1f} MB): `{files['saved_model']}`")
        # callables: the files are read only when downloaded, not on every rerun
        st.download_button("SavedModel (.zip)", lambda: export.saved_model_zip(run),
                           file_name=f"{run.id}-saved_model.zip", mime="application/zip",
                           key=f"saved-model-{run.id}", on_click="ignore")
    if files["tflite"]:
        st.caption(f"TFLite ({files['tflite_bytes'] / 1e6:.1f} MB): `{files['tflite']}`")
        st.download_button("TFLite model", run.tflite_path.read_bytes, file_name=f"{run.id}-model.tflite",
                           mime="application/octet-stream", key=f"tflite-{run.id}", on_click="ignore")
