"""Start-up: from submit to the first trained batch, and where that time goes.

Measured as bench/throughput.py measures it (the same job manager with its spare training process,
the same milestones read from the run's progress, polled every 20 ms, the spare left to finish
importing between jobs), but each job is stopped after its first batch, so rounds are short:

    .venv/bin/python bench/startup.py [--rounds 8] [--arch deep_bn_cnn] [--image-size 64]

`--profile` instead runs one run in this process, after the spare process's imports, under
cProfile up to its first trained batch, and prints the phases' times and the costliest calls:

    .venv/bin/python bench/startup.py --profile
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import MILESTONES, machine, wait_for_quiet_children, watch_start  # noqa: E402

from core.ml.data_pipeline import load_data  # noqa: E402
from core.settings.config import TrainConfig  # noqa: E402
from core.store.runs import RunStore  # noqa: E402
from core.workers.manager import JobManager  # noqa: E402


def start_once(manager: JobManager, config: TrainConfig) -> dict[str, float]:
    """Seconds from submit to each milestone of one job, which is then stopped and waited for."""
    submitted = time.perf_counter()
    run_id = manager.submit(config)
    reached = watch_start(manager, run_id, submitted)
    manager.cancel(run_id)
    manager.wait(run_id)
    return reached


def measure(config: TrainConfig, rounds: int) -> None:
    load_data(config)  # fills the dataset cache and the split cache, as earlier runs would have
    runs_dir = tempfile.mkdtemp(prefix="cxr-startup-")
    manager = JobManager(RunStore(runs_dir))
    try:
        warm_up = start_once(manager, config)  # untimed: the first spare process imports TensorFlow
        wait_for_quiet_children()
        print(f"warm-up job (untimed): submit->first batch {warm_up['first batch']:.2f} s", flush=True)
        times = []
        for round_ in range(1, rounds + 1):
            times.append(start_once(manager, config))
            wait_for_quiet_children()
            print(f"round {round_}: " + ", ".join(f"->{m} {times[-1][m]:.2f} s" for m in MILESTONES), flush=True)
    finally:
        manager.shutdown()
        shutil.rmtree(runs_dir, ignore_errors=True)
    print(f"\n{config.arch} {config.image_size}px batch {config.batch_size}; {machine()}; "
          f"load average now {os.getloadavg()[0]:.2f} (above 0.5: the cores were shared)")
    for milestone in MILESTONES:
        values = [t[milestone] for t in times]
        print(f"submit -> {milestone:13}: median {statistics.median(values):.2f} s "
              f"(range {min(values):.2f}-{max(values):.2f}, {len(values)} rounds)")


def profile(config: TrainConfig, top: int) -> None:
    """One run in this process under cProfile, from the run's arrival to its first trained batch."""
    from core.ml.run_control import Progress, RunControl
    from core.ml.training import execute_run
    from core.workers.process import warm_up
    load_data(config)
    warm_up()  # what the spare process has done before a run arrives
    marks, profiler = {}, cProfile.Profile()
    began = time.perf_counter()

    class Milestones(Progress):
        def update(self, **fields):
            now = time.perf_counter() - began
            if fields.get("phase"):
                marks.setdefault(fields["phase"], now)
            if fields.get("batch", 0) >= 1 and "first batch" not in marks:
                marks["first batch"] = now
                profiler.disable()
                control.stop_event.set()
            super().update(**fields)

    with tempfile.TemporaryDirectory(prefix="cxr-startup-") as folder:
        run = RunStore(folder).create(config.to_dict(), queued=False)
        control = RunControl(progress=Milestones(config.epochs, path=run.progress_path))
        profiler.enable()
        execute_run(run, config, control)
        profiler.disable()
    print("milestones (s from the run's arrival): " + ", ".join(f"{k} {v:.2f}" for k, v in marks.items()))
    stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
    stats.print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--arch", default="deep_bn_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    config = TrainConfig(arch=args.arch, image_size=args.image_size, epochs=3, batch_size=args.batch_size,
                         early_stopping=False).validate()
    if args.profile:
        profile(config, args.top)
    else:
        measure(config, args.rounds)


if __name__ == "__main__":
    main()
