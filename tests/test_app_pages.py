"""Every dashboard page through Streamlit's AppTest: empty store, finished / failed / running runs,
bad input, and a real (tiny) training launched from the Train page."""

import pytest
from streamlit.testing.v1 import AppTest

from core.store.runs import RunStore
from tests.apptest_support import APP, TIMEOUT, assert_clean, open_page, texts  # noqa: F401 - shared
from tests.conftest import wait_until

PAGES = ("pages/home.py", "pages/dataset.py", "pages/train.py", "pages/sweeps.py", "pages/studies.py", "pages/runs.py",
         "pages/evaluate.py", "pages/diagnose.py")


def small_dataset(image_size: int = 32) -> dict:
    from core.present import forms
    return {"dataset_settings": {**forms.default_dataset_settings(), "image_size": image_size}}


# ----------------------------------------------------------------------------- empty store

@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_an_empty_run_store(app_env, page):
    at = open_page(page, small_dataset())
    assert_clean(at)
    assert at.title, "every page has a title"


def test_empty_states_say_what_to_do(app_env):
    for page in ("pages/home.py", "pages/runs.py", "pages/evaluate.py"):
        assert "go to **Train**" in texts(open_page(page)), page


def test_home_shows_the_dataset_and_the_clinical_use_note(app_env):
    at = open_page("pages/home.py")
    assert "not for clinical use" in texts(at)
    assert "Built-in chest X-rays" in texts(at)


# ----------------------------------------------------------------------------- with runs

@pytest.fixture
def mixed_runs(app_env, make_run):
    """Two finished runs that differ in activation and dropout, a failed and a running one."""
    return {"done_a": make_run("done", name="relu", seed=1, image_size=32),
            "done_b": make_run("done", name="elu", seed=2, image_size=32, dropout=0.4,
                               arch_params={"activation": "elu"}),
            "failed": make_run("failed", name="broken", error="ValueError: out of memory"),
            "running": make_run("running", name="live", epochs=4)}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_finished_failed_and_running_runs(mixed_runs, page):
    at = open_page(page, small_dataset())
    assert not at.exception, [e.value for e in at.exception]


def test_home_lists_the_queue_and_recent_runs(mixed_runs):
    at = open_page("pages/home.py")
    assert "**live** — running" in texts(at)
    recent = at.dataframe[0].value.set_index("name")
    assert set(recent.index) == {"relu", "elu", "broken", "live"}
    # An empty metric cell reads "—", as in the comparison's tables (not Streamlit's "None").
    assert recent.loc["live", "test_accuracy"] == "—" and recent.loc["broken", "test_auc"] == "—"
    assert recent.loc["relu", "test_accuracy"] == f"{mixed_runs['done_a'].describe()['test_accuracy']:.3f}"


def test_home_says_the_time_left_of_each_run_and_of_the_queue(mixed_runs, make_run):
    from core.files import write_json
    write_json(mixed_runs["running"].progress_path, {"phase": "training", "eta_s": 95.0})
    make_run("queued", name="next", epochs=3, image_size=32)  # as the finished runs: 3 epochs of 2 s in 30 s
    at = open_page("pages/home.py")
    assert_clean(at)
    shown = texts(at)
    assert "**live** — running, epoch 3 of 4 · about 1 min 35 s left" in shown
    assert "**next** — queued · about 2 min 5 s left" in shown
    assert "2 runs queued or running: the last should end in about 2 min 5 s" in shown


def test_runs_page_table_and_default_comparison(mixed_runs):
    at = open_page("pages/runs.py")
    assert_clean(at)  # the failed run is not compared by default, so no error shows yet
    table = at.dataframe(key="runs_table").value
    assert len(table) == 4
    assert table.set_index("name").loc["broken", "state"] == "failed"
    # The two finished runs are compared by default: metrics and the settings that differ.
    assert set(at.multiselect(key="runs_compare_ids").value) == {mixed_runs["done_a"].id, mixed_runs["done_b"].id}
    frames = [d.value for d in at.dataframe]
    diff = next(f for f in frames if "arch_params.activation" in f.index)
    assert set(diff.index) >= {"arch_params.activation", "dropout"} and "epochs" not in diff.index
    assert any("accuracy" in f.index for f in frames)


def test_runs_page_filters_and_shows_a_failed_runs_error(mixed_runs):
    at = open_page("pages/runs.py")
    at.multiselect(key="runs_filter_states").set_value(["failed"]).run()
    assert at.dataframe(key="runs_table").value["name"].tolist() == ["broken"]
    at.multiselect(key="runs_compare_ids").set_value([mixed_runs["failed"].id, mixed_runs["done_a"].id]).run()
    assert not at.exception
    assert any("out of memory" in e.value for e in at.error)


def test_runs_page_deletes_after_confirmation(mixed_runs, app_env):
    at = open_page("pages/runs.py")
    # AppTest cannot click table rows, so the selection is what the table would report.
    at.session_state["runs_confirm_delete"] = [mixed_runs["failed"].id]
    at.run()
    at.button(key="runs_confirm_button").click().run()
    assert not at.exception
    assert mixed_runs["failed"].id not in {r.id for r in RunStore(app_env).list()}
    assert len(at.dataframe(key="runs_table").value) == 3


def test_evaluate_page_threshold_slider_updates_the_metrics(mixed_runs):
    at = open_page("pages/evaluate.py")
    assert_clean(at)
    assert at.selectbox(key="eval_run").value in {mixed_runs["done_a"].id, mixed_runs["done_b"].id}
    accuracy = next(m for m in at.metric if m.label.startswith("Accuracy @ threshold "))  # the run's own
    before = accuracy.value
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("eval_threshold_"))).set_value(0.99).run()
    after = next(m for m in at.metric if m.label == "Accuracy @ threshold 0.99").value  # the label follows
    assert before != after  # at 0.99 nearly everything is called NORMAL
    # These runs were written without a model file: the config and the model card, no model or export.
    assert [b.label for b in at.get("download_button")] == ["Download config", "Model card (.md)",
                                                            "Model card (.html)"]
    assert next(b for b in at.button if b.label == "Export SavedModel + TFLite").disabled


def test_evaluate_page_opens_the_run_named_in_the_url(mixed_runs):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = mixed_runs["done_b"].id
    at.run()
    at.switch_page("pages/evaluate.py").run()
    assert at.selectbox(key="eval_run").value == mixed_runs["done_b"].id


# ----------------------------------------------------------------------------- dataset page

def test_dataset_page_shows_counts_overlap_check_and_samples(app_env):
    at = open_page("pages/dataset.py", small_dataset())
    assert_clean(at)
    assert [m.label for m in at.metric][:3] == ["Images", "Patients", "Classes"]
    assert any("Overlap check passed" in s.value for s in at.success)
    assert len(at.get("image")) == 2  # one sample row per class


def test_dataset_page_reports_a_bad_folder_without_crashing(app_env, tmp_path):
    at = open_page("pages/dataset.py")
    at.radio(key="ds_source").set_value("folder").run()
    assert any("Enter a path" in i.value for i in at.info)
    at.text_input(key="ds_path_folder").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_dataset_settings_carry_over_to_the_train_page(app_env):
    at = open_page("pages/dataset.py", small_dataset())
    at.selectbox(key="ds_task_builtin").set_value("subtype")
    at.button(key="ds_apply_button").click().run()
    at.switch_page("pages/train.py").run()
    assert any("normal / bacterial / viral" in m.value for m in at.markdown)


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
def test_launching_a_tiny_training_from_the_train_page_creates_a_run(app_env):
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    assert {m.label for m in at.metric} >= {"Trainable parameters", "MACs per image", "Time per epoch"}
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch_size").set_value(64)
    at.text_input(key="train_name").set_value("tiny")
    at.button(key="launch_button").click().run()
    assert_clean(at)
    runs = RunStore(app_env).list()
    assert [r.config()["name"] for r in runs] == ["tiny"]
    run = runs[0]
    wait_until(lambda: run.state() not in ("queued", "running"), 240, "the run to end")
    assert run.state() == "done", run.status()
    assert len(run.history()) == 1 and run.summary()["test"]["accuracy"] > 0.5
    at.run()  # the live view now shows the finished run and its curves
    assert any(m.label.startswith("Test accuracy @ threshold ") for m in at.metric)  # the run's own, named
    assert len(at.get("vega_lite_chart")) >= 2
    # The real run on the Evaluate page: its misclassified images, plain and with Grad-CAM.
    at.switch_page("pages/evaluate.py").run()
    assert_clean(at)
    gallery = len(at.get("image"))
    assert gallery > 0
    if [c for c in at.checkbox if c.key == "eval_gradcam"]:
        at.checkbox(key="eval_gradcam").check().run()
        assert_clean(at)
        assert len(at.get("image")) == gallery


def test_train_page_rejects_a_bad_setting_with_a_message(app_env):
    at = open_page("pages/train.py", small_dataset())
    at.selectbox(key="train_arch").set_value("mlp").run()
    at.text_input(key="train_p_mlp_hidden_units").set_value("256, lots").run()
    assert not at.exception
    assert any("hidden_units" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "launch_button"]


def test_train_page_loads_the_recommended_recipe_and_an_earlier_runs_settings(app_env, make_run):
    earlier = make_run("done", name="earlier", image_size=64, epochs=7, optimizer="sgd", dropout=0.5)
    at = open_page("pages/train.py", small_dataset())
    at.button(key="train_recipe_button").click().run()
    assert_clean(at)
    assert at.selectbox(key="train_arch").value == "deep_bn_cnn"
    assert at.session_state["dataset_settings"]["image_size"] == 96
    at.selectbox(key="train_from_run").set_value(earlier.id).run()
    at.button(key="train_from_run_button").click().run()
    assert_clean(at)
    assert (at.selectbox(key="train_arch").value, at.number_input(key="train_epochs").value,
            at.selectbox(key="train_optimizer").value) == ("seed_cnn", 7, "sgd")
    assert at.number_input(key="train_p_seed_cnn_dropout").value == 0.5
    assert at.session_state["dataset_settings"]["image_size"] == 64


def test_rerun_from_the_runs_page_opens_the_train_form_with_that_runs_settings(app_env, make_run):
    earlier = make_run("done", name="to-repeat", image_size=64, epochs=9, optimizer="rmsprop", dropout=0.3)
    at = open_page("pages/train.py", {"rerun_config": earlier.config()})
    assert_clean(at)
    assert (at.number_input(key="train_epochs").value, at.selectbox(key="train_optimizer").value) == (9, "rmsprop")
    assert at.session_state["dataset_settings"]["image_size"] == 64
    assert any("to-repeat" in m.value for m in at.info)
    assert "rerun_config" not in at.session_state  # used once


def test_reruns_leave_keras_state_alone_for_background_training(app_env):
    """Streamlit clears the Keras session after each run unless the app stops it; a clear in
    the middle of a job's model build gives layers duplicate names and fails the run."""
    import keras
    open_page("pages/home.py")  # app.py installs the protection
    layer = keras.layers.Dense(2)
    open_page("pages/runs.py")  # more script runs finish in between
    assert keras.layers.Dense(2).name != layer.name


def test_dataset_page_loads_a_medmnist_npz_by_path(app_env, tmp_path):
    from tests.synthetic import make_medmnist_npz
    path = make_medmnist_npz(tmp_path / "tiny_mnist.npz")
    at = open_page("pages/dataset.py")
    at.radio(key="ds_source").set_value("npz").run()
    at.text_input(key="ds_path_npz").set_value(str(path)).run()
    at.radio(key="ds_split").set_value("own")
    at.button(key="ds_apply_button").click().run()
    assert_clean(at)
    assert [m.value for m in at.metric][:3] == ["100", "100", "3"]
    settings = at.session_state["dataset_settings"]
    assert (settings["data_source"], settings["task"], settings["split"]) == ("npz", "classes", "own")


def test_dataset_page_loads_a_zip_and_reports_skipped_files(app_env, tmp_path):
    import shutil

    from tests.synthetic import make_chest_folder
    folder = make_chest_folder(tmp_path / "xrays", n_patients=6)
    (folder / "NORMAL" / "notes.txt").write_text("not an image")
    archive = shutil.make_archive(str(tmp_path / "xrays"), "zip", folder)
    at = open_page("pages/dataset.py")
    at.radio(key="ds_source").set_value("zip").run()
    at.text_input(key="ds_path_zip").set_value(archive).run()
    assert_clean(at)
    assert [m.value for m in at.metric][:4] == ["24", "12", "2", "1"]
    skipped = at.dataframe[-1].value
    assert skipped["reason"].tolist() == ["not an image file extension"]
