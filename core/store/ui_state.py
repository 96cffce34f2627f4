"""The dashboard's form settings kept on disk, so what a user set survives a browser reload.

Streamlit forgets everything of a session when the tab reloads. The Dataset, Train and Sweeps
settings are saved here (beside the runs they configure) after every change and put back when a new
session starts. Plain JSON values only: nothing here is ever unpickled.
"""
from __future__ import annotations

import math
from pathlib import Path

from core.files import read_json, write_json
from core.store.runs import default_runs_dir

FILE_NAME = ".dashboard_settings.json"


def settings_path() -> Path:
    return default_runs_dir() / FILE_NAME


def is_plain(value) -> bool:
    """True for values that JSON keeps exactly (numbers, text, booleans, None, lists and dicts of them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def load(path: Path | None = None) -> dict:
    """The saved settings, or {} when there are none or the file is unreadable."""
    try:
        saved = read_json(path or settings_path(), {})
    except OSError:
        return {}
    return saved if isinstance(saved, dict) else {}


def save(values: dict, path: Path | None = None) -> None:
    write_json(path or settings_path(), {k: v for k, v in values.items() if is_plain(v)})
