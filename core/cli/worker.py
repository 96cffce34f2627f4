"""Workers without the dashboard.

    python -m core worker                  # train the queued runs of runs/ (or $CXR_RUNS_DIR) as they come
    python -m core worker --until-empty    # ... and exit once the queue is empty
    python -m core worker --slots 2 --runs-dir /data/runs
    CXR_RAY_ADDRESS=auto python -m core worker   # dispatch the runs as tasks to this machine's Ray cluster

Any number of workers and dashboards may share one runs folder: each run is trained exactly once.
Ctrl-C (or SIGTERM) stops a worker; runs it was training become `interrupted` and can be resumed.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, help="run store folder (default: $CXR_RUNS_DIR or runs/)")
    parser.add_argument("--slots", type=int, help="runs trained at once (default: $CXR_MAX_CONCURRENT_JOBS, else 1; "
                        "on a Ray cluster, as many as it has GPUs, or CPUs for a run each)")
    parser.add_argument("--until-empty", action="store_true", help="exit when no run is queued")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from core.store.runs import RunStore
    from core.workers.manager import JobManager
    stop_on_signals()
    try:
        manager = JobManager(RunStore(args.runs_dir), max_concurrent=args.slots)
    except (ConnectionError, ValueError) as exc:  # no Ray cluster at $CXR_RAY_ADDRESS, or a bad setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"worker {manager.worker_id} on {manager.store.root}: {len(manager.store.queued())} runs queued, "
          f"{manager.max_concurrent} at a time, {where_runs_train(manager)}", file=sys.stderr, flush=True)
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


def where_runs_train(manager) -> str:
    """'dispatched to the Ray cluster at ...' or 'trained here, each in a process of its own'."""
    if manager.cluster is not None:
        return f"dispatched as Ray tasks to {manager.cluster.describe()}"
    return "trained here, each in a process of its own (set CXR_RAY_ADDRESS to dispatch them to a Ray cluster)"


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (`kill`, systemd, docker stop) stop the worker the same way, also when it
    was started in the background, where SIGINT would otherwise be ignored."""
    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


if __name__ == "__main__":
    sys.exit(main())
