"""CIFAR-10 and CIFAR-100 "python version" tarballs (cifar-10-python.tar.gz, cifar-100-python.tar.gz).

Their members are pickled dicts of arrays. A pickle can run any code it names, so the members are
read by `SafeUnpickler`, which builds only numpy arrays (the three globals these files name) and
refuses every other global before anything is called; the tarball passes the archive guard
(core/data/archives.py) before a member is read.

CIFAR-10:  data_batch_1..5 and test_batch ({b'data': uint8 (N, 3072), b'labels', b'filenames', ...}),
           batches.meta ({b'label_names'}).
CIFAR-100: train and test ({b'data', b'fine_labels', b'coarse_labels', b'filenames', ...}),
           meta ({b'fine_label_names', b'coarse_label_names'}).
"""
from __future__ import annotations

import io
import pickle
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.archives import CIFAR_TAR, UnsafeArchive, check_tar
from core.data.layout import DataError
from core.data.formats import CIFAR10_MEMBERS, CIFAR100_MEMBERS


def _numpy_globals() -> dict:
    """The globals a pickled numpy array names: those the files were written with (numpy.core...)
    and those numpy 2 writes (numpy._core...), mapped to this numpy's own objects."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    return {("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


ALLOWED_GLOBALS = _numpy_globals()


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: any other global is refused before it is called."""

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(f"refused: the pickle asks for {module}.{name}, which a CIFAR batch never needs "
                            "(only numpy arrays are read from these files; nothing in it was run)")
        return allowed


def unpickle(data: bytes, member: str) -> dict:
    """A CIFAR member's dict (bytes keys, as the files were written by Python 2); DataError otherwise."""
    try:
        loaded = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{member}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many types
        raise DataError(f"{member} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{member} is not a CIFAR batch (a {type(loaded).__name__}, not a dict)")
    return loaded


# ----------------------------------------------------------------------------- the tarball

def _guarded_names(path: Path) -> list[str]:
    """The file members' base names, once the archive guard passed."""
    try:
        members = check_tar(path, CIFAR_TAR)
    except UnsafeArchive as exc:
        raise DataError(f"{path.name} is refused: {exc}") from None
    return [posixpath.basename(info.name) for info in members if info.isfile()]


def variant(names) -> str:
    """'cifar-10' or 'cifar-100' from the member names; DataError for any other tarball."""
    names = set(names)
    if {"data_batch_1", "test_batch", "batches.meta"} <= names:
        return "cifar-10"
    if set(CIFAR100_MEMBERS) <= names:
        return "cifar-100"
    raise DataError("not a CIFAR python tarball: expected data_batch_1..5, test_batch and batches.meta "
                    f"(CIFAR-10) or train, test and meta (CIFAR-100); found {', '.join(sorted(names)[:8]) or 'no files'}")


def describe(path: Path) -> str:
    name = variant(_guarded_names(path))
    return (f"a {name.upper()} python tarball" +
            (" (fine or coarse labels: choose below)" if name == "cifar-100" else ""))


def _read_members(path: Path, wanted: set[str], check) -> dict[str, bytes]:
    """The bytes of the members named `wanted` (by base name), in one pass over the archive."""
    found = {}
    with tarfile.open(path, "r:*") as archive:
        for info in archive:
            base = posixpath.basename(info.name)
            if info.isfile() and base in wanted and base not in found:
                check()
                found[base] = archive.extractfile(info).read()
    return found


@dataclass
class Batch:
    member: str
    split: str              # "train" | "test"
    images: np.ndarray      # uint8 (N, 32, 32, 3)
    labels: np.ndarray      # int32 (N,)
    files: list[str]


def read(path: Path, label_level: str = "fine", check=lambda: None) -> tuple[list[Batch], list[str]]:
    """(batches, class names) of a CIFAR tarball; `label_level` (fine | coarse) picks CIFAR-100's labels."""
    name = variant(_guarded_names(path))
    members = CIFAR10_MEMBERS if name == "cifar-10" else CIFAR100_MEMBERS
    try:
        raw = _read_members(path, set(members), check)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path.name} cannot be read ({exc})") from None
    meta_member = members[-1]
    if meta_member not in raw:
        raise DataError(f"{path.name} has no {meta_member}: the class names are there")
    meta = unpickle(raw.pop(meta_member), meta_member)
    labels_key, names_key = ((b"labels", b"label_names") if name == "cifar-10" else
                             (f"{label_level}_labels".encode(), f"{label_level}_label_names".encode()))
    class_names = [_text(n) for n in _field(meta, names_key, meta_member)]
    batches = [_batch(member, unpickle(raw[member], member), labels_key)
               for member in members[:-1] if member in raw]
    return batches, class_names


def _batch(member: str, content: dict, labels_key: bytes) -> Batch:
    data = np.asarray(_field(content, b"data", member))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{member}: data is {data.dtype} {data.shape}, not CIFAR's uint8 (N, 3072)")
    labels = np.asarray(_field(content, labels_key, member), dtype=np.int32).reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{member}: {len(labels)} labels for {len(data)} images")
    # Each row is the red, then green, then blue plane of a 32x32 image, row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    names = content.get(b"filenames")
    if names is None or len(names) != len(data):
        names = [f"{i}.png" for i in range(len(data))]
    files = [f"{member}/{_text(n)}" for n in names]
    return Batch(member, "test" if "test" in member else "train", images, labels, files)


def _field(content: dict, key: bytes, member: str):
    if key not in content:
        found = ", ".join(sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in content))
        raise DataError(f"{member} has no {key.decode()} (found: {found})")
    return content[key]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
