"""Inputs drawn from a setting's declaration: which widget, its range, step and format
(core.present.forms), values to and from the widget, and every declared setting drawn for real by
pages/widgets.py."""
import pytest
from streamlit.testing.v1 import AppTest

from core.present import forms
from core.settings.architectures import ARCHITECTURES
from core.settings.config import AUGMENTATION_SETTINGS, SETTINGS
from core.settings.declare import Setting


def test_the_widget_follows_the_declaration():
    assert forms.widget_spec(SETTINGS["optimizer"]) == {"kind": "select", "options": list(SETTINGS["optimizer"].choices)}
    assert forms.widget_spec(SETTINGS["batch_size"])["options"] == [4, 8, 16, 32, 64, 128, 256]
    assert forms.widget_spec(SETTINGS["task"], choices=("classes",))["options"] == ["classes"]
    assert forms.widget_spec(SETTINGS["nesterov"]) == {"kind": "checkbox"}
    assert forms.widget_spec(SETTINGS["name"]) == {"kind": "text"}
    assert forms.widget_spec(Setting("hidden_units", [256, 128], "Units."))["kind"] == "text"
    assert forms.widget_spec(SETTINGS["epochs"]) == {"kind": "number", "min": 1, "max": 500, "step": 1, "format": None}
    assert forms.widget_spec(SETTINGS["learning_rate"]) == {"kind": "number", "min": 1e-6, "max": 1.0,
                                                            "step": 1e-4, "format": "%.6f"}
    assert forms.widget_spec(AUGMENTATION_SETTINGS["zoom"]) == {"kind": "slider", "min": 0.0, "max": 0.5,
                                                                "step": 0.05, "format": "%.4g"}


def test_an_off_value_below_the_range_can_be_entered():
    spec = forms.widget_spec(SETTINGS["memory_cap_mb"])
    assert (spec["min"], spec["max"], spec["step"]) == (0, None, 256)


def test_a_float_without_a_step_gets_one_that_fits_its_range():
    assert forms.widget_spec(Setting("dropout", 0.2, "Rate.", min=0.0, max=0.9))["step"] == 0.05
    assert forms.widget_spec(Setting("width", 1.0, "Multiplier.", min=0.25, max=4.0))["step"] == 0.25


def test_values_go_into_the_widget_as_it_holds_them():
    assert forms.to_widget(Setting("hidden_units", [256, 128], "Units."), [64, 32]) == "64, 32"
    assert forms.to_widget(SETTINGS["batch_size"], 100) == 128  # the nearest offered size
    assert forms.to_widget(SETTINGS["batch_size"], 64) == 64
    assert forms.to_widget(SETTINGS["task"], "binary", choices=("classes",)) == "classes"
    assert forms.to_widget(SETTINGS["learning_rate"], 1) == 1.0 and type(forms.to_widget(SETTINGS["learning_rate"], 1)) is float
    assert forms.to_widget(SETTINGS["epochs"], 7.0) == 7 and type(forms.to_widget(SETTINGS["epochs"], 7.0)) is int
    assert forms.to_widget(SETTINGS["split_seed"], None) is None


def test_values_come_out_of_the_widget_as_the_settings_type():
    units = Setting("hidden_units", [256, 128], "Units.", min=1)
    assert forms.from_widget(units, "64, 32") == [64, 32]
    assert forms.from_widget(SETTINGS["weight_decay"], 0) == 0.0
    # what the declaration refuses is left as typed, so validating the config names the problem
    assert forms.from_widget(units, "64, lots") == "64, lots"
    assert forms.from_widget(SETTINGS["memory_cap_mb"], 100) == 100


def every_declared_setting():
    from core.settings.architectures import ARCHITECTURES
    from core.settings.config import AUGMENTATION_SETTINGS, SETTINGS
    from ui import widgets
    drawn = {}
    for name, setting in SETTINGS.items():
        drawn[name] = widgets.setting_input(setting, "t_" + name)
    for name, setting in AUGMENTATION_SETTINGS.items():
        drawn["augmentation." + name] = widgets.setting_input(setting, "t_aug_" + name)
    for arch in ARCHITECTURES.values():
        for param in arch.params:
            drawn[f"{arch.name}.{param.name}"] = widgets.setting_input(param, f"t_{arch.name}_{param.name}")
    import streamlit as st
    st.session_state["drawn"] = drawn


@pytest.fixture(scope="module")
def drawn_app():
    at = AppTest.from_function(every_declared_setting, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_declared_setting_is_drawn_at_its_default(drawn_app):
    drawn = drawn_app.session_state["drawn"]
    assert {k: v for k, v in drawn.items() if "." not in k} == {n: s.default for n, s in SETTINGS.items()}
    for arch in ARCHITECTURES.values():
        for param in arch.params:
            assert drawn[f"{arch.name}.{param.name}"] == param.default, (arch.name, param.name)
    assert all(drawn["augmentation." + n] == s.default for n, s in AUGMENTATION_SETTINGS.items())


def test_the_widgets_carry_the_declared_label_help_and_range(drawn_app):
    epochs = drawn_app.number_input(key="t_epochs")
    assert (epochs.label, epochs.help, epochs.min, epochs.max) == ("Epochs", SETTINGS["epochs"].help, 1, 500)
    assert drawn_app.selectbox(key="t_batch_size").options == ["4", "8", "16", "32", "64", "128", "256"]
    zoom = drawn_app.slider(key="t_aug_zoom")
    assert (zoom.label, zoom.min, zoom.max, zoom.step) == ("Zoom (fraction)", 0.0, 0.5, 0.05)
    assert drawn_app.text_input(key="t_mlp_hidden_units").value == "256, 128"
    assert drawn_app.checkbox(key="t_deep_cnn_batch_norm").value is True


def test_a_typed_list_comes_back_as_numbers_and_a_bad_one_as_typed(drawn_app):
    drawn_app.text_input(key="t_mlp_hidden_units").set_value("64, 32").run()
    assert drawn_app.session_state["drawn"]["mlp.hidden_units"] == [64, 32]
    drawn_app.text_input(key="t_mlp_hidden_units").set_value("64, lots").run()
    assert drawn_app.session_state["drawn"]["mlp.hidden_units"] == "64, lots"
