"""Training throughput: a bare `model.fit` against the same training through the worker-process path.

Both train the same model on the same data with the same tf.data pipeline, alternating which goes
first each round, so any drift of the machine hits both. The bare fit runs in this process; the job
goes through `JobManager(RunStore(tmp))`, which trains it in a process of its own
(`python -m core.workers.process -`), its per-epoch seconds read from the run's metrics.jsonl.
Prints steady-state images/s (first epoch, with graph tracing, left out) and the ratio job/bare
(target >= 0.97), and the overhead from submit to the first trained batch (target <= 3 s).

    .venv/bin/python bench/throughput.py [--rounds 6] [--epochs 3] [--arch deep_bn_cnn] [--image-size 64]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ml.data_pipeline import load_data, make_tf_dataset  # noqa: E402
from core.ml.training import _compile, configure_devices, learning_rate_schedule  # noqa: E402
from core.settings.config import TrainConfig  # noqa: E402
from core.store.run_folder import ACTIVE_STATES  # noqa: E402
from core.store.runs import RunStore
from core.workers.manager import JobManager  # noqa: E402

PROGRESS_POLL_S = 0.02
# Start-up milestones of a job, as its progress shows them: phase "loading data" (a training process
# has the run), phase "training" (data loaded, model built, batch 0), phase "training" with batch >= 1.
MILESTONES = ("loading data", "training", "first batch")
QUIET_POLL_S = 0.5
QUIET_CPU_FRACTION = 0.05   # children using less than 5% of one core: the spare has finished importing
QUIET_TIMEOUT_S = 120.0


@dataclass
class JobResult:
    images_per_sec: float
    to_loading_s: float       # submit -> progress shows phase "loading data" (a training process has the run)
    to_training_s: float      # submit -> progress shows phase "training" (model built, batch 0)
    to_first_batch_s: float   # submit -> progress shows phase "training" with batch >= 1
    device: str | None


def bare_fit(config: TrainConfig, dataset, split) -> float:
    """images/s of model.fit alone, timed per epoch by the lightest possible callback."""
    import keras

    from core.ml import models
    keras.utils.set_random_seed(config.seed)
    configure_devices()
    n_classes = len(dataset.class_names)
    train_ds = make_tf_dataset(dataset.images[split.train], dataset.labels[split.train], n_classes,
                               config.batch_size, True, config.seed)
    val_ds = make_tf_dataset(dataset.images[split.val], dataset.labels[split.val], n_classes,
                             config.batch_size, False, config.seed)
    model = models.build_model(config.arch, config.image_size, config.channels, n_classes, config.arch_params)
    steps = -(-len(split.train) // config.batch_size)
    _compile(model, config, learning_rate_schedule(config, steps, config.epochs))
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[EpochTimer()],
              shuffle=False, verbose=0)
    return len(split.train) * (len(times) - 1) / sum(times[1:])


def milestones_shown(progress: dict) -> tuple[str, ...]:
    """The start-up milestones a progress reading shows as reached (each implies those before it)."""
    phase = progress.get("phase")
    if progress.get("history") or (phase == "training" and progress.get("batch", 0) >= 1):
        return MILESTONES  # with an epoch done, a batch was trained even if its report was missed
    if phase == "training":
        return MILESTONES[:2]
    return MILESTONES[:1] if phase == "loading data" else ()


def watch_start(manager: JobManager, run_id: str, submitted: float) -> dict[str, float]:
    """Seconds from `submitted` until the run's progress first shows each milestone (one passed
    between two reads counts as reached at the later read)."""
    reached: dict[str, float] = {}
    while "first batch" not in reached:
        progress = manager.progress(run_id)
        now = time.perf_counter() - submitted
        for milestone in milestones_shown(progress):
            reached.setdefault(milestone, now)
        if "first batch" not in reached and progress.get("state") not in ACTIVE_STATES:
            raise RuntimeError(f"job {run_id} ended {progress.get('state')} before training: "
                               f"{manager.store.get(run_id).status().get('error')}")
        time.sleep(PROGRESS_POLL_S)
    return reached


def job_fit(config: TrainConfig, manager: JobManager) -> JobResult:
    """images/s of the same training run as a job in a training process (per-epoch seconds from
    metrics.jsonl), and how long it took from submit to its first trained batch."""
    submitted = time.perf_counter()
    run_id = manager.submit(config)
    reached = watch_start(manager, run_id, submitted)
    state = manager.wait(run_id)
    run = manager.store.get(run_id)
    if state != "done":
        raise RuntimeError(f"job {run_id} ended {state}: {run.status().get('error')}")
    seconds = [row["seconds"] for row in run.history()][1:]
    n_train = sum(run.summary()["split"]["counts"]["train"].values())
    return JobResult(n_train * len(seconds) / sum(seconds), *(reached[m] for m in MILESTONES),
                     run.resources().get("device"))


def children_cpu_seconds() -> float:
    """CPU seconds used so far by the live child processes of this one (Linux /proc)."""
    me, total = os.getpid(), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:  # fields[1] is the parent pid; utime, stime follow at 11, 12
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_for_quiet_children() -> None:
    """Each job starts the next spare process, which imports TensorFlow: wait until it has done so
    (its children use next to no CPU), so that the import slows neither the next bare fit nor the
    next job's start."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    before = children_cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(QUIET_POLL_S)
        now = children_cpu_seconds()
        if now - before < QUIET_CPU_FRACTION * QUIET_POLL_S:
            return
        before = now
    print(f"warning: child processes still busy after {QUIET_TIMEOUT_S:.0f} s", flush=True)


def machine() -> str:
    """CPU count available to this process (as nproc) and the CPU model."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{len(os.sched_getaffinity(0))} CPUs (nproc), {model}"


def spread(values: list[float], digits: int) -> str:
    return f"median {statistics.median(values):.{digits}f}, range {min(values):.{digits}f}-{max(values):.{digits}f}"


def run_rounds(config: TrainConfig, dataset, split, manager: JobManager, rounds: int):
    bare, jobs = [], []
    for round_ in range(1, rounds + 1):
        # Alternate which goes first, so warm-up and drift of this shared VM hit both alike.
        if round_ % 2:
            bare.append(bare_fit(config, dataset, split))
            jobs.append(job_fit(config, manager))
            wait_for_quiet_children()
        else:
            jobs.append(job_fit(config, manager))
            wait_for_quiet_children()
            bare.append(bare_fit(config, dataset, split))
        job = jobs[-1]
        print(f"round {round_}: bare {bare[-1]:.1f} img/s, job {job.images_per_sec:.1f} img/s, "
              f"ratio {job.images_per_sec / bare[-1]:.3f}; submit->loading data {job.to_loading_s:.2f} s, "
              f"->training {job.to_training_s:.2f} s, "
              f"->first batch {job.to_first_batch_s:.2f} s", flush=True)
    return bare, jobs


def report(config: TrainConfig, n_train: int, args, bare: list[float], jobs: list[JobResult]) -> None:
    job_rates = [job.images_per_sec for job in jobs]
    ratios = [rate / base for rate, base in zip(job_rates, bare)]
    bare_median, job_median = statistics.median(bare), statistics.median(job_rates)
    print(f"\n{config.arch} {config.image_size}px batch {config.batch_size}, {n_train} training images, "
          f"{args.rounds} rounds x {args.epochs} epochs")
    print(f"machine        : {machine()}; training device: {jobs[-1].device}")
    print(f"bare model.fit : {bare_median:.1f} img/s (median)")
    print(f"worker process : {job_median:.1f} img/s (median)")
    print(f"ratio job/bare : {job_median / bare_median:.3f} (medians; target >= 0.97)")
    print(f"per-round ratio: {spread(ratios, 3)}")
    print(f"submit -> loading data   : {spread([j.to_loading_s for j in jobs], 2)} s (a training process has the run)")
    print(f"submit -> training phase : {spread([j.to_training_s for j in jobs], 2)} s (data loaded, model built, batch 0)")
    print(f"submit -> first batch    : {spread([j.to_first_batch_s for j in jobs], 2)} s (target <= 3 s)")
    print(f"  progress.json is written at most twice a second, so the first-batch time includes up to "
          f"0.5 s of reporting lag (polled every {PROGRESS_POLL_S * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="deep_bn_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.rounds < 1 or args.epochs < 2:
        parser.error("--rounds must be at least 1 and --epochs at least 2 (the first epoch is left out)")
    try:
        config = TrainConfig(arch=args.arch, image_size=args.image_size, epochs=args.epochs,
                             batch_size=args.batch_size, early_stopping=False).validate()
    except (KeyError, ValueError) as exc:
        parser.error(str(exc))
    dataset, split = load_data(config)
    runs_dir = tempfile.mkdtemp(prefix="cxr-bench-")
    manager = JobManager(RunStore(runs_dir))
    try:
        # Untimed: lets the first spare process import TensorFlow and fills the dataset cache.
        warm_up = job_fit(config, manager)
        wait_for_quiet_children()
        print(f"warm-up job (untimed): submit->first batch {warm_up.to_first_batch_s:.2f} s", flush=True)
        bare, jobs = run_rounds(config, dataset, split, manager, args.rounds)
    finally:
        manager.shutdown()
        shutil.rmtree(runs_dir, ignore_errors=True)
    report(config, len(split.train), args, bare, jobs)


if __name__ == "__main__":
    main()
