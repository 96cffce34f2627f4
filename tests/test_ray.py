"""Training on a Ray cluster (CXR_RAY_ADDRESS): a real local cluster of 2 CPUs, started for this
module with `ray start --head --block` and stopped with it. The same sweep as on the local workers,
Stop for a queued and a running run, a Ray worker killed under its run, resume, a node that cannot
see the runs folder, and no Ray at all without CXR_RAY_ADDRESS."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings.config import TrainConfig
from core.store.run_folder import Run
from core.store.runs import process_alive, RunStore
from core.workers.manager import JobManager
from tests.conftest import tiny_folder_config, trained_a_batch, wait_until

PROJECT = Path(__file__).resolve().parents[1]
CLUSTER_CPUS = 2
# One local Ray cluster at a time on this machine (two heads would compete for Ray's fixed ports, such as
# its client server's 10001): under pytest-xdist, the files that start one share a worker (conftest.SAME_WORKER).




def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The address of a local Ray cluster with 2 CPUs and no GPU, for this module."""
    folder = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must stay under 108 characters
    log = folder / "head.log"
    port = free_port()
    with open(log, "w") as output:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 f"--num-cpus={CLUSTER_CPUS}", "--num-gpus=0", f"--port={port}",
                                 "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={folder}"],
                                cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, 120,
                   "the Ray head node to start")
        assert head.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        import ray
        ray.shutdown()  # this test process's connection, if a job manager made one
        head.terminate()  # `ray start --block` stops the cluster's processes as it exits
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


@pytest.fixture
def on_ray(ray_cluster, monkeypatch) -> str:
    monkeypatch.setenv("CXR_RAY_ADDRESS", ray_cluster)
    return ray_cluster


def run_sweep_command(sweep_file: Path, runs_dir: Path, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "core", "sweep", str(sweep_file), "--runs-dir", str(runs_dir)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------- the same sweep, here and on Ray

@pytest.mark.slow
def test_the_same_sweep_runs_unchanged_on_local_workers_and_on_ray(ray_cluster, chest_folder, tmp_path):
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"name": "ray check", "base": tiny(chest_folder, seed=3).to_dict(),
                                      "axes": [{"setting": "dropout", "values": [0.2, 0.5]}]}))
    local_env = {k: v for k, v in os.environ.items() if k != "CXR_RAY_ADDRESS"}
    here = run_sweep_command(sweep_file, tmp_path / "local", local_env)
    on_ray = run_sweep_command(sweep_file, tmp_path / "ray", {**local_env, "CXR_RAY_ADDRESS": ray_cluster})

    for result, backend in ((here, "local"), (on_ray, "ray")):
        store = RunStore(tmp_path / backend)
        runs = [store.get(entry["run_id"]) for entry in json.loads(
            (store.root / "_sweeps" / f"{result['sweep_id']}.json").read_text())["runs"]]
        assert [run.state() for run in runs] == ["done", "done"]
        for run in runs:
            node = run.status()["node"]
            assert node["backend"] == backend and node["host"] == socket.gethostname()
            assert run.resources()["peak_memory_mb"] > 100  # the kernel's account of its training process
            if backend == "ray":
                assert node["ray_node_id"] and node["ip"]
                assert run.status()["trainer"]["pid"] != node["ray_worker_pid"]  # a process of its own
    keys = ("dropout", "runs", "done", "test_accuracy_mean", "val_accuracy_mean", "best_val_loss_mean")
    assert [{k: row[k] for k in keys} for row in here["results"]] == \
           [{k: row[k] for k in keys} for row in on_ray["results"]]


# ----------------------------------------------------------------------------- stop, a lost worker, resume

@pytest.mark.slow
def test_stop_a_killed_ray_worker_and_resume_on_ray(on_ray, store, chest_folder):
    manager = JobManager(store)
    assert manager.cluster is not None and manager.max_concurrent == CLUSTER_CPUS  # 1 CPU a run
    try:
        doomed = manager.submit(tiny(chest_folder, epochs=30, name="doomed"))
        stopped = manager.submit(tiny(chest_folder, epochs=500, name="stopped"))
        waiting = manager.submit(tiny(chest_folder, name="waiting"))
        # Both slots are taken: the third run waits in the queue, and Stop cancels it there.
        wait_until(lambda: store.get(stopped).status().get("node"), what="the second run on a node")
        assert store.get(waiting).state() == "queued"
        assert manager.cancel(waiting) and store.get(waiting).state() == "cancelled"

        # The Ray worker training a run is killed (at once: a 30-epoch tiny run ends in seconds): the
        # run fails with the reason, naming its node.
        killed = store.get(doomed)
        wait_until(lambda: killed.checkpoint_epoch() >= 1, what="a checkpointed epoch")
        node, trainer = killed.status()["node"], killed.status()["trainer"]
        os.kill(node["ray_worker_pid"], signal.SIGKILL)
        assert manager.wait(doomed, 60) == "failed"
        error = killed.status()["error"]
        assert f"its Ray worker on node {socket.gethostname()} ({node['ip']}) died" in error, error
        # Its training process does not go on unsupervised.
        wait_until(lambda: not process_alive(trainer["pid"], trainer["pid_start"]), 30, "the orphan to exit")

        # A running run (500 epochs: still training) stops after its current batch, asked through
        # the shared runs folder.
        running = store.get(stopped)
        wait_until(lambda: trained_a_batch(running.progress()), what="the run to train")
        assert manager.cancel(stopped)
        assert manager.wait(stopped, 60) == "cancelled"

        # Resumed, it goes on from its last completed epoch, on whichever node has room.
        interrupted_at = killed.checkpoint_epoch()
        manager.resume(doomed)
        assert manager.wait(doomed, 300) == "done"
    finally:
        manager.shutdown()
    assert [row["epoch"] for row in killed.history()] == list(range(1, 31))
    assert killed.status()["resumed_at_epochs"] == [interrupted_at]
    assert killed.status()["node"]["ray_worker_pid"] != node["ray_worker_pid"]


# ----------------------------------------------------------------------------- the runs folder and the worker command

@pytest.mark.slow
def test_a_node_that_cannot_see_the_runs_folder_fails_the_run_saying_so(on_ray, tmp_path):
    from core.workers.manager import train_in_new_process
    from core.workers.ray_backend import RayCluster
    unseen = Run(tmp_path / "not-shared" / "20260101-000000-run")
    outcome = RayCluster(on_ray, train_in_new_process).submit(unseen, 0).outcome()  # a real task on the cluster's node
    assert outcome["error"] == (f"node {socket.gethostname()} ({outcome['node']['ip']}) cannot see the runs folder "
                                f"{unseen.path.parent}: every node must reach it at the same path "
                                "(a shared file system mounted alike on every node)")


@pytest.mark.slow
def test_the_worker_command_says_it_dispatches_to_ray_and_trains_there(on_ray, store, chest_folder):
    run = store.create(tiny(chest_folder).to_dict(), name="from the queue")
    worker = subprocess.run([sys.executable, "-m", "core", "worker", "--until-empty", "--runs-dir", str(store.root)],
                            cwd=PROJECT, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    assert (f"2 at a time, dispatched as Ray tasks to the Ray cluster at {on_ray}: 1 node(s), 2 CPUs, 0 GPUs; "
            "1 CPU per run") in worker.stderr
    assert run.state() == "done" and run.status()["node"]["backend"] == "ray"


def test_without_a_ray_address_nothing_imports_ray(store):
    env = {k: v for k, v in os.environ.items() if k != "CXR_RAY_ADDRESS"}
    code = ("import sys; from core.cli import worker; worker.main(['--until-empty', '--runs-dir', sys.argv[1]]); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code, str(store.root)], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "trained here, each in a process of its own" in done.stderr


@pytest.mark.parametrize("variable, value, message", [
    ("CXR_RAY_ADDRESS", "127.0.0.1:{port}", "CXR_RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there"),
    ("CXR_RAY_CPUS_PER_RUN", "two", "CXR_RAY_CPUS_PER_RUN must be a positive number of CPUs, not 'two'"),
    ("CXR_RAY_CPUS_PER_RUN", "0", "CXR_RAY_CPUS_PER_RUN must be a positive number of CPUs, not '0'"),
])
def test_a_wrong_ray_setting_is_a_clear_error_before_anything_runs(store, monkeypatch, variable, value, message):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("CXR_RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv(variable, value.format(port=port))
    with pytest.raises((ConnectionError, ValueError)) as raised:
        JobManager(store)
    assert str(raised.value).startswith(message.format(port=port))


def tiny(folder, **overrides) -> TrainConfig:
    return tiny_folder_config(folder, **{"epochs": 1, **overrides})
