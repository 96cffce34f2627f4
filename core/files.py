"""The one way files are written: to a unique temp file beside the target, flushed to disk, then
renamed over it, so a reader never sees half a file (nor, after a crash, an empty one) and two
writers never share a temp file (`write_json`, `write_text`; `read_json` reads one back). And the
one way results become JSON: `json_ready`. `locked` keeps readers of several files (a SavedModel folder) apart from
the work that replaces them."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: Path):
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-2:]),
                               dir=path.parent)  # Keras wants its ".weights.h5"
    os.close(fd)
    try:
        yield Path(tmp)
        _flush_to_disk(tmp)  # else a crash soon after the rename can leave an empty file in its place
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _flush_to_disk(path: str) -> None:
    """fsync a file (a folder, e.g. a SavedModel, is left to the OS)."""
    if os.path.isdir(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(lock_path: Path, shared: bool = False):
    """Hold a lock on `lock_path` (created if missing) for the block: exclusive for a writer, or
    `shared` for a reader (any number of readers at once, never beside a writer). Other processes
    and threads wait; the OS releases it if the holder dies. Not re-entrant: a holder that asks
    again on another handle waits for itself."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def json_ready(value):
    """`value` with numpy scalars and arrays, tuples and paths turned into JSON builtins, recursively;
    NaN and infinity become None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


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
