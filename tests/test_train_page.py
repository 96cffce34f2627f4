"""The Train page through app.py: values restored into the session survive, the time estimate
from finished runs, and the live view's Stop / stopped / next-run states with a real queue."""
import time

from core.runs import RunStore
from tests.apptest_support import assert_clean, open_page, texts
from tests.test_app_pages import small_dataset


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_values_restored_into_the_session_are_kept(app_env):
    at = open_page("pages/train.py", {**small_dataset(), "train_epochs": 3, "train_name": "kept",
                                      "train_lr": 0.003})
    assert_clean(at)
    assert at.number_input(key="train_epochs").value == 3
    assert at.text_input(key="train_name").value == "kept"
    assert at.number_input(key="train_lr").value == 0.003
    at.run()  # and on the next rerun
    assert at.number_input(key="train_epochs").value == 3 and at.text_input(key="train_name").value == "kept"


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
    deadline = time.monotonic() + 240
    while not first.history() and time.monotonic() < deadline:  # let it learn an epoch
        time.sleep(0.5)
    at.run()
    stop = next(b for b in at.button if b.key == f"stop_{first.id}")
    stop.click().run()
    assert "Stopping after the current batch" in texts(at)
    assert not [b for b in at.button if b.key == f"stop_{first.id}"]
    while first.state() in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.state() == "cancelled"
    at.run()
    assert_clean(at)
    assert "state: **cancelled**" in texts(at) and "Stopped. Kept: the best epoch" in texts(at)
    watch_next = at.button(key="train_watch_next_button")
    assert "second" in watch_next.label
    watch_next.click().run()
    assert "**second**" in next(m.value for m in at.markdown if "state:" in m.value)
    wait_for_an_empty_queue(store)


def wait_for_an_empty_queue(store) -> None:
    """Let the second run end so the test leaves no training behind."""
    deadline = time.monotonic() + 240
    while any(r.state() in ("queued", "running") for r in store.list()) and time.monotonic() < deadline:
        time.sleep(0.5)
