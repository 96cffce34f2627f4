"""The Train page through app.py: values restored into the session survive, the time estimate
from finished runs, the live view's Stop / stopped / next-run states with a real queue, the memory
cap, why a run failed, and resuming an interrupted run from its checkpoint."""

import pytest

from core.present.compare import format_count
from core.store.run_folder import ACTIVE_STATES
from core.store.runs import RunStore
from tests.apptest_support import assert_clean, assert_no_exception, open_page, texts
from tests.conftest import wait_until
from tests.synthetic import make_chest_folder
from tests.test_app_pages import small_dataset


@pytest.fixture(autouse=True)
def no_spare_process(monkeypatch):
    """The job manager the page starts keeps no idle training process waiting in these tests."""
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_values_restored_into_the_session_are_kept(app_env):
    at = open_page("pages/train.py", {**small_dataset(), "train_epochs": 3, "train_name": "kept",
                                      "train_learning_rate": 0.003})
    assert_clean(at)
    assert at.number_input(key="train_epochs").value == 3
    assert at.text_input(key="train_name").value == "kept"
    assert at.number_input(key="train_learning_rate").value == 0.003
    at.run()  # and on the next rerun
    assert at.number_input(key="train_epochs").value == 3 and at.text_input(key="train_name").value == "kept"


def shown_keys(at) -> set:
    return {w.key for w in (*at.number_input, *at.checkbox)}


def test_settings_appear_only_where_they_apply(app_env):
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    assert not shown_keys(at) & {"train_momentum", "train_nesterov", "train_min_learning_rate"}
    assert "train_patience" in shown_keys(at)
    at.selectbox(key="train_optimizer").set_value("sgd").run()
    assert {"train_momentum", "train_nesterov"} <= shown_keys(at)
    at.selectbox(key="train_optimizer").set_value("rmsprop").run()
    assert "train_momentum" in shown_keys(at) and "train_nesterov" not in shown_keys(at)
    at.selectbox(key="train_schedule").set_value("plateau").run()
    assert {"train_min_learning_rate", "train_plateau_patience", "train_plateau_factor"} <= shown_keys(at)
    assert "train_decay_rate" not in shown_keys(at)
    assert "train_focal_gamma" not in shown_keys(at)
    at.selectbox(key="train_loss").set_value("focal").run()
    assert "train_focal_gamma" in shown_keys(at)
    at.checkbox(key="train_early_stopping").uncheck().run()
    assert_clean(at)
    assert "train_patience" not in shown_keys(at)
    assert at.number_input(key="train_momentum").label == "Momentum"
    precision = at.selectbox(key="train_precision")
    assert precision.value == "auto" and "mixed_bfloat16" in precision.options


def test_without_finished_runs_the_time_is_known_after_the_first_epoch(app_env):
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    assert metric(at, "Time per epoch") == "after epoch 1"
    assert "known after the first epoch" in texts(at)
    assert "unknown" not in texts(at)


def test_the_estimate_learns_from_a_finished_run_of_the_same_model(app_env, make_run):
    make_run("done", image_size=32, epochs=3)  # seed_cnn, 2 s per epoch, 30 s in all
    at = open_page("pages/train.py", {**small_dataset(), "train_epochs": 4})
    assert_clean(at)
    assert metric(at, "Time per epoch") != "after epoch 1"
    caption = texts(at)
    assert "for 4 epochs" in caption and "same model and image size" in caption


def test_another_models_run_gives_a_rough_estimate_scaled_by_cost(app_env, make_run):
    make_run("done", image_size=32, epochs=3, arch="logistic")
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    assert metric(at, "Time per epoch").startswith("≈ ")
    assert "rough guide" in texts(at) and "MACs" in texts(at)


def test_a_run_of_another_process_reads_running_not_a_phase(app_env, make_run):
    run = make_run("running", name="elsewhere", epochs=4)
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    headline = next(m.value for m in at.markdown if "state:" in m.value)
    assert headline.endswith("state: **running**"), headline
    assert run.id in headline


@pytest.mark.slow
def test_a_stopped_run_stays_in_view_while_the_next_one_trains(app_env):
    at = open_page("pages/train.py", small_dataset())
    at.number_input(key="train_epochs").set_value(3)
    at.text_input(key="train_name").set_value("first")
    at.button(key="launch_button").click().run()
    at.number_input(key="train_epochs").set_value(1)
    at.text_input(key="train_name").set_value("second")
    at.button(key="launch_button").click().run()
    assert_clean(at)
    store = RunStore(app_env)
    first = next(r for r in store.list() if r.config()["name"] == "first")
    assert "**first**" in texts(at)  # the view stays on the first run; the second waits in the queue
    wait_until(first.history, 240, "the first run to learn an epoch")
    at.run()
    stop = next(b for b in at.button if b.key == f"stop_{first.id}")
    stop.click().run()
    assert "Stopping after the current batch" in texts(at)
    assert not [b for b in at.button if b.key == f"stop_{first.id}"]
    wait_until(lambda: first.state() not in ACTIVE_STATES, 240, "the stopped run to end")
    assert first.state() == "cancelled"
    at.run()
    assert_clean(at)
    assert "state: **cancelled**" in texts(at) and "Stopped. Kept: the best epoch" in texts(at)
    watch_next = at.button(key="train_watch_next_button")
    assert "second" in watch_next.label
    watch_next.click().run()
    assert "**second**" in next(m.value for m in at.markdown if "state:" in m.value)
    # The second run need not finish: the test's job manager is shut down with it (conftest).


def wait_for_an_empty_queue(store) -> None:
    """Until every run of the store has ended."""
    wait_until(lambda: not any(r.state() in ACTIVE_STATES for r in store.list()), 240, "an empty queue")


# ----------------------------------------------------------------------------- worker processes

@pytest.mark.slow
def test_the_memory_cap_reaches_the_submitted_run(app_env):
    at = open_page("pages/train.py", {**small_dataset(), "train_epochs": 1, "train_name": "capped"})
    at.number_input(key="train_memory_cap_mb").set_value(100).run()
    assert any("memory_cap_mb must be 0 (off) or a whole number of at least 256" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "launch_button"]  # nothing to launch until it is fixed
    at.number_input(key="train_memory_cap_mb").set_value(1024).run()
    assert_clean(at)
    at.button(key="launch_button").click().run()
    store = RunStore(app_env)
    [run] = store.list()
    assert run.config()["memory_cap_mb"] == 1024  # its training is ended with the test's job manager


def test_a_failed_run_shows_its_reason_and_what_its_process_printed(app_env, make_run):
    reason = "killed by SIGKILL, most likely out of memory: try a smaller batch size or image size"
    run = make_run("failed", name="oom")
    run.update_status(error=reason, traceback=None, exit_code=-9,
                      stderr_tail="Epoch 1/3\nallocating 4.1 GiB for a batch of 256 images")
    at = open_page("pages/train.py", {**small_dataset(), "watch_run_id": run.id})
    assert_no_exception(at)
    assert [e.value for e in at.error] == [f"The run failed: {reason}"]
    [printed] = [x for x in at.expander if x.label == "What the training process printed"]
    assert "allocating 4.1 GiB for a batch of 256 images" in printed.code[0].value
    assert not [b for b in at.button if b.key == f"train_resume_{run.id}_button"]  # no checkpoint


def test_a_run_queued_elsewhere_is_in_the_queue_and_can_be_stopped(app_env, make_run):
    shown = make_run("done", name="finished", image_size=32)
    other = make_run("running", name="from the CLI", epochs=4)
    at = open_page("pages/train.py", {**small_dataset(), "watch_run_id": shown.id})
    assert_clean(at)
    assert "from the CLI — running" in [m.value for m in at.markdown]
    stop = at.button(key=f"cancel_{other.id}")
    assert stop.label == "Stop"
    stop.click().run()
    assert other.stop_requested()  # a stop file: the process training it stops after its batch
    assert not [b for b in at.button if b.key == f"cancel_{other.id}"]
    assert "stopping…" in texts(at)


def test_the_live_view_reads_the_progress_a_training_process_writes(app_env, make_run):
    from core.ml.run_control import Progress
    run = make_run("running", name="elsewhere", epochs=4)  # 2 epochs in metrics.jsonl
    progress = Progress(epochs=4, path=run.progress_path)  # what the training process writes
    progress.update(phase="loading data", load_done=100, load_total=400)
    at = open_page("pages/train.py", small_dataset())
    assert_clean(at)
    assert "Loading images 100 / 400" in texts(at)
    assert "state: **running** (loading the images)" in texts(at)
    progress.update(phase="training", epoch=2, batch=5, batches=20, images_per_sec=812.0, eta_s=95.0,
                    batch_loss=0.4321, learning_rate=0.001)
    at.run()
    assert_clean(at)
    assert "state: **running** (training)" in texts(at)
    assert "Epoch 3 of 4" in texts(at) and "Batch 5 of 20" in texts(at)
    assert (metric(at, "Images / s"), metric(at, "Time left"), metric(at, "Batch loss")) == \
        ("812", "1 min 35 s", "0.4321")
    assert len(at.get("vega_lite_chart")) == 2  # loss and accuracy of the 2 epochs in metrics.jsonl


def interrupted_after_one_epoch(store, tmp_path, monkeypatch):
    """A real run of 2 epochs whose training stopped after the first: trained here for one epoch
    (so it has a real checkpoint), then marked the way recovery marks a run whose process died."""
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    folder = make_chest_folder(tmp_path / "xrays", n_patients=6)
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path))  # the folder is inside the data root
    config = TrainConfig(name="resumable", arch="seed_cnn", image_size=32, epochs=2, batch_size=8,
                         data_source="folder", data_path=str(folder), arch_params={"dense_units": 8})
    run = store.create(config.to_dict(), name="resumable", queued=False)
    execute_run(run, config.with_overrides({"epochs": 1}))
    assert run.checkpoint_epoch() == 1, run.status().get("error")
    run.summary_path.unlink()  # a run that never finished has no summary
    run.update_status(state="interrupted", error="the process training this run stopped before it finished")
    return run


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_checkpoint(app_env, store, tmp_path, monkeypatch):
    run = interrupted_after_one_epoch(store, tmp_path, monkeypatch)
    at = open_page("pages/train.py", {**small_dataset(), "watch_run_id": run.id})
    assert_no_exception(at)
    assert "state: **interrupted**" in texts(at)
    resume = at.button(key=f"train_resume_{run.id}_button")
    assert resume.label == "Resume from epoch 2"  # epoch 1 is done: it goes on with epoch 2
    resume.click().run()
    assert_clean(at)
    status = run.status()
    # Queued again to resume (the page's job manager may already have claimed it).
    assert status["resume"] is True and status["state"] in ACTIVE_STATES and not status.get("error")
    assert f"`{run.id}` · state: **" in texts(at) and "interrupted" not in texts(at)
    wait_for_an_empty_queue(store)
    assert run.state() == "done", run.status().get("error")
    assert run.status()["resumed_at_epochs"] == [1]
    assert [row["epoch"] for row in run.history()] == [1, 2]
    at.run()
    assert_clean(at)
    caption = texts(at)
    assert "resumed at epoch 1" in caption and "peak memory" in caption.lower() and "images/s" in caption
    assert not [b for b in at.button if b.key == f"train_resume_{run.id}_button"]


# ----------------------------------------------------------------------------- the model's size and layers

LAYERS_TITLE = "Layers: output shape, parameters and MACs"


def layers_frame(at):
    [expander] = [e for e in at.expander if e.label == LAYERS_TITLE]
    return expander.dataframe[0].value


def test_the_layers_of_the_configured_model_are_listed_under_its_counts(app_env):
    at = open_page("pages/train.py", small_dataset())  # seed_cnn at 32 px
    assert_clean(at)
    frame = layers_frame(at)
    assert frame["Type"].tolist()[:3] == ["InputLayer", "Rescaling", "Conv2D"]
    assert frame.iloc[1]["Output shape"] == "32 x 32 x 1"
    total = frame.iloc[-1]
    assert total["Layer"].startswith("Total (")
    assert total["MACs per image"] == metric(at, "MACs per image")
    assert format_count(int(total["Parameters"].replace(",", ""))) == metric(at, "Total parameters")


def test_a_cnn_preset_fills_the_parameters_and_turns_custom_when_one_changes(app_env):
    at = open_page("pages/train.py", small_dataset())
    at.selectbox(key="train_arch").set_value("cnn").run()
    assert_clean(at)
    preset = at.selectbox(key="train_cnn_preset")
    assert preset.value == "seed"  # the defaults are the seed layout
    preset.set_value("wide").run()
    assert_clean(at)
    assert at.text_input(key="train_p_cnn_filters").value == "128, 128"
    assert at.number_input(key="train_p_cnn_kernel_size").value == 5
    assert at.text_input(key="train_p_cnn_dense_layers").value == ""
    assert at.selectbox(key="train_p_cnn_head").value == "global_average"
    assert at.number_input(key="train_p_cnn_dropout").value == 0.3
    assert "GlobalAveragePooling2D" in layers_frame(at)["Type"].tolist()
    assert at.selectbox(key="train_cnn_preset").value == "wide"
    at.number_input(key="train_p_cnn_kernel_size").set_value(3).run()
    assert_clean(at)
    assert at.selectbox(key="train_cnn_preset").value == "custom"
    assert at.number_input(key="train_p_cnn_kernel_size").value == 3  # what was typed is kept
    assert at.text_input(key="train_p_cnn_filters").value == "128, 128"
    at.text_input(key="train_p_cnn_filters").set_value("").run()
    assert any("filters must be a non-empty list of whole numbers" in e.value for e in at.error)


def test_a_pretrained_transfer_model_is_measured_without_its_weights(app_env):
    at = open_page("pages/train.py", small_dataset())
    at.selectbox(key="train_arch").set_value("transfer").run()
    assert_clean(at)
    assert not [w for w in at.warning if "could not be built" in w.value]
    assert "measured with random weights" in texts(at)
    assert any(name.startswith("mobilenetv2") for name in layers_frame(at)["Layer"])
