"""Streamlit inputs drawn from a setting's declaration (`core.settings.declare.Setting`): its
default, label, help, range, step, format and choices are read there, never typed on a page.
Not a page: app.py's navigation lists only the explicit pages."""
import streamlit as st

from core.present import forms
from ui import common


def start(setting, key: str, value, choices=None) -> None:
    """Give the widget under `key` its starting value (once; then the widget keeps its own)."""
    common.init_widget(key, forms.to_widget(setting, value, choices))


def setting_input(setting, key: str, where=None, *, choices=None, radio: bool = False, **extra):
    """Draw `setting` under `key` in `where` (st or a column) and return its value as the setting's
    type. `choices` narrows the offered choices, `radio` draws them as radio buttons; `extra` goes to
    the Streamlit widget (label, help, format_func, placeholder, horizontal...)."""
    where = where or st
    spec = forms.widget_spec(setting, choices)
    start(setting, key, setting.default, choices)
    label = extra.pop("label", setting.title)
    hint = " Comma-separated whole numbers." if setting.kind is list else ""
    args = {"key": key, "help": setting.help + hint, **extra}
    if spec["kind"] == "select":
        value = (where.radio if radio else where.selectbox)(label, spec["options"], **args)
    elif spec["kind"] == "checkbox":
        value = where.checkbox(label, **args)
    elif spec["kind"] == "text":
        value = where.text_input(label, **args)
    elif spec["kind"] == "slider":
        value = where.slider(label, spec["min"], spec["max"], step=spec["step"], **args)
    else:
        value = where.number_input(label, spec["min"], spec["max"], step=spec["step"], format=spec["format"],
                                   **args)
    return forms.from_widget(setting, value)


def inputs(declared: dict, names, prefix: str, cols) -> dict:
    """Draw the named settings of `declared` (name -> Setting) in turn across the columns `cols`,
    each under the key prefix + name; name -> value."""
    return {name: setting_input(declared[name], prefix + name, cols[i % len(cols)])
            for i, name in enumerate(names)}
