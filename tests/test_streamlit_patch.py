"""The private-Streamlit patches (ui/streamlit_patches.py): fail the day Streamlit renames or stops using
what they replace, so the patches are revisited then."""
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


def test_streamlit_still_runs_a_pages_folder_alone_until_navigation_switches_that_off():
    """What enter_through_app replaces: the old multipage mode, decided by a pages/ folder beside the
    main script, in which the script runner calls _mpa_v1 instead of running the main script."""
    from streamlit.commands import navigation
    from streamlit.runtime.pages_manager import PagesManager

    from ui import streamlit_patches
    streamlit_patches.install()
    assert "uses_pages_directory" in vars(PagesManager)
    assert "_mpa_v1(self._main_script_path)" in inspect.getsource(script_runner.ScriptRunner)
    assert "def _mpa_v1(main_script_path" in inspect.getsource(script_runner._mpa_v1.replaces)
    assert "PagesManager.uses_pages_directory = False" in inspect.getsource(navigation)
