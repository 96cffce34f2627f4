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

import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np

from core.files import atomic_path, json_ready, locked
from core.settings.config import as_trained
from core.settings.paths import PROJECT_ROOT

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
HOST = socket.gethostname()
# status.json is read, changed and written back: threads of one process take turns (a training
# process's parent watch must not have its "interrupted" overwritten by the epoch's own update), and
# processes too (a file lock beside it: the manager, the training process, a dashboard's Stop).
STATUS_LOCK = threading.RLock()
STATUS_FILE_LOCK = ".status.lock"
DELETING_PREFIX = ".deleting-"  # a run being deleted: renamed away first, then removed
# What TensorFlow prints at every start (CUDA probes on a CPU machine, CPU instruction sets, oneDNN):
# never the reason a run failed, so left out of the last lines shown with a failure.
STARTUP_NOISE = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called", r"oneDNN custom operations are on",
    r"Could not find cuda drivers", r"failed call to cuInit", r"cpu_feature_guard",
    r"This TensorFlow binary is optimized", r"To enable the following instructions",
    r"Unable to register cu(DNN|FFT|BLAS) factory", r"computation placer already registered",
    r"TF-TRT Warning", r"Could not find TensorRT", r"Skipping registering GPU devices",
)))
# What a run (or sweep) id may be: a safe folder name (fullmatch: "$" would let a final newline in).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")


def default_runs_dir() -> Path:
    """`CXR_RUNS_DIR` if set, else `runs/` in the project."""
    return Path(os.environ.get("CXR_RUNS_DIR", PROJECT_ROOT / "runs"))


# ----------------------------------------------------------------------------- atomic files

def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(data), indent=2))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path, default=None):
    """The file's JSON, or `default` when it is missing or not JSON (bad bytes included)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


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


# ----------------------------------------------------------------------------- one run

class Run:
    """A handle on one run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # files
    @property
    def config_path(self) -> Path: return self.path / "config.json"
    @property
    def status_path(self) -> Path: return self.path / "status.json"
    @property
    def metrics_path(self) -> Path: return self.path / "metrics.jsonl"
    @property
    def summary_path(self) -> Path: return self.path / "summary.json"
    @property
    def model_path(self) -> Path: return self.path / "model.keras"
    @property
    def tensorboard_dir(self) -> Path: return self.path / "tensorboard"
    @property
    def environment_path(self) -> Path: return self.path / "environment.json"
    @property
    def progress_path(self) -> Path: return self.path / "progress.json"
    @property
    def stop_path(self) -> Path: return self.path / "stop"
    @property
    def queued_marker(self) -> Path: return self.path / "queued"
    @property
    def stderr_path(self) -> Path: return self.path / "stderr.log"
    @property
    def checkpoint_dir(self) -> Path: return self.path / "checkpoint"
    @property
    def layers_path(self) -> Path: return self.path / "layers.json"
    @property
    def annotations_path(self) -> Path: return self.path / "annotations.json"
    @property
    def batches_path(self) -> Path: return self.path / "batches.json"
    @property
    def external_dir(self) -> Path: return self.path / "external"
    @property
    def model_card_path(self) -> Path: return self.path / "model_card.md"
    @property
    def saved_model_dir(self) -> Path: return self.path / "saved_model"
    @property
    def tflite_path(self) -> Path: return self.path / "model.tflite"

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions_{split}.npz"

    # reading
    def config(self) -> dict:
        """The run's settings as it trained with them (core.settings.config.as_trained)."""
        return as_trained(read_json(self.config_path, {}))

    def status(self) -> dict:
        """What status.json says; a missing file reads as interrupted, an unreadable one (bad bytes,
        not a JSON object) as failed with `unreadable` set and the reason."""
        try:
            status = json.loads(self.status_path.read_bytes())
        except FileNotFoundError:
            return {"state": "interrupted", "error": "status.json is missing"}
        except (OSError, ValueError) as exc:  # JSON and UTF-8 decoding errors are ValueErrors
            return unreadable_status(f"{type(exc).__name__}: {exc}")
        return status if isinstance(status, dict) else unreadable_status(f"a JSON {type(status).__name__}")

    def state(self) -> str:
        return self.status().get("state", "interrupted")

    def summary(self) -> dict:
        return read_json(self.summary_path, {})

    def history(self) -> list[dict]:
        """Per-epoch metrics; a half-written last line (never expected, files are atomic) is ignored."""
        try:
            lines = self.metrics_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def first_epoch_batches(self) -> list[dict]:
        """The first epoch batch by batch ([] for runs from before it was saved)."""
        rows = read_json(self.batches_path, [])
        return rows if isinstance(rows, list) else []

    def external_results(self) -> list[dict]:
        """Saved evaluations on other labelled datasets (external/<name>.json), newest first."""
        results = [read_json(path) for path in sorted(self.external_dir.glob("*.json"))]
        results = [r for r in results if isinstance(r, dict)]
        return sorted(results, key=lambda r: r.get("evaluated") or 0, reverse=True)

    def predictions(self, split: str = "test") -> dict | None:
        path = self.predictions_path(split)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as saved:
            data = {key: saved[key] for key in saved.files}
        data["class_names"] = [str(n) for n in data["class_names"]]
        return data

    def has_model(self) -> bool:
        return self.model_path.exists()

    def progress(self) -> dict:
        """The training process's live progress (phase, epoch, batch, images/s, ETA), or {}."""
        return read_json(self.progress_path, {})

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_live_files(self) -> None:
        """Forget a finished attempt's Stop request and progress, before the run trains again."""
        self.stop_path.unlink(missing_ok=True)
        self.progress_path.unlink(missing_ok=True)

    def checkpoint_epoch(self) -> int:
        """The last completed epoch saved for resuming (0: none)."""
        return int(read_json(self.checkpoint_dir / "state.json", {}).get("epoch", 0))

    def resume_epoch(self) -> int:
        """The epoch a resume starts with: the one after the last completed epoch."""
        return self.checkpoint_epoch() + 1

    def can_resume(self) -> bool:
        return self.state() in ("interrupted", "failed", "cancelled") and self.checkpoint_epoch() > 0

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines the training process printed (TensorFlow's native errors land here),
        without TensorFlow's start-up messages (STARTUP_NOISE)."""
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, 2) - 64_000))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        meaningful = [line for line in text.splitlines() if line.strip() and not STARTUP_NOISE.search(line)]
        return "\n".join(meaningful[-lines:])

    # writing
    def update_status(self, **fields) -> dict:
        """Change these fields of status.json (read, changed, written back under a lock every thread
        and process takes); an unreadable file is replaced. Keeps the run's wall time (segment_time)."""
        with STATUS_LOCK, locked(self.path / STATUS_FILE_LOCK):
            old = read_json(self.status_path, {})
            old = old if isinstance(old, dict) else {}
            now = time.time()
            status = {**old, **fields, **segment_time(old, fields, now), "updated": now}
            write_json(self.status_path, status)
        return status

    def last_sign_of_life(self) -> float:
        """When the run's files last changed (status or live progress): when a process that died
        unseen last trained it."""
        times = [path.stat().st_mtime for path in (self.status_path, self.progress_path) if path.exists()]
        return max(times, default=time.time())

    def wall_seconds(self) -> float | None:
        """Wall time the run has trained, all its segments (first start, each resume) together."""
        status = self.status()
        if not status.get("segment_started") and status.get("trained_s") is None:
            return None
        ongoing = time.time() - status["segment_started"] if status.get("segment_started") else 0.0
        return round((status.get("trained_s") or 0.0) + ongoing, 2)

    def append_metrics(self, row: dict) -> None:
        # Rewriting the whole (small) file keeps every write atomic.
        existing = self.metrics_path.read_text() if self.metrics_path.exists() else ""
        write_text(self.metrics_path, existing + json.dumps(json_ready(row)) + "\n")

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def write_environment(self, environment: dict) -> None:
        """Versions of Python/TensorFlow/Keras and the dataset's content hash, for reproducing the run."""
        write_json(self.environment_path, environment)

    def environment(self) -> dict:
        return read_json(self.environment_path, {})

    def write_layer_table(self, rows: list[dict]) -> None:
        """The model's layers (name, type, output shape, params, MACs), written once it is built."""
        write_json(self.layers_path, rows)

    def layer_table(self) -> list[dict]:
        """The saved per-layer table; [] for runs from before it was saved (or not built yet)."""
        rows = read_json(self.layers_path, [])
        return rows if isinstance(rows, list) else []

    def save_predictions(self, split: str, probabilities, labels, patient_ids, files, class_names) -> None:
        with atomic_path(self.predictions_path(split)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, probabilities=np.asarray(probabilities, dtype=np.float32),
                         labels=np.asarray(labels, dtype=np.int32),
                         patient_ids=np.asarray(patient_ids, dtype=str), files=np.asarray(files, dtype=str),
                         class_names=np.asarray(class_names, dtype=str))

    def save_model(self, model) -> None:
        with atomic_path(self.model_path) as tmp:
            model.save(tmp)

    def describe(self) -> dict:
        """One flat dict for tables: name, state, settings, best metrics, duration."""
        config, status, summary = self.config(), self.status(), self.summary()
        annotations = self.annotations()
        return {
            "run_id": self.id, "name": _display_name(self.id, config, annotations),
            "starred": bool(annotations.get("starred")), "tags": list(annotations.get("tags", [])),
            "notes": short_text(annotations.get("notes", "")), "sweep_id": config.get("sweep_id") or None,
            "state": status.get("state"),
            "created": status.get("created"), "arch": config.get("arch"), "task": config.get("task"),
            "image_size": config.get("image_size"), "epochs": config.get("epochs"),
            "epoch": status.get("epoch"), "best_val_loss": summary.get("best_val_loss"),
            "decision_threshold": _metric(summary, "test", "threshold"),  # what the accuracies were decided at
            "val_accuracy": _metric(summary, "val", "accuracy"),
            "test_accuracy": _metric(summary, "test", "accuracy"),
            "test_macro_f1": _metric(summary, "test", "macro_f1"),
            "test_auc": _metric(summary, "test", "auc"),
            # overfitting, at the evaluated epoch (core.ml.training.fit_at_epoch)
            **{key: _metric(summary, "overfitting", key) for key in ("train_accuracy", "train_loss", "accuracy_gap")},
            "duration_s": _duration(status),
            **self.resources(),
            "node": (status.get("node") or {}).get("host"),
            "error": status.get("error"),
        }

    def display_name(self) -> str:
        """The name the user gave the run, else its config's name, else its id."""
        return _display_name(self.id, self.config(), self.annotations())

    def annotations(self) -> dict:
        """What the user said of the run: {"name", "notes", "tags", "starred"} (only those ever set);
        an unreadable or foreign file reads as nothing said."""
        saved = read_json(self.annotations_path, {})
        if not isinstance(saved, dict):
            return {}
        try:
            return check_annotations(saved)
        except ValueError:
            return {}

    def annotate(self, **changes) -> dict:
        """Rename, describe, tag or star the run: name=, notes=, tags=, starred= (those given change;
        name=None forgets the display name). Checked first (ValueError names what is wrong); the run's
        definition, config.json, is never touched. Returns the annotations as saved."""
        unknown = sorted(set(changes) - set(ANNOTATION_KEYS))
        if unknown:
            raise ValueError(f"unknown annotation(s): {', '.join(unknown)} (known: {', '.join(ANNOTATION_KEYS)})")
        merged = {**self.annotations(), **changes}
        annotations = check_annotations({k: v for k, v in merged.items() if v is not None})
        write_json(self.annotations_path, annotations)
        return annotations

    def resources(self) -> dict:
        """What the run used: peak memory of its process, peak GPU memory, images/s, device."""
        recorded = {**self.summary().get("resources", {}), **self.status().get("resources", {})}
        return {key: recorded.get(key) for key in RESOURCE_KEYS}


def unreadable_status(reason: str) -> dict:
    """How a run whose status.json cannot be read reads: failed, saying why."""
    return {"state": "failed", "unreadable": True, "error": f"status.json is unreadable ({reason})"}


def segment_time(old: dict, fields: dict, now: float) -> dict:
    """A run trains in segments (its first start, then each resume). Entering `running` starts one
    (segment_started; the training process sets its own start when its work begins); leaving it,
    whoever records that, adds the segment to `trained_s`."""
    was, becomes = old.get("state"), fields.get("state", old.get("state"))
    if was != "running" and becomes == "running":
        return {"segment_started": fields.get("segment_started", now)}
    if was == "running" and becomes != "running" and old.get("segment_started"):
        base = fields.get("trained_s", old.get("trained_s")) or 0.0
        ended = fields.get("finished") or now
        return {"trained_s": round(base + max(0.0, ended - old["segment_started"]), 2), "segment_started": None}
    return {}


RESOURCE_KEYS = ("peak_memory_mb", "peak_gpu_memory_mb", "images_per_sec", "wall_s", "device")


ANNOTATION_KEYS = ("name", "notes", "tags", "starred")
MAX_NAME_CHARS, MAX_NOTES_CHARS, MAX_TAG_CHARS, MAX_TAGS = 120, 10_000, 32, 20
SHORT_NOTES_CHARS = 80  # the notes shown in the runs table
# A tag: one short word (lowercase letters, digits, - _ .), as W&B and TensorBoard users write them.
TAG = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check_annotations(values: dict) -> dict:
    """The annotations cleaned (name and notes stripped, tags lowercased without repeats), or
    ValueError saying which one is wrong and why."""
    checked = {}
    if "name" in values:
        checked["name"] = check_run_name(values["name"])
    if "notes" in values:
        checked["notes"] = check_notes(values["notes"])
    if "tags" in values:
        checked["tags"] = check_tags(values["tags"])
    if "starred" in values:
        if not isinstance(values["starred"], bool):
            raise ValueError(f"starred must be true or false, not {values['starred']!r}")
        checked["starred"] = values["starred"]
    return checked


def check_run_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a run's name must not be empty")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a run's name may have at most {MAX_NAME_CHARS} characters, not {len(name)}")
    return name


def check_notes(notes) -> str:
    if not isinstance(notes, str):
        raise ValueError(f"notes must be text, not {type(notes).__name__}")
    if len(notes) > MAX_NOTES_CHARS:
        raise ValueError(f"notes may have at most {MAX_NOTES_CHARS} characters, not {len(notes)}")
    return notes.strip()


def check_tags(tags) -> list[str]:
    """Tags as a list or a comma-separated text: lowercased, repeats dropped, order kept."""
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError("tags must be a list of words (or words separated by commas)")
    cleaned = list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))
    for tag in cleaned:
        if len(tag) > MAX_TAG_CHARS or not TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: a tag is one word of at most {MAX_TAG_CHARS} letters, digits, "
                             "'-', '_' or '.', starting with a letter or digit")
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"a run may have at most {MAX_TAGS} tags, not {len(cleaned)}")
    return cleaned


def short_text(text: str, limit: int = SHORT_NOTES_CHARS) -> str:
    """The first line of `text`, cut to `limit` characters with '…'."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    cut = first if len(first) <= limit else first[:limit - 1].rstrip() + "…"
    return cut + (" …" if first != text.strip() and cut == first else "")


def _display_name(run_id: str, config: dict, annotations: dict) -> str:
    return annotations.get("name") or config.get("name") or run_id


def _duration(status: dict) -> float | None:
    """Seconds an ended run trained: its segments together (segment_time), else, for runs from
    before they were kept, start to finish."""
    started, finished = status.get("started"), status.get("finished")
    if not finished:
        return None
    if status.get("trained_s") is not None and not status.get("segment_started"):
        return round(status["trained_s"], 1)
    return round(finished - started, 1) if started else None


def _metric(summary: dict, split: str, key: str):
    return (summary.get(split) or {}).get(key)


# ----------------------------------------------------------------------------- the store

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
