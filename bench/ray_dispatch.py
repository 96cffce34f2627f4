"""What dispatching a run through Ray costs, against the local worker processes.

Trains N tiny runs (seed_cnn, 32 px, 1 epoch, a synthetic folder) one after another through a job
manager: with its local training processes (with and without the spare process that has TensorFlow
already imported), then as Ray tasks on a local Ray cluster started here (`ray start --head`, 2 CPUs).
Prints, per way, the time from submit to the start of training (the training process entering its
run) and to done: the first run and the median of the others, and the per-run overhead of Ray.

    .venv/bin/python bench/ray_dispatch.py [--runs 4]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))


def tiny_config(folder: Path, seed: int):
    from core.settings.config import TrainConfig
    return TrainConfig(arch="seed_cnn", image_size=32, batch_size=8, epochs=1, seed=seed, early_stopping=False,
                       arch_params={"dense_units": 16}, data_source="folder", data_path=str(folder))


def time_runs(store_dir: Path, folder: Path, runs: int, spare: bool) -> list[tuple[float, float]]:
    """(submit -> training process starts its run, submit -> done) in seconds, per run, one at a time."""
    from core.store.runs import RunStore
    from core.workers.manager import SPARE_DELAY_S, JobManager
    manager = JobManager(RunStore(store_dir), max_concurrent=1, spare=spare)
    try:
        if manager.keep_spare:
            time.sleep(SPARE_DELAY_S + 8)  # let the first spare import TensorFlow, as a dashboard's has
        timings = []
        for seed in range(runs):
            run_id = manager.submit(tiny_config(folder, seed))
            assert manager.wait(run_id, 600) == "done", manager.store.get(run_id).status().get("error")
            status = manager.store.get(run_id).status()
            timings.append((status["started"] - status["created"], status["finished"] - status["created"]))
            if manager.keep_spare:
                time.sleep(8)  # its next spare is ready, as between runs people submit by hand
        return timings
    finally:
        manager.shutdown()


def start_ray_head(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "head.log"
    with open(log, "w") as output:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 "--num-cpus=2", "--num-gpus=0", f"--port={port}", "--disable-usage-stats",
                                 "--include-dashboard=false", f"--temp-dir={folder}"],
                                cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        if head.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head node did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return head, f"127.0.0.1:{port}"


def summary(timings: list[tuple[float, float]]) -> dict:
    rest = timings[1:] or timings
    return {"first_start": timings[0][0], "start": statistics.median(t[0] for t in rest),
            "first_done": timings[0][1], "done": statistics.median(t[1] for t in rest)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    from tests.synthetic import make_chest_folder
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as temp:
        temp = Path(temp)
        os.environ["CXR_CACHE_DIR"] = str(temp / "cache")
        folder = make_chest_folder(temp / "xrays", n_patients=8)
        results = {"local, spare process": summary(time_runs(temp / "local-spare", folder, args.runs, True)),
                   "local, fresh process": summary(time_runs(temp / "local", folder, args.runs, False))}
        head, address = start_ray_head(temp / "ray")
        try:
            os.environ["CXR_RAY_ADDRESS"] = address
            results["Ray task (local cluster)"] = summary(time_runs(temp / "ray-runs", folder, args.runs, False))
        finally:
            import ray
            ray.shutdown()
            head.terminate()
            head.wait(60)
    print(f"{args.runs} tiny runs one after another; seconds from submit (first run | median of the others)")
    print(f"{'way':28} {'to training start':>22} {'to done':>20}")
    for way, row in results.items():
        print(f"{way:28} {row['first_start']:9.2f} | {row['start']:9.2f} {row['first_done']:9.2f} | {row['done']:8.2f}")
    fresh, on_ray = results["local, fresh process"], results["Ray task (local cluster)"]
    print(f"Ray dispatch overhead per run (median, against a fresh local process): "
          f"{on_ray['start'] - fresh['start']:+.2f} s to start, {on_ray['done'] - fresh['done']:+.2f} s to done; "
          f"first run {on_ray['first_start'] - fresh['first_start']:+.2f} s to start")


if __name__ == "__main__":
    main()
