"""A run's live progress (written to progress.json for other processes) and its Stop request: what the
training reports to, and reads between batches."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from core.files import write_json
from core.store.run_folder import Run


class Progress:
    """Live state of one run, written by the training and read by the UI (thread-safe).

    With `path`, every change is also written there for other processes to read: atomically, at
    once when the phase changes, otherwise at most twice a second, and never left behind: a change
    that came too soon is written when the interval is up (else a reader polling short epochs sees
    mostly the state of an epoch's start: batch 0).
    """

    WRITE_INTERVAL_S = 0.5

    def __init__(self, epochs: int = 0, path=None):
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._state = {"phase": "queued", "epoch": 0, "epochs": epochs, "batch": 0, "batches": 0,
                       "images_per_sec": None, "eta_s": None, "learning_rate": None,
                       "batch_loss": None, "load_done": 0, "load_total": 0, "elapsed_s": 0.0}
        self._history: list[dict] = []
        self._path, self._written_at = path, 0.0
        self._version, self._written_version, self._pending = 0, 0, None

    def update(self, **fields) -> None:
        with self._lock:
            phase_changed = "phase" in fields and fields["phase"] != self._state["phase"]
            self._state.update(fields)
            self._version += 1
            if self._path is None:
                return
            wait = self.WRITE_INTERVAL_S - (time.monotonic() - self._written_at)
            if wait > 0 and not phase_changed:
                if self._pending is None:
                    self._pending = threading.Timer(wait, self._write_pending)
                    self._pending.daemon = True
                    self._pending.start()
                return
        self._write()

    def _write_pending(self) -> None:
        with self._lock:
            self._pending = None
        self._write()

    def _write(self) -> None:
        """Write the latest state, unless it is written already (one writer at a time, newest last)."""
        with self._write_lock:
            with self._lock:
                if self._written_version == self._version:
                    return
                state, self._written_version = dict(self._state), self._version
                self._written_at = time.monotonic()
            write_json(self._path, state)

    def add_epoch(self, row: dict) -> None:
        with self._lock:
            self._history.append(row)

    def snapshot(self) -> dict:
        with self._lock:
            return {**self._state, "history": list(self._history)}


@dataclass
class RunControl:
    """Progress and the Stop request of a run; `stop_file`, when given, is a Stop from any process."""
    progress: Progress = field(default_factory=Progress)
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_file: object = None

    def should_stop(self) -> bool:
        return self.stop_event.is_set() or (self.stop_file is not None and os.path.exists(self.stop_file))

    @classmethod
    def for_run(cls, run: Run, epochs: int = 0) -> "RunControl":
        """Progress written to the run folder, Stop read from it: what a training process uses."""
        return cls(progress=Progress(epochs, path=run.progress_path), stop_file=run.stop_path)


class Cancelled(Exception):
    pass
