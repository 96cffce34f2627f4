"""Workers without the dashboard, and the training process itself.

    python -m core.worker                  # train the queued runs of runs/ (or $CXR_RUNS_DIR) as they come
    python -m core.worker --until-empty    # ... and exit once the queue is empty
    python -m core.worker --slots 2 --runs-dir /data/runs

Any number of workers and dashboards may share one runs folder: each run is trained exactly once.
Ctrl-C stops a worker; runs it was training become `interrupted` and can be resumed.

`--train RUN_DIR` (or `-`: read RUN_DIR from stdin) is the training process a worker starts for
one run; it exits when the run ends, giving all its memory back.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

PARENT_POLL_S = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, help="run store folder (default: $CXR_RUNS_DIR or runs/)")
    parser.add_argument("--slots", type=int, help="runs trained at once (default: $CXR_MAX_CONCURRENT_JOBS or 1)")
    parser.add_argument("--until-empty", action="store_true", help="exit when no run is queued")
    parser.add_argument("--train", metavar="RUN_DIR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.train:
        return train_process(args.train)
    from core.jobs import JobManager
    from core.runs import RunStore
    stop_on_signals()
    manager = JobManager(RunStore(args.runs_dir), max_concurrent=args.slots)
    print(f"worker {manager.worker_id} on {manager.store.root}: {len(manager.store.queued())} runs queued, "
          f"{manager.max_concurrent} at a time", file=sys.stderr, flush=True)
    try:
        if args.until_empty:
            manager.run_until_empty()
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping: runs being trained become interrupted and can be resumed", file=sys.stderr)
        manager.shutdown(cancel_running=False)
        return 130
    manager.shutdown(cancel_running=False)
    return 0


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (`kill`, systemd, docker stop) stop the worker the same way, also when it
    was started in the background, where SIGINT would otherwise be ignored."""
    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


# ----------------------------------------------------------------------------- the training process

def train_process(run_path: str) -> int:
    """Train one run of the store in this process. With "-", import TensorFlow first and then wait
    for the run folder on stdin: a worker keeps one such spare process to start runs fast."""
    current = {"run": None}
    watch_parent(current)
    warm_up()
    if run_path == "-":
        run_path = sys.stdin.readline().strip()
        if not run_path:
            return 0  # the worker stopped before it had a run for us
    from core.runs import Run
    from core.training import RunControl, TrainConfig, execute_run
    run = Run(Path(run_path))
    send_output_to(run.stderr_path)
    current["run"] = run
    config = TrainConfig.from_dict(run.config())
    execute_run(run, config, RunControl.for_run(run, config.epochs), resume=bool(run.status().get("resume")))
    return 0


def warm_up() -> None:
    """Everything a run imports, loaded before the run arrives."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    from core import metrics, models, training  # noqa: F401


def send_output_to(path: Path) -> None:
    """This process's stdout and stderr, native TensorFlow messages included, go to `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def watch_parent(current: dict) -> None:
    """If the worker that started this process dies, mark our run interrupted and exit: a restarted
    worker can resume it, and no training goes on unsupervised."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        run = current["run"]
        if run is not None and run.state() == "running":
            run.update_status(state="interrupted", finished=time.time(),
                              error="the dashboard or worker running this training stopped: "
                                    "resume it to go on from its last completed epoch")
        os._exit(3)

    threading.Thread(target=watch, name="cxr-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
