"""The run store: one folder per run, every file written atomically (temp file + rename).

    runs/<run_id>/config.json        the TrainConfig, enough to re-run
    runs/<run_id>/status.json        state, timestamps, error and traceback
    runs/<run_id>/metrics.jsonl      one JSON line per epoch
    runs/<run_id>/summary.json       final val/test metrics, model size, split report
    runs/<run_id>/environment.json   Python/TensorFlow/Keras versions, dataset content hash
    runs/<run_id>/layers.json        the model's layers: output shape, parameters, MACs per image
    runs/<run_id>/annotations.json   what the user says of the run: display name, notes, tags, star
    runs/<run_id>/batches.json       the first epoch batch by batch: loss, accuracy, learning rate
    runs/<run_id>/external/<name>.json   evaluations on other labelled X-rays (external validation)
    runs/<run_id>/model_card.md      the model card: data, split, model, metrics with intervals, use
    runs/<run_id>/saved_model/, model.tflite   exports of model.keras (on request)
    runs/<run_id>/model.keras        the best model
    runs/<run_id>/predictions_{val,test}.npz   probabilities, labels, patient ids, files
    runs/<run_id>/tensorboard/       event files: `tensorboard --logdir runs` (curves; HParams: settings, final metrics)
    runs/<run_id>/progress.json      live progress of the training process (phase, batch, ETA)
    runs/<run_id>/checkpoint/        last completed epoch: weights, optimizer state (for resuming)
    runs/<run_id>/stderr.log         what the training process printed

The store is also the queue. A queued run has an empty `queued` marker file; a worker claims it
by renaming the marker to `claim.<worker id>`, which only one worker can do. A `stop` file asks
the run to stop after its current batch, whichever process trains it.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

from core.files import write_json, write_text
from core.settings.paths import PROJECT_ROOT
from core.store.run_folder import ACTIVE_STATES, Run


HOST = socket.gethostname()
DELETING_PREFIX = ".deleting-"  # a run being deleted: renamed away first, then removed
# What a run (or sweep) id may be: a safe folder name (fullmatch: "$" would let a final newline in).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")


def default_runs_dir() -> Path:
    """`CXR_RUNS_DIR` if set, else `runs/` in the project."""
    return Path(os.environ.get("CXR_RUNS_DIR", PROJECT_ROOT / "runs"))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot), to tell it from a later process
    that reuses its pid; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int | None, started: str | None = None) -> bool:
    """Whether process `pid` (started at `started`, when known) still runs on this machine."""
    if not pid_alive(pid):
        return False
    return started is None or process_start(pid) in (None, started)


def this_process() -> dict:
    """Host, pid and start time of this process, as recorded in status.json."""
    return {"host": HOST, "pid": os.getpid(), "pid_start": process_start(os.getpid())}


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_runs_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def new_run_id(self, name: str = "") -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40]
        base = f"{stamp}-{slug}" if slug else stamp
        run_id, n = base, 1
        while (self.root / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def create(self, config: dict, name: str = "", queued: bool = True) -> Run:
        """A new run folder; `queued` puts it in the queue for the workers."""
        run = Run(self.root / self.new_run_id(name))
        run.path.mkdir(parents=True)
        write_json(run.config_path, config)
        run.update_status(state="queued", created=time.time(), submitted_by=this_process())
        if queued:
            run.queued_marker.touch()  # last: from here on a worker may take it
        return run

    def get(self, run_id: str) -> Run:
        if not RUN_ID.fullmatch(run_id or ""):
            raise KeyError(f"invalid run id {run_id!r}")
        run = Run(self.root / run_id)
        if not run.config_path.exists():
            raise KeyError(f"no run {run_id!r} in {self.root}")
        return run

    def list(self) -> list[Run]:
        """Runs newest first; folders without a config (half-created, foreign) or not named like a
        run (one being imported or deleted) are left out."""
        runs = [Run(p) for p in self.root.iterdir()
                if RUN_ID.fullmatch(p.name) and p.is_dir() and (p / "config.json").exists()]
        return sorted(runs, key=lambda r: (r.status().get("created") or 0, r.id), reverse=True)

    def delete(self, run_id: str) -> None:
        """Remove a finished run: renamed out of the store in one step, then its files removed, so
        no reader ever sees half a run."""
        run = self.get(run_id)
        if run.state() in ACTIVE_STATES:
            raise RuntimeError(f"run {run_id} is {run.state()}: cancel it before deleting")
        doomed = self.root / f"{DELETING_PREFIX}{run_id}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(run.path, doomed)
        shutil.rmtree(doomed)

    # ------------------------------------------------------------------------- the queue

    def queued(self) -> list[Run]:
        """Runs waiting for a worker, first submitted first; also those whose status.json cannot be
        read, so that a worker claims each once and records why it failed (`unreadable`)."""
        waiting = [Run(p.parent) for p in self.root.glob("*/queued") if RUN_ID.fullmatch(p.parent.name)]
        statuses = {run.id: run.status() for run in waiting}
        waiting = [run for run in waiting if statuses[run.id].get("state") == "queued"
                   or statuses[run.id].get("unreadable")]
        return sorted(waiting, key=lambda r: (statuses[r.id].get("created") or 0, r.id))

    def claim(self, run: Run, worker_id: str) -> bool:
        """Take a queued run for `worker_id`; exactly one of any number of claimants succeeds."""
        try:
            os.rename(run.queued_marker, run.path / f"claim.{worker_id}")
        except FileNotFoundError:
            return False
        return True

    def requeue(self, run: Run, **status) -> None:
        """Put a run (back) in the queue, e.g. to resume it."""
        for claim in run.path.glob("claim.*"):
            claim.unlink(missing_ok=True)
        run.clear_live_files()
        run.update_status(state="queued", error=None, traceback=None, stderr_tail=None, finished=None,
                          **status)
        run.queued_marker.touch()

    def request_stop(self, run: Run, worker_id: str) -> bool:
        """Stop a run: a queued one is cancelled at once, a running one after its current batch,
        whichever process trains it. False if the run is not active."""
        if run.state() not in ACTIVE_STATES:
            return False
        write_text(run.stop_path, str(time.time()))
        if self.claim(run, worker_id):
            run.update_status(state="cancelled", finished=time.time(), error=None)
        return True

    def recover(self) -> list[str]:
        """Repair what dead processes on this machine left behind: a run that was training becomes
        `interrupted` (resumable from its last checkpoint); a run claimed by a worker that died before
        starting it goes back to the queue. Runs of other machines are left alone. Returns the ids
        of the interrupted runs."""
        self._remove_half_deleted()
        interrupted = []
        for run in self.list():
            status = run.status()
            if status.get("state") == "running" and _died_here(status.get("trainer")) \
                    and _died_here(status.get("worker")):
                run.update_status(state="interrupted", finished=run.last_sign_of_life(),
                                  error="the process training this run stopped before it finished")
                interrupted.append(run.id)
            elif status.get("state") == "queued":
                self._release_stale_claims(run)
        return interrupted

    def _remove_half_deleted(self) -> None:
        """Finish deletions a process did not (it died between the rename and the removal)."""
        for doomed in self.root.glob(f"{DELETING_PREFIX}*"):
            shutil.rmtree(doomed, ignore_errors=True)

    def _release_stale_claims(self, run: Run) -> None:
        for claim in run.path.glob("claim.*"):
            host, _, rest = claim.name[len("claim."):].rpartition("@")
            pid, _, started = rest.partition("-")
            if host == HOST and pid.isdigit() and not process_alive(int(pid), started or None):
                try:  # renaming this very claim back can succeed for one recoverer only
                    os.rename(claim, run.queued_marker)
                except FileNotFoundError:
                    pass


def worker_id() -> str:
    """This process as a claimant: host@pid-start (the start time tells a reused pid apart)."""
    me = this_process()
    return f"{me['host']}@{me['pid']}-{me['pid_start'] or ''}"


def _died_here(process: dict | None) -> bool:
    """True if `process` (host, pid, pid_start) ran on this machine and is gone; unknown -> True."""
    if not process:
        return True
    if process.get("host") != HOST:
        return False  # another machine's run (shared folder): we cannot tell if it lives
    return not process_alive(process.get("pid"), process.get("pid_start"))
