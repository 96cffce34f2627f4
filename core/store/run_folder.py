"""One run's folder: `Run` reads and writes its files (config, status, metrics, summary, predictions,
model, live progress, annotations...), each written atomically. The folders and the queue they form
together: core/store/runs.py (`RunStore`); the files of a run folder are listed there."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np

from core.files import atomic_path, json_ready, locked, read_json, write_json, write_text
from core.settings.config import as_trained
from core.store.annotations import ANNOTATION_KEYS, check_annotations, short_text


STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
# status.json is read, changed and written back: threads of one process take turns (a training
# process's parent watch must not have its "interrupted" overwritten by the epoch's own update), and
# processes too (a file lock beside it: the manager, the training process, a dashboard's Stop).
STATUS_LOCK = threading.RLock()
STATUS_FILE_LOCK = ".status.lock"
# What TensorFlow prints at every start (CUDA probes on a CPU machine, CPU instruction sets, oneDNN):
# never the reason a run failed, so left out of the last lines shown with a failure.
STARTUP_NOISE = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called", r"oneDNN custom operations are on",
    r"Could not find cuda drivers", r"failed call to cuInit", r"cpu_feature_guard",
    r"This TensorFlow binary is optimized", r"To enable the following instructions",
    r"Unable to register cu(DNN|FFT|BLAS) factory", r"computation placer already registered",
    r"TF-TRT Warning", r"Could not find TensorRT", r"Skipping registering GPU devices",
)))


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
        # Not rounded: rounding each segment would add up (two segments could read 0.01 s longer than they were).
        return {"trained_s": base + max(0.0, ended - old["segment_started"]), "segment_started": None}
    return {}


RESOURCE_KEYS = ("peak_memory_mb", "peak_gpu_memory_mb", "images_per_sec", "wall_s", "device")


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
