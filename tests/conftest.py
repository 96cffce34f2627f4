"""Shared fixtures: isolated run stores and dataset caches, and runs in any state written the way
the trainer writes them (config, status, metrics, summary, predictions), without training."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.ml import metrics as metrics_lib
from core.settings.config import TrainConfig
from core.store import runs
from core.store.runs import RunStore

CHEST_CLASSES = ("NORMAL", "PNEUMONIA")


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory) -> Path:
    """One decoded-dataset cache for the whole session, so the built-in set is decoded once."""
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(autouse=True)
def no_spare_training_process(monkeypatch):
    """Job managers made by tests (and by pages under AppTest) start no idle spare process; the
    worker tests and the served dashboards use one."""
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")


@pytest.fixture(autouse=True)
def data_root_stays_per_test():
    """Under AppTest, pages see a non-local server address and set CXR_DATA_ROOT in os.environ
    (pages/common.limit_server_paths_when_shared): do not let that reach later tests."""
    before = os.environ.get("CXR_DATA_ROOT")
    yield
    if before is None:
        os.environ.pop("CXR_DATA_ROOT", None)
    else:
        os.environ["CXR_DATA_ROOT"] = before


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty run store folder, also set as CXR_RUNS_DIR (what the app and the CLI read)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("CXR_RUNS_DIR", str(root))
    return root


@pytest.fixture
def app_env(runs_dir, shared_cache_dir, tmp_path, monkeypatch) -> Path:
    """Environment for the dashboard: empty runs folder, shared dataset cache, private uploads."""
    monkeypatch.setenv("CXR_CACHE_DIR", str(shared_cache_dir))
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(tmp_path / "uploads"))
    return runs_dir


@pytest.fixture
def store(runs_dir) -> RunStore:
    return RunStore(runs_dir)


def fake_predictions(n: int, class_names, seed: int = 0, skill: float = 2.0):
    """Probabilities that mostly favour the true class (higher skill = better), labels and files."""
    rng = np.random.default_rng(seed)
    k = len(class_names)
    labels = np.arange(n) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    files = np.array([f"{class_names[label]}/img{i:04d}.jpeg" for i, label in enumerate(labels)])
    patients = np.array([f"patient{i // 2}" for i in range(n)])
    return probabilities.astype(np.float32), labels, patients, files


def write_run(store: RunStore, state: str = "done", name: str = "", epochs: int = 3, seed: int = 0,
              class_names=CHEST_CLASSES, error: str | None = None, **config_overrides):
    """A run folder in `state`, as the trainer would leave it. Finished ('done') runs get epochs
    of history, predictions for val and test and a summary; running ones get part of the history."""
    config = TrainConfig(name=name, epochs=epochs, seed=seed, **config_overrides)
    # Not put in the queue: a page's job manager would train a written run.
    run = store.create(config.to_dict(), name=name or config.arch, queued=False)
    if state == "running":  # trained by a live process: this one, as a worker's training process would be
        run.update_status(trainer=runs.this_process(), worker=runs.this_process())
    now = time.time()
    done_epochs = {"done": epochs, "running": max(1, epochs // 2), "failed": 1}.get(state, 0)
    for epoch in range(1, done_epochs + 1):
        run.append_metrics({"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.6 + 0.1 * epoch / epochs,
                            "val_loss": 1.1 / epoch, "val_accuracy": 0.55 + 0.1 * epoch / epochs,
                            "learning_rate": config.learning_rate, "seconds": 2.0,
                            "images_per_sec": 1000.0 + seed})
    run.update_status(state=state, started=now - 30, epoch=done_epochs, epochs=epochs,
                      **({"finished": now} if state not in ("queued", "running") else {}),
                      **({"error": error, "traceback": f"Traceback (most recent call last):\n{error}"}
                         if error else {}))
    if state == "done":
        _write_results(run, class_names, seed)
    return run


def _write_results(run, class_names, seed: int) -> None:
    summary = {"class_names": list(class_names), "best_epoch": 2, "best_val_loss": 0.4 + seed / 100,
               "seconds": 30.0, "model": {"trainable_params": 1000, "total_params": 1000, "macs": 5000}}
    for offset, split in enumerate(("val", "test")):
        probabilities, labels, patients, files = fake_predictions(40, class_names, seed + offset)
        run.save_predictions(split, probabilities, labels, patients, files, class_names)
        summary[split] = metrics_lib.classification_metrics(probabilities, labels, class_names)
    best = metrics_lib.f1_vs_threshold(*fake_predictions(40, class_names, seed)[:2], class_names)
    summary["threshold"] = best["best_threshold"] if best else None
    run.write_summary(summary)


@pytest.fixture
def make_run(store):
    """Factory: make_run(state="done", name="", epochs=3, seed=0, error=None, **TrainConfig fields)."""
    def factory(state: str = "done", **kwargs):
        return write_run(store, state, **kwargs)
    return factory


# Threads the dashboard starts that run TensorFlow code and then end by themselves.
WARM_UP_THREADS = ("cxr-warm-up", "diagnose-warm-up")


def pytest_sessionfinish(session, exitstatus):
    """Let the dashboard's warm-up threads end before the interpreter does: a thread still inside
    TensorFlow when Python exits aborts the process (exit 134) after every test passed."""
    for thread in threading.enumerate():
        if thread.name in WARM_UP_THREADS:
            thread.join(timeout=120)
