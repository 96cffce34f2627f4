"""The Dataset page through app.py: settings apply with one button (no reload per slider step),
the split choices fit the dataset, the caption follows the task, and the choice carries to Train."""
from tests.apptest_support import assert_clean, open_page
from tests.synthetic import make_medmnist_npz
from tests.test_app_pages import small_dataset


def apply(at):
    return at.button(key="ds_apply_button").click().run()


def test_the_built_in_set_offers_only_the_grouped_split(app_env):
    at = open_page("ui/pages/dataset.py", small_dataset())
    assert_clean(at)
    assert at.radio(key="ds_split").options == ["Grouped by patient"]


def test_settings_apply_only_with_the_button_and_carry_to_train(app_env):
    at = open_page("ui/pages/dataset.py", small_dataset())
    at.slider(key="ds_val_fraction").set_value(0.2)
    at.selectbox(key="ds_task_builtin").set_value("subtype")
    at.run()  # a rerun without pressing Apply changes nothing
    assert at.session_state["dataset_settings"]["task"] == "binary"
    at.slider(key="ds_val_fraction").set_value(0.2)
    at.selectbox(key="ds_task_builtin").set_value("subtype")
    apply(at)
    assert_clean(at)
    settings = at.session_state["dataset_settings"]
    assert (settings["task"], settings["val_fraction"]) == ("subtype", 0.2)
    captions = " ".join(c.value for c in at.caption)
    assert "normal / bacterial / viral" in captions and "NORMAL vs PNEUMONIA" not in captions
    assert "val 20%" in at.success[0].value
    at.switch_page("ui/pages/train.py").run()
    assert any("normal / bacterial / viral" in m.value for m in at.markdown)


def test_values_restored_into_the_session_are_kept(app_env):
    restored = {**small_dataset(48)["dataset_settings"], "val_fraction": 0.25}
    at = open_page("ui/pages/dataset.py", {"dataset_settings": restored, "ds_image_size": 48, "ds_val_fraction": 0.25})
    assert_clean(at)
    assert at.selectbox(key="ds_image_size").value == 48 and at.slider(key="ds_val_fraction").value == 0.25
    assert at.session_state["dataset_settings"]["image_size"] == 48
    assert "48 px" in at.success[0].value


def test_a_dataset_with_its_own_split_offers_it(app_env, tmp_path):
    make_medmnist_npz(tmp_path / "tiny.npz")
    at = open_page("ui/pages/dataset.py")
    at.radio(key="ds_source").set_value("npz").run()
    at.text_input(key="ds_path_npz").set_value(str(tmp_path / "tiny.npz")).run()
    assert at.radio(key="ds_split").options == ["Grouped by patient", "Dataset's own split"]
    at.radio(key="ds_split").set_value("own")
    apply(at)
    assert_clean(at)
    assert at.session_state["dataset_settings"]["split"] == "own"
    assert "the dataset's own split" in at.success[0].value
