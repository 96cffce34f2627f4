"""The dashboard's one patch of a private Streamlit API. Checked against streamlit 1.67.0;
tests/test_streamlit_patch.py fails the day Streamlit renames or stops using what it replaces."""
from __future__ import annotations

import sys


def protect_background_training() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    Streamlit does that after each run, fragment reruns included (a live training view reruns every
    second). Training now runs in worker processes, but the dashboard still builds models (the Train
    page's size estimate) while another tab's reruns end, and clear_session resets Keras' global
    names under it. Measured on the 2-core VM: with clear_session called in another thread for 40 s
    (83 calls), both model builds of that time failed ("The name 'conv2d' is used 6 times in the
    model"); Grad-CAM on a built model was unaffected. bench/clear_session.py repeats it.
    tests/test_streamlit_patch.py fails the day Streamlit renames or stops calling the function
    replaced here. Streamlit's other clean-up
    (closing matplotlib figures) is kept.
    """
    from streamlit.runtime.scriptrunner import script_runner
    if getattr(script_runner._clean_problem_modules, "keeps_keras_state", False):
        return

    def clean_up_without_keras() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            try:
                pyplot.close("all")
            except Exception:  # noqa: BLE001 - as Streamlit does: a clean-up must never fail a run
                pass

    clean_up_without_keras.keeps_keras_state = True
    clean_up_without_keras.replaces = script_runner._clean_problem_modules
    script_runner._clean_problem_modules = clean_up_without_keras


def install() -> None:
    """Called by app.py's server before any page view, and by ui.common."""
    protect_background_training()
