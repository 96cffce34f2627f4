"""Training jobs: the run store is the queue, each training is its own OS process.

    manager = JobManager(RunStore("runs"))       # also started by the dashboard and `python -m core worker`
    run_id = manager.submit(TrainConfig(arch="seed_cnn", epochs=3))   # queued on disk, returns at once
    manager.progress(run_id)   # phase, epoch, batch, images/s, ETA, per-epoch history (from the run folder)
    manager.cancel(run_id)     # queued: cancelled; running: stops after its current batch, keeps what it learned
    manager.resume(run_id)     # an interrupted run goes on from its last completed epoch

A manager's slot threads claim queued runs (first submitted, first served; a claim is an atomic
rename, so any number of managers can share one runs folder) and start a training process per run
(`python -m core.workers.process RUN_DIR`: a fresh interpreter, never a fork of one that has loaded
TensorFlow). The process exits after its run, which gives all its memory back. To start fast, one
spare process waits with TensorFlow already imported. A process that dies ends its run `failed`
with the reason in plain words and the last lines it printed; the manager and the queue go on.

With CXR_RAY_ADDRESS set, each claimed run is trained instead by a Ray task on any node of that
cluster (core/workers/ray_backend.py), which starts the same training process there; the queue,
Stop, failure reasons, resources and resume are the same. Each run records the node that trained it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from core.settings.config import TrainConfig
from core.settings.paths import PROJECT_ROOT
from core.store.run_folder import ACTIVE_STATES, Run
from core.store.runs import HOST, process_start, RunStore, this_process, worker_id
from core.workers.oom import OomWatch, memory_facts

log = logging.getLogger(__name__)
# Phases (progress "phase") in which Stop still saves time; after training the run only evaluates and saves.
STOPPABLE_PHASES = ("queued", "loading data", "training")
MEMORY_POLL_S = 0.2
IDLE_POLL_S = 1.0
SPARE_DELAY_S = 3.0  # the first spare waits a moment: the dashboard's first paint comes first


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


def memory_cap_mb(config: dict) -> int:
    """The run's memory cap in MB: its own setting, else $CXR_MEMORY_CAP_MB; 0 means none."""
    return int(config.get("memory_cap_mb") or os.environ.get("CXR_MEMORY_CAP_MB") or 0)


def exit_reason(returncode: int, capped_at_mb: float | None = None, cap_mb: int = 0,
                oom: str | None = None, memory: str = "") -> str:
    """Why a training process ended without finishing its run, in plain words. `oom`: why memory
    was likely short (OomWatch.verdict), else None; `memory`: its peak and the memory available."""
    if capped_at_mb is not None:
        return (f"stopped at {capped_at_mb:.0f} MB: above this run's memory cap of {cap_mb} MB. "
                "Try a smaller batch size or image size, or raise the cap")
    if returncode == -signal.SIGKILL and oom:
        return f"killed by SIGKILL, most likely out of memory ({oom}): try a smaller batch size or image size"
    if returncode == -signal.SIGKILL:
        return ("killed by SIGKILL (by another process or the user; memory was not short"
                + (f": {memory})" if memory else ")"))
    if returncode == -signal.SIGSEGV:
        return "crashed with a segmentation fault (SIGSEGV) inside native code (TensorFlow)"
    if returncode == -signal.SIGABRT:
        return "aborted (SIGABRT) inside native code (TensorFlow)"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"the training process exited with code {returncode} before the run finished"


def resident_mb(pid: int) -> float | None:
    """Resident memory of process `pid` now, in MB (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class TrainingProcess:
    """One `python -m core worker` process; `spare` ones import TensorFlow, then wait for a run."""

    def __init__(self, orphan_error: str | None = None):
        """`orphan_error`: the run fails with it if this process outlives its parent (else: interrupted)."""
        command = [sys.executable, "-m", "core.workers.process", "-"]  # reads its run from stdin
        env = {**os.environ, "CXR_ORPHAN_ERROR": orphan_error} if orphan_error else None
        self.popen = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.PIPE, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)  # Ctrl-C in a terminal goes to the manager only

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        if self.popen.returncode is not None:
            return False
        try:  # WNOWAIT: leave the exit status for wait(), which also reads the peak memory
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def give(self, run: Run) -> bool:
        """Hand the process its run; False if it is gone."""
        try:
            self.popen.stdin.write(f"{run.path}\n".encode())
            self.popen.stdin.close()
            return True
        except (BrokenPipeError, OSError):
            return False

    def wait(self) -> tuple[int, float | None]:
        """Wait for the exit; (return code, peak resident memory in MB from the kernel's accounting)."""
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # already reaped
            return self.popen.wait(), None
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return self.popen.returncode, usage.ru_maxrss / 1024

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()


class ProcessEnd(NamedTuple):
    """How a training process ended: its return code, peak resident memory (MB), the MB at which
    its memory cap stopped it (or None), why memory was likely short (or None) and what is known of
    its memory ('peak 954 MB, 22,000 MB available')."""
    returncode: int
    peak_mb: float | None
    capped_at: float | None = None
    oom: str | None = None
    memory: str = ""


def watch_memory(process: TrainingProcess, cap_mb: int) -> ProcessEnd:
    """Wait for the process, killing it if it goes over the memory cap; then ask the kernel whether
    memory explains its end."""
    capped_at, oom_watch = None, OomWatch.start()
    if cap_mb:
        while process.alive():
            rss = resident_mb(process.pid)
            if rss is not None and rss > cap_mb:
                capped_at = rss
                process.kill()
                break
            time.sleep(MEMORY_POLL_S)
    returncode, peak_mb = process.wait()
    return ProcessEnd(returncode, peak_mb, capped_at, oom_watch.verdict(peak_mb), memory_facts(peak_mb))


def train_in_new_process(run: Run, cap_mb: int, orphan_error: str, started: Callable[[int], None]) -> dict:
    """Train `run` in a fresh training process on this machine; how it ended (ProcessEnd's fields).
    `started(pid)` runs once the process exists, before it has its run. The Ray backend's task calls
    this on its node: it is handed in (RayCluster), so the backend never imports this module."""
    process = TrainingProcess(orphan_error=orphan_error)
    started(process.pid)
    if not process.give(run):
        process.kill()
    return watch_memory(process, cap_mb)._asdict()


def connect_cluster():
    """The Ray cluster named by $CXR_RAY_ADDRESS (Ray is imported only then), or None: train here."""
    address = os.environ.get("CXR_RAY_ADDRESS", "").strip()
    if not address:
        return None
    from core.workers.ray_backend import RayCluster
    return RayCluster(address, train_in_new_process)


class JobManager:
    """Claims queued runs of a store and trains each in its own process (`max_concurrent` at a time),
    here or, with $CXR_RAY_ADDRESS, as Ray tasks on the nodes of that cluster."""

    def __init__(self, store: RunStore | None = None, max_concurrent: int | None = None,
                 spare: bool | None = None):
        self.store = store or RunStore()
        self.cluster = connect_cluster()
        # One job at a time by default: two trainings on a 2-core CPU only slow each other down.
        # On a Ray cluster: as many as it has room for.
        default_slots = self.cluster.capacity() if self.cluster else 1
        self.max_concurrent = max(1, int(max_concurrent or os.environ.get("CXR_MAX_CONCURRENT_JOBS") or default_slots))
        self.worker_id = worker_id()
        # A spare process serves this machine only; Ray tasks start their own on their node.
        self.keep_spare = self.cluster is None and (
            spare if spare is not None else os.environ.get("CXR_SPARE_PROCESS", "1") != "0")
        self._spare: TrainingProcess | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._abandoning = threading.Event()
        self._busy_slots = 0
        self._training: dict = {}  # run id -> its TrainingProcess, or its RayTraining task (both kill())
        self._submitted: list[str] = []
        self._spare_due = time.monotonic() + SPARE_DELAY_S
        self.recovered = self.store.recover()
        self._slots = [threading.Thread(target=self._work, name=f"cxr-job-slot-{i}", daemon=True)
                       for i in range(self.max_concurrent)]
        for slot in self._slots:
            slot.start()

    # ------------------------------------------------------------------ public
    def submit(self, config: TrainConfig) -> str:
        """Validate, write the run to the store as queued; returns its id at once."""
        config.validate()
        run = self.store.create(config.to_dict(), name=config.name or config.arch)
        with self._lock:
            self._submitted.append(run.id)
        self._wake.set()
        return run.id

    def resume(self, run_id: str) -> None:
        """Queue an interrupted (or failed, or stopped) run again, to go on from its last checkpoint."""
        run = self.store.get(run_id)
        if not run.can_resume():
            raise ValueError(f"run {run_id} is {run.state()} and has no completed epoch to resume from")
        self.store.requeue(run, resume=True)
        self._wake.set()

    def cancel(self, run_id: str) -> bool:
        """Queued: cancelled at once. Running (here or in any process): stops after its current batch."""
        return self.store.request_stop(self.store.get(run_id), self.worker_id)

    def stop_requested(self, run_id: str) -> bool:
        """Whether Stop was pressed for an active run (it may still be finishing its batch)."""
        try:
            run = self.store.get(run_id)
        except KeyError:
            return False
        return run.stop_requested() and run.state() in ACTIVE_STATES

    def progress(self, run_id: str) -> dict:
        """Live progress from the run folder: phase, epoch, batch, images/s, ETA, and the epochs so far."""
        run = self.store.get(run_id)
        status, history, live = run.status(), run.history(), run.progress()
        state = status.get("state")
        phase = live.get("phase", state) if state == "running" else state
        return {"epoch": status.get("epoch", len(history)), "epochs": status.get("epochs"), **live,
                "phase": phase, "history": history, "state": state}

    def active(self) -> list[str]:
        """Runs queued or running in the store (from any dashboard, worker or CLI), oldest first."""
        runs = [run for run in self.store.list() if run.state() in ACTIVE_STATES]
        return [run.id for run in reversed(runs)]

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

    def busy(self) -> bool:
        """Whether a slot of this manager holds a run (claimed or training)."""
        with self._lock:
            return self._busy_slots > 0

    def run_until_empty(self) -> None:
        """Block until no run is queued and this manager trains nothing (`python -m core worker --until-empty`)."""
        self._wake.set()
        while self.busy() or self.store.queued():
            time.sleep(0.2)

    def shutdown(self, cancel_running: bool = True, timeout: float = 120.0) -> None:
        """Stop claiming runs. With `cancel_running`, runs submitted or trained here are stopped first;
        without, the processes of running runs are killed and those runs left resumable."""
        if cancel_running:
            with self._lock:
                mine = [*self._submitted, *self._training]
            for run_id in mine:
                if self.store.get(run_id).state() in ACTIVE_STATES:
                    self.cancel(run_id)
        self._closing.set()
        self._wake.set()
        if not cancel_running:
            self._abandoning.set()
            with self._lock:
                for process in self._training.values():
                    process.kill()
        for slot in self._slots:
            slot.join(timeout)
        if self._spare is not None:
            self._spare.kill()
            self._spare.wait()

    # ------------------------------------------------------------------ the slots
    def _work(self) -> None:
        """A slot: claim a run, train it, again; idle, look for runs of managers that died. Nothing
        that goes wrong here ends the slot: it is logged (and its run failed), and the slot goes on."""
        last_recovery = time.monotonic()
        while not self._closing.is_set():
            try:
                if self._claim_and_train():
                    continue
                self._start_spare_when_due()
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                if time.monotonic() - last_recovery > 10 * IDLE_POLL_S:  # claims of managers that died
                    last_recovery = time.monotonic()
                    self.store.recover()
            except Exception:  # noqa: BLE001 - e.g. the runs folder went away for a moment
                log.exception("job slot %s: unexpected error; it goes on", threading.current_thread().name)
                self._wake.wait(IDLE_POLL_S)

    def _claim_and_train(self) -> bool:
        """Claim the next queued run and train it; False when there was none."""
        with self._lock:
            self._busy_slots += 1
        try:
            run = self._claim_next()
            if run is not None:
                self._train_safely(run)
            return run is not None
        finally:
            with self._lock:
                self._busy_slots -= 1

    def _claim_next(self) -> Run | None:
        for run in self.store.queued():
            if self._closing.is_set():
                return None
            try:
                if self.store.claim(run, self.worker_id):
                    return run
            except Exception as exc:  # noqa: BLE001 - one broken run folder must not stop the queue
                self._fail_unclaimable(run, exc)
        return None

    def _fail_unclaimable(self, run: Run, exc: Exception) -> None:
        """A queued run that could not be claimed: logged, taken out of the queue and failed with the reason."""
        log.error("run %s could not be claimed: %s: %s", run.id, type(exc).__name__, exc)
        try:
            run.queued_marker.unlink(missing_ok=True)
            run.update_status(state="failed", finished=time.time(),
                              error=f"a worker could not claim this run: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - e.g. the folder is not writable: logged, the queue goes on
            log.exception("run %s could not be marked failed either", run.id)

    def _train_safely(self, run: Run) -> None:
        try:
            self._train(run)
        except Exception as exc:  # noqa: BLE001 - e.g. no process could be started: the slot goes on
            log.exception("run %s failed in its worker", run.id)
            run.update_status(state="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")

    def _train(self, run: Run) -> None:
        """Train a claimed run in a process of its own (here, or through Ray on a node of the cluster)
        and record how that process ended."""
        status = run.status()
        if status.get("unreadable"):  # bad bytes in status.json: claimed, so failed once, saying why
            log.error("run %s: %s", run.id, status["error"])
            run.update_status(state="failed", finished=time.time(), error=status["error"])
            return
        try:
            config = TrainConfig.from_dict(run.config()).validate()
        except (TypeError, ValueError) as exc:
            run.update_status(state="failed", finished=time.time(), error=f"bad config: {exc}")
            return
        cap_mb = memory_cap_mb(config.to_dict())
        if self.cluster is not None:
            self._train_on_cluster(run, cap_mb)
        else:
            self._train_here(run, cap_mb)

    def _train_here(self, run: Run, cap_mb: int) -> None:
        process = self._process_for_next_run()
        # Written before the process has its run: from then on only the process writes the status.
        run.update_status(state="running", worker=this_process(), node={"host": HOST, "backend": "local"},
                          trainer={**this_process(), "pid": process.pid, "pid_start": process_start(process.pid)},
                          **({} if run.status().get("resume") else {"started": time.time()}))
        with self._lock:
            self._training[run.id] = process
        try:
            if not process.give(run):
                process.kill()
            end = watch_memory(process, cap_mb)
        finally:
            with self._lock:
                self._training.pop(run.id, None)
        self._record_exit(run, end, cap_mb)

    def _train_on_cluster(self, run: Run, cap_mb: int) -> None:
        """A Ray task trains the run on some node; it records the node and its training process there."""
        from core.workers.ray_backend import TrainingLost
        run.update_status(state="running", worker=this_process(), node=None, trainer=None,
                          **({} if run.status().get("resume") else {"started": time.time()}))
        task = self.cluster.submit(run, cap_mb)
        with self._lock:
            self._training[run.id] = task
        try:
            outcome = task.outcome()
        except TrainingLost as lost:
            self._record_lost(run, str(lost))
            return
        finally:
            with self._lock:
                self._training.pop(run.id, None)
        if outcome.get("error"):  # the node could not reach the run: nothing was trained
            run.update_status(state="failed", finished=time.time(), node=outcome["node"], error=outcome["error"])
            return
        self._record_exit(run, ProcessEnd(**{key: outcome[key] for key in ProcessEnd._fields if key in outcome}),
                          cap_mb)

    def _start_spare_when_due(self) -> None:
        with self._lock:
            if self.keep_spare and self._spare is None and time.monotonic() >= self._spare_due \
                    and not self._closing.is_set():
                self._spare = TrainingProcess()

    def _process_for_next_run(self) -> TrainingProcess:
        """The waiting spare if there is one (then a new spare is started), else a fresh process."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.alive():
            process = spare
        else:
            if spare is not None:
                spare.wait()
            process = TrainingProcess()
        if self.keep_spare and not self._closing.is_set():
            with self._lock:
                self._spare = TrainingProcess()
        return process

    def _record_exit(self, run: Run, end: ProcessEnd, cap_mb: int) -> None:
        returncode, peak_mb = end.returncode, end.peak_mb
        status = run.status()
        resources = {**status.get("resources", {}), "peak_memory_mb": round(peak_mb, 1) if peak_mb else None}
        if status.get("state") not in ACTIVE_STATES:  # the process recorded how the run ended
            run.update_status(resources=resources, exit_code=returncode)
            return
        if self._abandoning.is_set():
            run.update_status(state="interrupted", finished=time.time(), exit_code=returncode, resources=resources,
                              error="its worker shut down: resume it to go on from its last completed epoch")
            return
        run.update_status(state="failed", finished=time.time(), exit_code=returncode, resources=resources,
                          error=exit_reason(returncode, end.capped_at, cap_mb, end.oom, end.memory),
                          stderr_tail=run.stderr_tail())

    def _record_lost(self, run: Run, reason: str) -> None:
        """The Ray task training the run died with its worker or node (or was cancelled by shutdown)."""
        from core.workers.ray_backend import wait_for_word
        if self._abandoning.is_set():
            if run.state() in ACTIVE_STATES:
                run.update_status(state="interrupted", finished=time.time(),
                                  error="its worker shut down: resume it to go on from its last completed epoch")
        elif wait_for_word(run).get("state") in ACTIVE_STATES:  # else its orphaned process said why it ended
            run.update_status(state="failed", finished=time.time(), error=reason, stderr_tail=run.stderr_tail())
