"""The dashboard's workers: one job manager per runs folder in a process, started with the server.

`streamlit run app.py` serves the st.App that app.py declares; its lifespan (`dashboard_lifespan`)
runs before the server takes its first request. So the queue trains from the moment the dashboard
is up (runs submitted with `python -m core train --submit`, runs queued before a restart), whether
or not a browser tab is ever opened. Pages reach the same manager through `shared_manager()`.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import threading

from core.ast_guard import guard_ast_parsing
from core.store.runs import RunStore, default_runs_dir

log = logging.getLogger(__name__)

# Imported once, before the server takes its first request. Importing them parses Python source
# (numpy.ma and TensorFlow's numpy API read builtins' text signatures with ast.parse); CPython 3.11
# before 3.11.8 corrupts its AST state when two threads do that at once (gh-106905), so no page may
# be running meanwhile.
WARM_UP_MODULES = ("pandas", "altair", "sklearn", "keras")

_managers: dict = {}  # runs folder -> its JobManager
_managers_lock = threading.Lock()


def shared_manager(runs_root: str | None = None):
    """The job manager of this process for `runs_root` (default: $CXR_RUNS_DIR or runs/), started
    on first use and shared by every page, session and the server's lifespan."""
    root = str(runs_root or default_runs_dir())
    with _managers_lock:  # held while starting it: two callers must never start two managers
        manager = _managers.get(root)
        if manager is None:
            from core.workers.manager import JobManager  # core.ml.training comes with it, still without TensorFlow
            manager = _managers[root] = JobManager(RunStore(root))
        return manager


def shutdown_all(cancel_running: bool = False) -> None:
    """Shut down every manager of this process. Without `cancel_running`, runs in training are left
    `interrupted`, to be resumed from their last completed epoch (as a worker does on Ctrl-C)."""
    with _managers_lock:
        running = list(_managers.values())
        _managers.clear()
    for manager in running:
        manager.shutdown(cancel_running=cancel_running)


def warm_up() -> None:
    """Import what pages need (Keras too) now, so the first page and the Train page are quick."""
    for name in WARM_UP_MODULES:
        importlib.import_module(name)


def start_dashboard() -> None:
    """What a dashboard process does before it serves: import, then start training the queue."""
    guard_ast_parsing()
    warm_up()
    try:
        manager = shared_manager()
    except (ConnectionError, ValueError) as exc:  # e.g. $CXR_RAY_ADDRESS names no cluster: pages say so
        log.error("no job manager: %s", exc)
        return
    log.info("training the queue of %s (%d queued)", manager.store.root, len(manager.store.queued()))


@contextlib.asynccontextmanager
async def dashboard_lifespan(_app):
    """st.App lifespan: the workers live as long as the server."""
    start_dashboard()
    try:
        yield
    finally:
        shutdown_all(cancel_running=False)
