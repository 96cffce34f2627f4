"""Background training jobs: a queue of runs worked off by daemon threads.

    manager = JobManager(RunStore("runs"))
    run_id = manager.submit(TrainConfig(arch="seed_cnn", epochs=3))
    manager.progress(run_id)   # phase, epoch, batch, images/s, ETA, per-epoch history
    manager.cancel(run_id)     # stops at the next batch, keeps what was learned
"""
from __future__ import annotations

import os
import queue
import threading
import time

from core.runs import ACTIVE_STATES, RunStore
from core.training import Progress, RunControl, TrainConfig, execute_run


# Phases (Progress "phase") in which Stop still saves time; after training the run only evaluates and saves.
STOPPABLE_PHASES = ("queued", "loading data", "training")


def stop_option(state: str, phase: str | None, stop_requested: bool) -> str:
    """What a live view offers for a run: 'stop' (a Stop button), 'stopping' (Stop was pressed; it
    ends after the current batch), 'finishing' (evaluating and saving: too late to stop) or 'none'
    (the run is not active)."""
    if state not in ACTIVE_STATES:
        return "none"
    if stop_requested:
        return "stopping"
    if state == "running" and phase is not None and phase not in STOPPABLE_PHASES and phase != "running":
        return "finishing"
    return "stop"


class JobManager:
    def __init__(self, store: RunStore | None = None, max_concurrent: int | None = None):
        self.store = store or RunStore()
        # One job at a time by default: two trainings on a 2-core CPU only slow each other down.
        self.max_concurrent = max(1, int(max_concurrent or os.environ.get("CXR_MAX_CONCURRENT_JOBS", 1)))
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._controls: dict[str, RunControl] = {}
        self._lock = threading.Lock()
        self.recovered = self.store.mark_orphans_interrupted()
        self._workers = [threading.Thread(target=self._work, name=f"cxr-job-worker-{i}", daemon=True)
                         for i in range(self.max_concurrent)]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------ public
    def submit(self, config: TrainConfig) -> str:
        """Validate, create the run folder (state queued) and queue it; returns the run id at once."""
        config.validate()
        run = self.store.create(config.to_dict(), name=config.name or config.arch)
        with self._lock:
            self._controls[run.id] = RunControl(progress=Progress(epochs=config.epochs))
        self._queue.put(run.id)
        return run.id

    def cancel(self, run_id: str) -> bool:
        """Queued: cancelled at once. Running: stops after the current batch. False if not active here."""
        with self._lock:
            control = self._controls.get(run_id)
        if control is None:
            return False
        control.stop_event.set()
        run = self.store.get(run_id)
        if run.state() == "queued":
            run.update_status(state="cancelled", finished=time.time())
            control.progress.update(phase="cancelled")
        return True

    def stop_requested(self, run_id: str) -> bool:
        """Whether Stop was pressed for a run of this manager (it may still be finishing its batch)."""
        with self._lock:
            control = self._controls.get(run_id)
        return control is not None and control.should_stop()

    def progress(self, run_id: str) -> dict:
        """Live progress of a run started by this manager; for other runs, what is on disk."""
        with self._lock:
            control = self._controls.get(run_id)
        run = self.store.get(run_id)
        status = run.status()
        if control is None:
            history = run.history()
            return {"phase": status.get("state"), "epoch": status.get("epoch", len(history)),
                    "epochs": status.get("epochs"), "history": history, "state": status.get("state")}
        return {**control.progress.snapshot(), "state": status.get("state")}

    def active(self) -> list[str]:
        """Run ids queued or running in this manager, in submission order."""
        with self._lock:
            ids = list(self._controls)
        return [run_id for run_id in ids if self.store.get(run_id).state() in ACTIVE_STATES]

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        """Block until the run leaves queued/running; returns its final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.store.get(run_id).state()
            if state not in ACTIVE_STATES:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state} after {timeout} s")
            time.sleep(0.1)

    def shutdown(self, cancel_running: bool = True, timeout: float = 120.0) -> None:
        """Stop the workers (cancelling active runs first) and wait for them: a process that exits
        while a worker is inside TensorFlow aborts instead of exiting cleanly."""
        if cancel_running:
            for run_id in self.active():
                self.cancel(run_id)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id is None:
                return
            try:
                self._run_one(run_id)
            except BaseException:  # noqa: BLE001 - execute_run records failures; never kill the worker
                pass

    def _run_one(self, run_id: str) -> None:
        run = self.store.get(run_id)
        with self._lock:
            control = self._controls[run_id]
        if run.state() != "queued" or control.should_stop():
            return
        try:
            config = TrainConfig.from_dict(run.config())
        except (TypeError, ValueError) as exc:
            run.update_status(state="failed", finished=time.time(), error=f"bad config: {exc}")
            return
        execute_run(run, config, control)
