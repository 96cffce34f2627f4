"""The dashboard's two patches of private Streamlit APIs, in one place. Checked against streamlit 1.67.0;
tests/test_streamlit_patch.py fails the day Streamlit renames or stops using what they replace."""
from __future__ import annotations

import sys
from pathlib import Path


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


def enter_through_app() -> None:
    """Every page view runs app.py, also a bookmarked link to a page of a freshly started server.

    Until a script has called st.navigation, Streamlit takes a `pages/` folder beside the main script
    for an old-style multipage app (PagesManager.uses_pages_directory) and runs the linked page's file
    on its own (script_runner._mpa_v1) instead of app.py; AppTest starts every run in that mode. The
    page scripts live in pages/ (the layout the project promises), so that function is replaced by
    one that runs app.py, as Streamlit does once st.navigation has been called. Streamlit has no
    public switch for it.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner
    if getattr(script_runner._mpa_v1, "runs_the_main_script", False):
        return

    def run_main_script(main_script_path: str) -> None:
        PagesManager.uses_pages_directory = False
        module = sys.modules["__main__"]  # the module Streamlit made for this script run
        module.__file__ = main_script_path
        code = compile(Path(main_script_path).read_text(encoding="utf-8"), main_script_path, "exec")
        exec(code, module.__dict__)  # noqa: S102 - the app's own main script, as Streamlit runs it

    run_main_script.runs_the_main_script = True
    run_main_script.replaces = script_runner._mpa_v1
    script_runner._mpa_v1 = run_main_script


def install() -> None:
    """Both patches; called by app.py's server before any page view, and by ui.common."""
    protect_background_training()
    enter_through_app()
