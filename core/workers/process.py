"""The training process: one run, one fresh interpreter, started by a worker (core.workers.manager).

    python -m core.workers.process RUN_DIR     # train this run of the store here
    python -m core.workers.process -           # import TensorFlow, then read RUN_DIR from stdin

It exits when the run ends, giving all its memory back. If the worker that started it dies, the run
becomes `interrupted` and the process exits; started by a Ray task ($CXR_ORPHAN_ERROR set: its Ray
worker died), the run becomes `failed` with that error.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

PARENT_POLL_S = 0.5


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
    from core.ml.run_control import RunControl
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    from core.store.run_folder import Run
    run = Run(Path(run_path))
    send_output_to(run.stderr_path)
    current["run"] = run
    config = TrainConfig.from_dict(run.config())
    execute_run(run, config, RunControl.for_run(run, config.epochs), resume=bool(run.status().get("resume")))
    return 0


def warm_up() -> None:
    """Everything a run imports, loaded before the run arrives (core.ml.models brings Keras and
    TensorFlow)."""
    from core.ml import (
        hparams,  # noqa: F401
        metrics,  # noqa: F401
        model_card,  # noqa: F401
        models,  # noqa: F401
        training,  # noqa: F401
    )


def send_output_to(path: Path) -> None:
    """This process's stdout and stderr, native TensorFlow messages included, go to `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def watch_parent(current: dict) -> None:
    """If the worker that started this process dies, mark our run interrupted (or failed, with
    $CXR_ORPHAN_ERROR) and exit: it can be resumed, and no training goes on unsupervised."""
    parent = os.getppid()
    orphan_error = os.environ.get("CXR_ORPHAN_ERROR")

    def watch() -> None:
        from core.store.run_folder import STATUS_LOCK
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        run = current["run"]
        STATUS_LOCK.acquire()  # held until exit: the training thread cannot write its status after ours
        if run is not None and run.state() == "running":
            if orphan_error:
                run.update_status(state="failed", finished=time.time(), error=orphan_error)
            else:
                run.update_status(state="interrupted", finished=time.time(),
                                  error="the dashboard or worker running this training stopped: "
                                        "resume it to go on from its last completed epoch")
        os._exit(3)

    threading.Thread(target=watch, name="cxr-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(train_process(sys.argv[1] if len(sys.argv) > 1 else "-"))
