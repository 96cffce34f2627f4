"""The private-Streamlit patches (ui/streamlit_patches.py): fail the day Streamlit renames or stops using
what they replace, so the patches are revisited then; and that pages run through app.py without one."""
import inspect

from streamlit.runtime.scriptrunner import script_runner


def original_clean_up():
    current = script_runner._clean_problem_modules
    return getattr(current, "replaces", current)


def test_streamlit_still_clears_the_keras_session_after_each_script_run():
    assert "_clean_problem_modules" in inspect.getsource(script_runner.ScriptRunner)
    assert "clear_session" in inspect.getsource(original_clean_up())


def test_the_patch_keeps_keras_names_across_script_runs():
    import keras

    from ui import streamlit_patches
    streamlit_patches.protect_background_training()
    before = keras.layers.Dense(2).name
    script_runner._clean_problem_modules()
    after = keras.layers.Dense(2).name
    assert after != before  # clear_session would have restarted the names ("dense" again)
    original_clean_up()()
    assert keras.layers.Dense(2).name == "dense"  # what the patch prevents


def test_a_page_streamlit_runs_on_its_own_runs_again_through_app_py():
    """AppTest starts every run in Streamlit's old multipage mode (a pages/ folder beside app.py), in
    which the linked page's file runs alone, as on a fresh server's first view of a bookmarked page.
    ui.common.enter_through_app sends it through app.py: its sidebar and the kept settings come too."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from tests.apptest_support import APP, assert_clean
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.run()  # AppTest: PagesManager.uses_pages_directory = None again, so the old mode first
    assert_clean(at)
    assert PagesManager.uses_pages_directory is False  # what st.navigation sets: app.py ran
    assert any("not for clinical use" in caption.value for caption in at.sidebar.caption)
    assert at.title[0].value == "Sweeps" or any("Sweep" in h.value for h in at.header)
