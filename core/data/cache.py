"""The decoded-image cache: one uncompressed .npy per dataset and settings, written row by row while
images are decoded (never all in memory), with a sidecar .meta.npz written last; read back
memory-mapped and read-only (or row by row with pread), so the dashboard and every training process
share the operating system's page cache. Keyed by the source's content and the settings."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from core.data.layout import DataError
from core.files import atomic_path

CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused

NPY_HEADER_BYTES = 128  # a fixed .npy header, so the row count can be written once decoding ends


def _cache_key(source: str, digest: str, task: str, image_size: int, channels: int, options: dict | None = None) -> str:
    # A format's options join the key only when set, so the keys of every other dataset stay as they were.
    text = json.dumps([CACHE_VERSION, source, digest, task, image_size, channels] + ([options] if options else []))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_files(stem: Path) -> tuple[Path, Path]:
    """(images .npy, sidecar .meta.npz) of the cache entry `stem`; the sidecar is written last."""
    return Path(f"{stem}.npy"), Path(f"{stem}.meta.npz")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for uint8 `shape`, padded with spaces to NPY_HEADER_BYTES."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(int(n) for n in shape)})
    body = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"  # 10: magic, version and length fields
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class _NpyWriter:
    """Images appended one by one to a temp .npy beside `path`; `commit` renames it over `path`.

    Each image goes straight to the file, so decoding a dataset larger than memory never holds it.
    """

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.path, self.tmp, self.row_shape, self.count = path, Path(tmp), tuple(row_shape), 0
        self.handle = os.fdopen(fd, "wb")
        self.handle.write(_npy_header((0, *self.row_shape)))

    def append(self, image: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(image, dtype=np.uint8).reshape(self.row_shape).data)
        self.count += 1

    def commit(self) -> np.memmap:
        self.handle.seek(0)
        self.handle.write(_npy_header((self.count, *self.row_shape)))
        self.handle.close()
        os.replace(self.tmp, self.path)
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def discard(self) -> None:
        """Remove the temp file (a no-op after commit): a failed or cancelled load leaves nothing."""
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


class _MemoryRows:
    """The in-memory counterpart of _NpyWriter, for a load without the disk cache."""

    def __init__(self, path, row_shape: tuple[int, ...]):
        self.row_shape, self.rows = tuple(row_shape), []

    def append(self, image: np.ndarray) -> None:
        self.rows.append(np.asarray(image, dtype=np.uint8).reshape(self.row_shape))

    def commit(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, *self.row_shape), np.uint8)

    def discard(self) -> None:
        self.rows = []


def _save_meta(path: Path, meta: dict) -> None:
    with atomic_path(path) as tmp:  # a unique temp file: two jobs may decode the same dataset at once
        with open(tmp, "wb") as handle:
            np.savez(handle, labels=meta["labels"], patient_ids=meta["patient_ids"], files=meta["files"],
                     own_split=meta["own_split"], class_names=np.array(meta["class_names"], dtype=str),
                     skipped=np.array(json.dumps(meta["skipped"])),
                     patients_per_image=np.array(bool(meta.get("patients_per_image", False))),
                     decode_seconds=np.array(meta.get("decode_seconds", np.nan), dtype=np.float64))


def _read_cache(stem: Path) -> tuple[dict, np.memmap] | None:
    """(meta, read-only memory-mapped images) of a complete cache entry, else None (it is rebuilt)."""
    image_file, meta_file = cache_files(stem)
    try:
        with np.load(meta_file, allow_pickle=False) as saved:
            meta = {key: saved[key] for key in saved.files}
        images = np.load(image_file, mmap_mode="r", allow_pickle=False)
        meta["class_names"] = [str(n) for n in meta["class_names"]]
        meta["skipped"] = json.loads(str(meta["skipped"]))
        meta["patients_per_image"] = bool(meta.get("patients_per_image", False))  # older caches: unknown
        decoded = float(meta.pop("decode_seconds", np.nan))  # caches written before it was recorded: unknown
        meta["decode_seconds"] = decoded if np.isfinite(decoded) else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(meta["labels"]):
        return None
    return meta, images


def read_npy_rows(file: str, offset: int, row_shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
    """Rows of a uint8 .npy read with pread, without mapping the file into this process."""
    out = np.empty((len(rows), *row_shape), dtype=np.uint8)
    row_bytes = out[0].nbytes if len(rows) else 0
    fd = os.open(file, os.O_RDONLY)
    try:
        for i, row in enumerate(rows):
            got = os.preadv(fd, [memoryview(out[i]).cast("B")], offset + int(row) * row_bytes)
            if got != row_bytes:
                raise DataError(f"the dataset cache {file} is shorter than it says: delete it to decode again")
    finally:
        os.close(fd)
    return out
