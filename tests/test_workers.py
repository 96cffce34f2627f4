"""Training in worker processes, with real processes and signals: deaths, restarts, two managers on
one store, resume, memory cap, reproducibility of concurrent runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings.config import TrainConfig
from core.store.runs import RunStore
from core.workers.manager import JobManager
from tests.conftest import tiny_folder_config, trained_a_batch, wait_until
from tests.synthetic import make_chest_folder

PROJECT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # real worker processes, each importing TensorFlow and training


@pytest.fixture(autouse=True)
def spare_process(monkeypatch):
    monkeypatch.setenv("CXR_SPARE_PROCESS", "1")  # as the dashboard and `python -m core worker` run




def training_pid(store: RunStore, run_id: str) -> int:
    """The pid of the process training `run_id`, once it is in its training loop."""
    run = store.get(run_id)
    wait_until(lambda: trained_a_batch(run.progress()), what=f"{run_id} to train")
    return run.status()["trainer"]["pid"]


def stopped(worker: subprocess.Popen, timeout: float = 60) -> int:
    """The worker's exit code once it has stopped; killed (and failing the test) if it hangs."""
    try:
        return worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        raise


def start_worker(store: RunStore, *args: str) -> subprocess.Popen:
    """`python -m core worker` on `store` in a process of its own (a headless worker, or a dashboard's
    workers: the same code)."""
    return subprocess.Popen([sys.executable, "-m", "core", "worker", "--runs-dir", str(store.root), *args],
                            cwd=PROJECT, env=os.environ.copy(), stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------- a training process dies

# A kill -9 on a machine with memory to spare is not called out of memory (core.workers.oom).
@pytest.mark.parametrize("how, words", [(signal.SIGKILL, "killed by SIGKILL (by another process or the user; "
                                                         "memory was not short: peak "),
                                        (signal.SIGSEGV, "segmentation fault")])
def test_a_killed_training_process_fails_its_run_with_the_reason_and_the_queue_goes_on(store, chest_folder,
                                                                                          how, words):
    manager = JobManager(store)
    try:
        doomed = manager.submit(tiny(chest_folder, epochs=200))
        after = manager.submit(tiny(chest_folder, epochs=1))
        os.kill(training_pid(store, doomed), how)
        assert manager.wait(doomed, 60) == "failed"
        status = store.get(doomed).status()
        assert words in status["error"] and status["exit_code"] == -how
        assert "out of memory" not in status["error"]
        # What the process printed last, without TensorFlow's start-up banner (may leave nothing).
        assert "stderr_tail" in status and "cuda" not in status["stderr_tail"].lower()
        assert status["resources"]["peak_memory_mb"] > 100  # the kernel's account of the dead process
        assert manager.wait(after, 120) == "done"  # the same manager trains the next run
    finally:
        manager.shutdown()


def test_a_run_over_its_memory_cap_is_stopped_cleanly(store, chest_folder):
    manager = JobManager(store)
    try:
        # TensorFlow alone takes more than 300 MB: the cap stops the run, not the machine.
        capped = manager.submit(tiny(chest_folder, memory_cap_mb=300))
        assert manager.wait(capped, 60) == "failed"
        assert "above this run's memory cap of 300 MB" in store.get(capped).status()["error"]
        assert manager.wait(manager.submit(tiny(chest_folder, epochs=1)), 120) == "done"
    finally:
        manager.shutdown()


# ----------------------------------------------------------------------------- restarts lose nothing

def test_a_killed_manager_loses_no_run_and_an_interrupted_one_resumes(store, chest_folder):
    worker = start_worker(store)
    running = store.create(tiny(chest_folder, epochs=30, name="long").to_dict(), name="long")
    wait_until(lambda: store.get(running.id).checkpoint_epoch() >= 2, what="two checkpointed epochs")
    queued = [store.create(tiny(chest_folder, epochs=1, seed=i).to_dict(), name=f"q{i}").id for i in range(3)]
    worker.send_signal(signal.SIGKILL)  # the way the OOM killer would kill a dashboard
    worker.wait()
    # Its training process notices and leaves the run interrupted; the queue is untouched.
    assert wait_until(lambda: running.state() == "interrupted", 30, "the orphaned run to stop")
    assert all(store.get(run_id).state() == "queued" for run_id in queued)

    restarted = start_worker(store, "--until-empty")
    assert stopped(restarted, 600) == 0, restarted.stderr.read()
    assert [store.get(run_id).state() for run_id in queued] == ["done"] * 3
    assert len(list(store.get(queued[0]).path.glob("claim.*"))) == 1

    interrupted_at = running.checkpoint_epoch()
    manager = JobManager(store)
    try:
        manager.resume(running.id)
        assert manager.wait(running.id, 300) == "done"
    finally:
        manager.shutdown()
    epochs = [row["epoch"] for row in running.history()]
    assert epochs == list(range(1, 31))  # one continuous metrics file
    assert running.status()["resumed_at_epochs"] == [interrupted_at]
    assert running.summary()["epochs_run"] == 30


def test_two_managers_on_one_store_train_each_run_exactly_once(store, chest_folder):
    first, second = start_worker(store), start_worker(store)
    try:
        run_ids = [store.create(tiny(chest_folder, epochs=1, seed=i).to_dict(), name=f"r{i}").id for i in range(4)]
        wait_until(lambda: all(store.get(r).state() == "done" for r in run_ids), 600, "four runs")
    finally:
        for worker in (first, second):
            worker.send_signal(signal.SIGTERM)
        exits = [stopped(worker) for worker in (first, second)]
    assert exits == [130, 130]  # both stopped cleanly
    for run_id in run_ids:
        run = store.get(run_id)
        assert [row["epoch"] for row in run.history()] == [1]  # a second training would add rows
        assert len(list(run.path.glob("claim.*"))) == 1
    trainers = {store.get(r).status()["trainer"]["pid"] for r in run_ids}
    assert len(trainers) == 4  # a process per run
    workers = {store.get(r).status()["worker"]["pid"] for r in run_ids}
    assert workers <= {first.pid, second.pid}


def test_a_run_submitted_from_the_command_line_is_trained_by_a_worker(store, chest_folder):
    submitted = subprocess.run([sys.executable, "-m", "core", "train", "--runs-dir", str(store.root), "--submit",
                                "--arch", "seed_cnn", "--image-size", "32", "--epochs", "1",
                                "--data-source", "folder", "--data-path", str(chest_folder)],
                               cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    assert store.get(run_id).state() == "queued"
    worker = start_worker(store, "--until-empty")
    assert stopped(worker, 300) == 0
    assert store.get(run_id).state() == "done"


# ----------------------------------------------------------------------------- stop and reproducibility

def test_stop_ends_a_run_within_its_epoch_whichever_process_asks(store, tmp_path):
    # An epoch of a few hundred one-image batches lasts seconds, far longer than progress.json's write
    # interval: the test sees it mid-epoch. (With the 16 batches of chest_folder the whole epoch could
    # end between two writes, and its "training, batch >= 1" was then never on disk to be seen.)
    folder = make_chest_folder(tmp_path / "xrays", n_patients=8, images_per_patient=12)
    manager = JobManager(store)
    try:
        run_id = manager.submit(tiny(folder, epochs=1, image_size=64, batch_size=1))
        training_pid(store, run_id)
        batches = store.get(run_id).progress()["batches"]
        assert batches >= 100
        # Another process (say, a second dashboard on the same runs folder) presses Stop.
        assert RunStore(store.root).request_stop(store.get(run_id), "another-dashboard")
        assert manager.wait(run_id, 60) == "cancelled"
        last = store.get(run_id).history()[-1]
        assert last["partial"] is True and last["batches_done"] < batches
    finally:
        manager.shutdown()


def test_concurrent_runs_of_one_config_give_identical_metrics(store, chest_folder):
    manager = JobManager(store, max_concurrent=2)
    try:
        config = tiny(chest_folder, epochs=3, seed=11)
        first, second = manager.submit(config), manager.submit(config)
        assert manager.wait(first, 300) == manager.wait(second, 300) == "done"
    finally:
        manager.shutdown()
    a, b = store.get(first), store.get(second)
    assert a.status()["started"] < b.status()["finished"] and b.status()["started"] < a.status()["finished"]
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert [[row[k] for k in keys] for row in a.history()] == [[row[k] for k in keys] for row in b.history()]


def tiny(folder, **overrides) -> TrainConfig:
    return tiny_folder_config(folder, **{"epochs": 2, **overrides})
