"""The run store: one folder per run, every file written atomically (temp file + rename).

    runs/<run_id>/config.json        the TrainConfig, enough to re-run
    runs/<run_id>/status.json        state, timestamps, error and traceback
    runs/<run_id>/metrics.jsonl      one JSON line per epoch
    runs/<run_id>/summary.json       final val/test metrics, model size, split report
    runs/<run_id>/environment.json   Python/TensorFlow/Keras versions, dataset content hash
    runs/<run_id>/model.keras        the best model
    runs/<run_id>/predictions_{val,test}.npz   probabilities, labels, patient ids, files
    runs/<run_id>/tensorboard/       event files: `tensorboard --logdir runs`
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from core.data import PROJECT_ROOT
from core.files import atomic_path

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
# Tells this process's runs from those of an earlier process that had the same pid.
PROCESS_TOKEN = uuid.uuid4().hex
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def default_runs_dir() -> Path:
    """`CXR_RUNS_DIR` if set, else `runs/` in the project."""
    return Path(os.environ.get("CXR_RUNS_DIR", PROJECT_ROOT / "runs"))


# ----------------------------------------------------------------------------- atomic files

def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=False))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions_{split}.npz"

    # reading
    def config(self) -> dict:
        return read_json(self.config_path, {})

    def status(self) -> dict:
        return read_json(self.status_path, {"state": "interrupted", "error": "status.json is missing"})

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

    # writing
    def update_status(self, **fields) -> dict:
        status = {**read_json(self.status_path, {}), **fields, "updated": time.time()}
        write_json(self.status_path, status)
        return status

    def append_metrics(self, row: dict) -> None:
        # Rewriting the whole (small) file keeps every write atomic.
        existing = self.metrics_path.read_text() if self.metrics_path.exists() else ""
        write_text(self.metrics_path, existing + json.dumps(row, default=_json_default) + "\n")

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def write_environment(self, environment: dict) -> None:
        """Versions of Python/TensorFlow/Keras and the dataset's content hash, for reproducing the run."""
        write_json(self.environment_path, environment)

    def environment(self) -> dict:
        return read_json(self.environment_path, {})

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

    def load_model(self):
        import keras
        return keras.models.load_model(self.model_path, safe_mode=True, compile=False)

    def describe(self) -> dict:
        """One flat dict for tables: name, state, settings, best metrics, duration."""
        config, status, summary = self.config(), self.status(), self.summary()
        started, finished = status.get("started"), status.get("finished")
        return {
            "run_id": self.id, "name": config.get("name") or self.id, "state": status.get("state"),
            "created": status.get("created"), "arch": config.get("arch"), "task": config.get("task"),
            "image_size": config.get("image_size"), "epochs": config.get("epochs"),
            "epoch": status.get("epoch"), "best_val_loss": summary.get("best_val_loss"),
            "val_accuracy": _metric(summary, "val", "accuracy"),
            "test_accuracy": _metric(summary, "test", "accuracy"),
            "test_macro_f1": _metric(summary, "test", "macro_f1"),
            "test_auc": _metric(summary, "test", "auc"),
            "duration_s": round(finished - started, 1) if started and finished else None,
            "error": status.get("error"),
        }


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

    def create(self, config: dict, name: str = "") -> Run:
        run = Run(self.root / self.new_run_id(name))
        run.path.mkdir(parents=True)
        write_json(run.config_path, config)
        run.update_status(state="queued", created=time.time(), pid=os.getpid(), host=socket.gethostname(),
                          owner=PROCESS_TOKEN)
        return run

    def get(self, run_id: str) -> Run:
        if not _RUN_ID_RE.match(run_id or ""):
            raise KeyError(f"invalid run id {run_id!r}")
        run = Run(self.root / run_id)
        if not run.config_path.exists():
            raise KeyError(f"no run {run_id!r} in {self.root}")
        return run

    def list(self) -> list[Run]:
        """Runs newest first; folders without a config (half-created, foreign) are left out."""
        runs = [Run(p) for p in self.root.iterdir() if p.is_dir() and (p / "config.json").exists()]
        return sorted(runs, key=lambda r: (r.status().get("created") or 0, r.id), reverse=True)

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.state() in ACTIVE_STATES and pid_alive(run.status().get("pid")):
            raise RuntimeError(f"run {run_id} is {run.state()}: cancel it before deleting")
        shutil.rmtree(run.path)

    def mark_orphans_interrupted(self) -> list[str]:
        """Runs left queued/running by a process that is gone are marked interrupted."""
        marked = []
        for run in self.list():
            status = run.status()
            if status.get("state") not in ACTIVE_STATES or status.get("owner") == PROCESS_TOKEN:
                continue
            pid = status.get("pid")
            if status.get("host") != socket.gethostname():
                continue  # another machine's run (shared folder): we cannot tell if it lives
            if pid != os.getpid() and pid_alive(pid):
                continue  # another live process on this machine (e.g. the CLI) owns it
            run.update_status(state="interrupted", finished=time.time(),
                              error="the process running this job stopped before it finished")
            marked.append(run.id)
        return marked
