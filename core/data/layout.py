"""What every data module shares: the error types, where data lives (the decoded-image cache, uploads,
and the data root of a shared dashboard), how an image tree is laid out (class and split folders) and
how a dataset setting is checked.
Imports nothing of core/data, so the format readers and the loader can all import it."""
from __future__ import annotations

import os
from pathlib import Path

from core.settings.config import SETTINGS
from core.settings.paths import PROJECT_ROOT

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
SPLIT_NAMES = ("train", "val", "test")
LIST_REPORT_EVERY = 2000  # files listed between two progress reports (total 0: still counting)


class DataError(ValueError):
    """A dataset that cannot be used; the message names the problem and what to do."""


class LoadCancelled(DataError):
    """Loading was cancelled; the partly decoded cache was removed, nothing else changed."""


def check_setting(name: str, value) -> None:
    """A dataset setting checked against its declaration (core.settings.config), as a DataError."""
    try:
        SETTINGS[name].check(value)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def is_chest_xray_layout(class_folders) -> bool:
    return {c.upper() for c in class_folders} == {"NORMAL", "PNEUMONIA"}


def cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE_DIR", PROJECT_ROOT / ".cache" / "datasets"))


def uploads_dir() -> Path:
    """Where uploaded datasets are kept: `CXR_UPLOADS_DIR`, else `data/uploads/` in the project. Not
    under .cache (which `make clean` removes): runs were trained on them."""
    return Path(os.environ.get("CXR_UPLOADS_DIR", PROJECT_ROOT / "data" / "uploads"))


# Where uploads were kept before: runs trained then name files there (see find_upload).
LEGACY_UPLOADS_DIR = PROJECT_ROOT / ".cache" / "uploads"


def find_upload(path: Path) -> Path:
    """`path` itself, or, for an upload of the old folder (.cache/uploads) that is gone from there,
    the same file in the uploads folder (an upload's name is its content's hash, so the same name
    is the same file; `make clean` moves old uploads over)."""
    if path.exists() or path.parent.resolve() != LEGACY_UPLOADS_DIR.resolve():
        return path
    moved = uploads_dir() / path.name
    if moved.exists():
        return moved
    raise DataError(f"{path} was an upload kept in the old uploads folder (.cache/uploads), which is gone "
                    f"(`make clean` removes .cache). Upload the same file again: it is kept in {uploads_dir()} "
                    "under the same name, and this run's settings find it there")


def data_root() -> Path | None:
    """`CXR_DATA_ROOT`: when set (a dashboard shared on a network), server paths must lie inside it."""
    root = os.environ.get("CXR_DATA_ROOT")
    return Path(root).expanduser().resolve() if root else None


def check_data_root(path: Path) -> None:
    """Refuse a server path outside the data root (uploads are always allowed)."""
    root = data_root()
    if root is None:
        return
    resolved = path.resolve()
    uploads = (uploads_dir().resolve(), LEGACY_UPLOADS_DIR.resolve())
    if not any(resolved.is_relative_to(allowed) for allowed in (root, *uploads)):
        raise DataError(f"{path} is outside the data folder {root}: this dashboard is shared on a network, "
                        f"so it reads server paths only inside that folder (CXR_DATA_ROOT)")
