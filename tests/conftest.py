"""Shared fixtures and the suite's rules.

Isolation: every folder the app writes to (CXR_CACHE_DIR, CXR_RUNS_DIR, CXR_UPLOADS_DIR) points
into pytest's temporary folders, for fixtures of any scope and for the processes tests start; the
decoded-dataset cache is shared by the whole session, runs and uploads are per test. A session that
leaves new files in the project's own .cache/ or runs/ fails (see pytest_sessionfinish).

Runs: `tiny_run`, one run trained for real once per session, read-only (`tiny_run_copy` or
`copy_run` for a test that changes it); `write_run` / `make_run` for runs in any state written the
way the trainer writes them, without training.

Tiers: tests marked `slow` (real browser, training-heavy, worker processes), in their own files
(@pytest.mark.slow, or pytestmark for a whole file), are left out by `make test-fast`.
"""
from __future__ import annotations

import copy
import functools
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.ml import metrics as metrics_lib
from core.settings.config import TrainConfig
from core.store import runs
from core.store.run_folder import Run
from core.store.runs import RunStore
from core.workers import service
from core.workers.manager import JobManager
from tests.synthetic import make_chest_folder

CHEST_CLASSES = ("NORMAL", "PNEUMONIA")
PROJECT = Path(__file__).resolve().parents[1]
# Where the app writes when no CXR_* folder is set: a test run must leave them as it found them.
PROJECT_OUTPUTS = (".cache", "runs", "data/uploads")
# The one tiny run of the session: seed_cnn, 1 epoch at 32 px on the built-in set.
TINY_RUN = dict(name="tiny", arch="seed_cnn", image_size=32, epochs=1, batch_size=64)

# ----------------------------------------------------------------------------- isolation

@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory) -> Path:
    """One decoded-dataset cache for the whole session, so the built-in set is decoded once per size."""
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="session", autouse=True)
def session_folders(tmp_path_factory, shared_cache_dir) -> Path:
    """The app's folders point into the session's temporary folder, also for module- and
    session-scoped fixtures, which start before any per-test fixture."""
    base = tmp_path_factory.mktemp("session")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_CACHE_DIR", str(shared_cache_dir))
        patch.setenv("CXR_RUNS_DIR", str(base / "runs"))
        patch.setenv("CXR_UPLOADS_DIR", str(base / "uploads"))
        yield base


@pytest.fixture(autouse=True)
def test_folders(session_folders, tmp_path, monkeypatch) -> Path:
    """Runs and uploads of one test stay in its own tmp_path (tmp_path/runs, tmp_path/uploads)."""
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(tmp_path / "uploads"))
    return tmp_path


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """A dataset cache of this test's own, for tests of the caching itself (first load decodes)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CXR_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_spare_training_process(monkeypatch):
    """Job managers made by tests (and by pages under AppTest) start no idle spare process; the
    worker tests and the served dashboards use one."""
    monkeypatch.setenv("CXR_SPARE_PROCESS", "0")


@pytest.fixture(autouse=True)
def job_managers_end_with_their_test():
    """Pages under AppTest start the process's job manager (core/workers/service.py): it is shut down
    at the end of the test that started it (its training processes killed), and no test may leave a
    manager's slot threads running, as a cached manager once did: its runs trained into later tests."""
    yield
    service.shutdown_all(cancel_running=False)
    leaked = [thread.name for thread in threading.enumerate() if thread.name.startswith("cxr-job-slot")]
    assert not leaked, f"a job manager outlived its test (shut it down, or use the `manager` fixture): {leaked}"


@pytest.fixture(autouse=True)
def data_root_stays_per_test():
    """Under AppTest, pages see a non-local server address and set CXR_DATA_ROOT in os.environ
    (ui/common.limit_server_paths_when_shared): do not let that reach later tests."""
    before = os.environ.get("CXR_DATA_ROOT")
    yield
    if before is None:
        os.environ.pop("CXR_DATA_ROOT", None)
    else:
        os.environ["CXR_DATA_ROOT"] = before


def project_outputs() -> set[str]:
    """The files under the project's own .cache/ and runs/, relative to the project."""
    return {str(path.relative_to(PROJECT)) for folder in PROJECT_OUTPUTS
            for path in (PROJECT / folder).rglob("*") if not path.is_dir()}


OUTPUTS_BEFORE = pytest.StashKey[set]()
OUTPUTS_WRITTEN = pytest.StashKey[list]()


def pytest_sessionstart(session):
    session.config.stash[OUTPUTS_BEFORE] = project_outputs()


# ----------------------------------------------------------------------------- parallel runs

# `make test` (PARALLEL="-n 2 --dist loadfile") runs the suite on pytest-xdist workers, a file's tests
# together on one worker, in order, sharing its module fixtures. These files also share one worker
# with each other: each starts a Ray head, and two heads would compete for Ray's fixed ports (such as
# its client server's 10001).
SAME_WORKER = {"test_ray.py": "ray", "test_scale_browser.py": "ray"}


def worker_scope(nodeid: str) -> str:
    """What one xdist worker runs as a whole: the test's file, or the group of files it shares a worker with."""
    path = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(Path(path).name, path)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without xdist
def pytest_xdist_make_scheduler(config, log):
    """xdist's own `loadgroup` does not group on pytest 9.2 (it renames items through `_nodeid`, which
    pytest 9.2 no longer reads: pytest-dev/pytest-xdist#1386), so files are scheduled here, by worker_scope."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_scope(nodeid)

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first, so that the last work handed to a worker is short and no worker
    idles at the end (xdist hands out files in collection order)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file keeps its order


# ----------------------------------------------------------------------------- run stores

@pytest.fixture
def runs_dir(test_folders) -> Path:
    """This test's run store folder (created, empty), which CXR_RUNS_DIR names."""
    root = test_folders / "runs"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def app_env(runs_dir) -> Path:
    """Environment for the dashboard: this test's runs folder, the shared dataset cache, private
    uploads (all set by the autouse fixtures; kept as a name pages' tests read well with)."""
    return runs_dir


@pytest.fixture
def store(runs_dir) -> RunStore:
    return RunStore(runs_dir)


@pytest.fixture
def manager(store):
    """A job manager training the runs of `store`, shut down after the test."""
    jobs = JobManager(store)
    yield jobs
    jobs.shutdown()


@pytest.fixture(scope="session")
def chest_folder(tmp_path_factory) -> Path:
    """A tiny Kermany-style folder (tests/synthetic.make_chest_folder, 8 patients a class): read only."""
    return make_chest_folder(tmp_path_factory.mktemp("xrays"), n_patients=8)


# ----------------------------------------------------------------------------- the tiny trained run

def run_files(run: Run) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(run.path)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in run.path.rglob("*") if path.is_file()}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Run:
    """A seed_cnn trained for real (TINY_RUN: 1 epoch, 32 px, the built-in set), once per session.
    Read it, never change it (the Diagnoser writes ood.npz into a run: use a copy for that); the
    session fails at its end if any file of it changed."""
    from core.ml.training import execute_run
    config = TrainConfig(**TINY_RUN)
    run = RunStore(tmp_path_factory.mktemp("tiny-run")).create(config.to_dict(), name=config.name)
    execute_run(run, config)
    assert run.state() == "done", run.status().get("error")
    before = run_files(run)
    yield run
    changed = sorted(set(before.items()) ^ set(run_files(run).items()))
    assert not changed, f"a test changed the shared tiny_run (use tiny_run_copy or copy_run): {changed}"


# A seed_cnn small enough to train in seconds on a synthetic folder (the worker and Ray tests).
TINY_FOLDER_RUN = dict(arch="seed_cnn", image_size=32, batch_size=8, arch_params={"dense_units": 16},
                       early_stopping=False)


def tiny_folder_config(folder, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY_FOLDER_RUN, **overrides}, data_source="folder", data_path=str(folder))


def trained_a_batch(progress: dict) -> bool:
    """A training process's progress (run.progress()) says it is training, past a first batch."""
    return progress.get("phase") == "training" and (progress.get("batch", 0) >= 1 or progress.get("epoch", 0) >= 1)


def wait_until(condition, timeout: float = 120, what: str = "condition"):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def copy_run(run: Run, folder: Path) -> Run:
    """A copy of `run` in the run store `folder`, for a test that changes it."""
    shutil.copytree(run.path, Path(folder) / run.id)
    return RunStore(folder).get(run.id)


@pytest.fixture
def tiny_run_copy(tiny_run, runs_dir) -> Run:
    """This test's own copy of tiny_run, in its run store (the one CXR_RUNS_DIR names)."""
    return copy_run(tiny_run, runs_dir)

# ----------------------------------------------------------------------------- runs without training

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
    predictions, metrics = _fake_results(tuple(class_names), seed)
    for split in ("val", "test"):
        run.save_predictions(split, *predictions[split], class_names)
    run.write_summary({"class_names": list(class_names), "best_epoch": 2, "best_val_loss": 0.4 + seed / 100,
                       "seconds": 30.0, "model": {"trainable_params": 1000, "total_params": 1000, "macs": 5000},
                       **copy.deepcopy(metrics)})


@functools.lru_cache(maxsize=None)
def _fake_results(class_names: tuple, seed: int) -> tuple[dict, dict]:
    """Predictions and metrics of a finished fake run; computed once per (classes, seed), since the
    threshold search alone takes a third of a second and pages' tests write many runs."""
    predictions = {split: fake_predictions(40, class_names, seed + offset)
                   for offset, split in enumerate(("val", "test"))}
    threshold = metrics_lib.decision_threshold(*predictions["val"][:2], class_names)  # as training does
    metrics = {split: metrics_lib.classification_metrics(*predictions[split][:2], class_names, threshold)
               for split in predictions}
    return predictions, {**metrics, "threshold": threshold}


@pytest.fixture
def make_run(store):
    """Factory: make_run(state="done", name="", epochs=3, seed=0, error=None, **TrainConfig fields)."""
    def factory(state: str = "done", **kwargs):
        return write_run(store, state, **kwargs)
    return factory


# Threads the dashboard starts that run TensorFlow code and then end by themselves.
WARM_UP_THREADS = ("diagnose-warm-up",)


def pytest_sessionfinish(session, exitstatus):
    """Let the dashboard's warm-up threads end before the interpreter does (a thread still inside
    TensorFlow when Python exits aborts the process, exit 134, after every test passed); then fail
    the session if it left new files in the project's .cache/ or runs/."""
    for thread in threading.enumerate():
        if thread.name in WARM_UP_THREADS:
            thread.join(timeout=120)
    written = sorted(project_outputs() - session.config.stash.get(OUTPUTS_BEFORE, set()))
    session.config.stash[OUTPUTS_WRITTEN] = written
    if written:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = config.stash.get(OUTPUTS_WRITTEN, [])
    if written:
        terminalreporter.section("ERROR: tests wrote into the project", red=True, bold=True)
        terminalreporter.line(f"{len(written)} new file(s) in {' and '.join(PROJECT_OUTPUTS)}: every test must "
                              "write only under its tmp folders (tests/conftest.py sets CXR_*_DIR):", red=True)
        for name in written[:20]:
            terminalreporter.line(f"  {name}", red=True)
