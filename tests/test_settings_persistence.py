"""What a user set survives page changes and a browser reload (a new Streamlit session), through
app.py; widgets that cannot be set through session state are never re-assigned."""
import ast
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.formats import FormatOptions
from core.present import session_keys
from core.store import ui_state
from ui import common

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
# Streamlit widgets whose value cannot be assigned through st.session_state.
UNSETTABLE_WIDGETS = ("button", "download_button", "file_uploader", "form_submit_button", "data_editor")


def new_session(page: str = "pages/home.py", **state) -> AppTest:
    """A fresh browser session (what a reload gives), opened on `page` through app.py."""
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page != "pages/home.py":
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_form_settings_survive_a_reload(app_env):
    settings = {"data_source": "builtin", "data_path": "", "task": "subtype", "image_size": 64,
                "color_mode": "grayscale", "split": "grouped", "val_fraction": 0.18, "test_fraction": 0.23,
                "split_seed": 7}
    new_session(train_epochs=12, train_name="my run", dataset_settings=settings)
    saved = json.loads((app_env / ui_state.FILE_NAME).read_text())
    settings = {**settings, **asdict(FormatOptions())}  # a data format's options, at their defaults
    assert saved["train_epochs"] == 12 and saved["dataset_settings"] == settings

    reloaded = new_session()
    assert reloaded.session_state["train_epochs"] == 12
    assert reloaded.session_state["train_name"] == "my run"
    assert reloaded.session_state[common.DATASET_SETTINGS_KEY] == settings


def test_a_session_keeps_its_own_values_over_saved_ones(app_env):
    new_session(train_epochs=12)
    at = new_session(train_epochs=4)
    assert at.session_state["train_epochs"] == 4
    assert json.loads((app_env / ui_state.FILE_NAME).read_text())["train_epochs"] == 4


def test_choices_of_runs_and_non_json_values_are_not_saved(app_env):
    new_session(train_from_run="20260101-000000-gone", train_epochs=5, sweep_thing=object())
    saved = json.loads((app_env / ui_state.FILE_NAME).read_text())
    assert "train_from_run" not in saved and "sweep_thing" not in saved
    assert saved["train_epochs"] == 5


def test_an_unreadable_settings_file_is_ignored(app_env):
    (app_env / ui_state.FILE_NAME).write_text("{not json")
    at = new_session()
    assert "train_epochs" not in at.session_state


@pytest.mark.parametrize("key, kept", [("diag_upload", False), ("ds_upload_zip", False),
                                       ("sweep_import_upload_zip", False), ("launch_button", False),
                                       ("runs_table", False), ("diag_csv_button", False),
                                       ("train_epochs", True), ("diag_method", True), ("other", False)])
def test_which_keys_are_kept(key, kept):
    assert session_keys.is_kept(key) is kept


@pytest.mark.parametrize("key, saved", [("train_epochs", True), ("dataset_settings", True),
                                        ("runs_filter_query", True), ("runs_filter_tags", True),
                                        ("runs_compare_ids", False), ("runs_confirm_delete", False),
                                        ("train_from_run", False), ("eval_split", False), ("diag_method", False)])
def test_which_keys_are_saved_to_disk(key, saved):
    assert session_keys.is_saved(key) is saved


def widget_keys(source: str):
    """(widget function name, key) of every st.<widget>(..., key="...") call with a literal or f-string key."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            for keyword in node.keywords:
                if keyword.arg == "key" and isinstance(keyword.value, (ast.Constant, ast.JoinedStr)):
                    value = keyword.value
                    text = value.value if isinstance(value, ast.Constant) else "".join(
                        part.value if isinstance(part, ast.Constant) else "{}" for part in value.values)
                    yield node.func.attr, text


@pytest.mark.parametrize("page", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ui").rglob("*.py")))
def test_unsettable_widgets_are_never_re_assigned(page):
    """A button, download button or uploader whose key were kept would crash its page (the Diagnose
    upload did: "st.session_state['diag_upload'] is read-only")."""
    for widget, key in widget_keys((ROOT / page).read_text()):
        if widget in UNSETTABLE_WIDGETS:
            assert not session_keys.is_kept(key.replace("{}", "x")), f"{page}: {widget} key {key!r} would be re-assigned"
        if widget == "dataframe" and key.startswith(session_keys.WIDGET_PREFIXES):
            assert key.endswith("_table"), f"{page}: table selections need a key ending in _table ({key})"
