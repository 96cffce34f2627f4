"""The per-layer table of a model (layer, output shape, parameters, MACs per image) in an expander:
under the Train page's counts and in a run's details on Runs & Compare. Not a page: app.py's
navigation lists only the explicit pages."""
import streamlit as st

from core.present import layers as layers_view

TITLE = "Layers: output shape, parameters and MACs"


def layers_expander(rows: list[dict], caption: str | None = None, title: str = TITLE) -> None:
    """The table of `rows` (core.ml.models.layer_table) with its totals line, folded away."""
    with st.expander(title):
        st.caption(layers_view.totals_text(rows) + (f". {caption}" if caption else ""))
        st.dataframe(layers_view.layer_frame(rows), hide_index=True, width="stretch")
