"""Load an image dataset (built-in chest X-rays, folders, zips, .npz, CIFAR tarballs, CSVs of labels)
as numpy arrays: uint8 images (N, H, W, C), integer labels, patient ids and file names.

Reading each format: core/data/sources.py (which file is which format: formats.py); the decoded-image
cache the images are read from, memory-mapped: core/data/cache.py; patient-grouped splits:
core/data/splits.py.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# The shared names, also reached as datasets.<name> by the dashboard, the CLI and the tests.
from core.data.layout import (DataError, LoadCancelled, cache_dir, check_data_root,  # noqa: F401
                              check_setting, uploads_dir)
from core.data.cache import (_MemoryRows, _NpyWriter, _cache_key, _read_cache, _save_meta, cache_files,
                             read_npy_rows)
from core.data.formats import FormatOptions
from core.data.sources import (_folder_entries, _load_cifar, _load_csv, _load_image_tree, _load_npz,
                               _Watch, _ZipReader, content_hash, resolve_source_path)
from core.progress import ProgressFn

TASK_TITLES = {
    "binary": "NORMAL vs PNEUMONIA",
    "subtype": "normal / bacterial / viral",
    "classes": "the dataset's own classes",
}


@dataclass
class LoadReport:
    source: str
    n_images: int = 0
    skipped: list[dict] = field(default_factory=list)  # [{"file": ..., "reason": ...}]
    from_cache: bool = False
    seconds: float = 0.0
    decode_seconds: float | None = None  # the decoding that filled the cache (now or earlier); None if unknown


@dataclass
class Dataset:
    images: np.ndarray       # uint8 (N, H, W, C), raw pixels 0-255
    labels: np.ndarray       # int32 (N,)
    class_names: list[str]
    patient_ids: np.ndarray  # str (N,)
    files: np.ndarray        # str (N,), path inside the source
    own_split: np.ndarray    # str (N,): "train" / "val" / "test", or "" when the source has none
    content_hash: str
    report: LoadReport
    image_file: str | None = None  # the .npy behind `images` when they come from the disk cache
    image_offset: int = 0          # where its pixels start
    patients_per_image: bool = False  # the source names no patients: each image counts as its own

    def __len__(self) -> int:
        return len(self.labels)

    def read_images(self, rows: np.ndarray) -> np.ndarray:
        """The images of `rows`, read from the cache file with pread when there is one.

        Reading through the memory map would add every page touched to this process's resident
        memory; pread copies only the rows asked for, so a process streaming the whole set stays small.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.image_file is None:
            return np.asarray(self.images[rows])
        return read_npy_rows(self.image_file, self.image_offset, self.images.shape[1:], rows)

    @property
    def has_own_split(self) -> bool:
        return bool(np.any(self.own_split != ""))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}


# ----------------------------------------------------------------------------- public API

def load_dataset(source: str = "builtin", path: str | os.PathLike | None = None, task: str = "binary",
                 image_size: int = 128, channels: int = 1, use_cache: bool = True,
                 progress: ProgressFn | None = None, cancel=None, options: FormatOptions | None = None) -> Dataset:
    """Load a dataset; raises DataError with a clear message when it cannot be used.

    `progress(done, total, message)` (core/progress.py) hears of the files listed (total 0: not known
    yet) and of the images decoded.
    `cancel` (a threading.Event or a callable returning True) stops the load between chunks: it
    raises LoadCancelled and leaves no cache file behind. With the cache, `images` is a read-only
    memory map of it. `options`: the settings of a format (CSV target, CIFAR-100 labels, ...).
    """
    check_setting("task", task)
    check_setting("image_size", image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    started = time.perf_counter()
    options = options or FormatOptions()
    resolved = resolve_source_path(source, path)
    watch = _Watch(resolved.name, progress, cancel)
    digest = content_hash(source, resolved, watch, options)
    stem = cache_dir() / _cache_key(source, digest, task, image_size, channels, options.for_source(source))
    cached = _read_cache(stem) if use_cache else None
    from_cache = cached is not None
    if cached is None:
        sink_type = _NpyWriter if use_cache else _MemoryRows
        cached = _decode(source, resolved, task, image_size, channels, sink_type(cache_files(stem)[0],
                         (image_size, image_size, channels)), watch, options)
        cached[0]["decode_seconds"] = round(time.perf_counter() - started, 3)
        if use_cache:
            _save_meta(cache_files(stem)[1], cached[0])
    meta, images = cached
    report = LoadReport(source=str(resolved), n_images=len(meta["labels"]), skipped=meta["skipped"],
                        from_cache=from_cache, seconds=round(time.perf_counter() - started, 3),
                        decode_seconds=meta.get("decode_seconds"))
    mapped = isinstance(images, np.memmap)
    return Dataset(images=images, labels=meta["labels"], class_names=meta["class_names"],
                   patient_ids=meta["patient_ids"], files=meta["files"], own_split=meta["own_split"],
                   content_hash=digest, report=report, image_file=str(images.filename) if mapped else None,
                   image_offset=int(images.offset) if mapped else 0,
                   patients_per_image=bool(meta.get("patients_per_image", False)))


def _decode(source, resolved, task, image_size, channels, sink, watch: _Watch,
            options: FormatOptions) -> tuple[dict, np.ndarray]:
    """Decode the source into `sink`; (meta, images) once it is whole and usable."""
    loaders = {"npz": _load_npz, "cifar": _load_cifar, "csv": _load_csv}
    try:
        if source in loaders:
            meta = loaders[source](resolved, task, sink, image_size, channels, watch, options)
        else:
            reader = _ZipReader(resolved) if source != "folder" else None
            try:
                entries = reader.entries() if reader else _folder_entries(resolved, watch)
                meta = _load_image_tree(entries, task, sink, image_size, channels, watch)
            finally:
                if reader:
                    reader.close()
        _check_usable(meta, resolved.name)
        return meta, sink.commit()
    finally:
        sink.discard()  # runs on any exit, a Streamlit rerun or Stop included


def _check_usable(arrays: dict, name: str) -> None:
    n = len(arrays["labels"])
    if n == 0:
        reasons = Counter(s["reason"] for s in arrays["skipped"]).most_common(3)
        detail = "; ".join(f"{count} {reason}" for reason, count in reasons)
        raise DataError(f"no readable images in {name}" + (f" (skipped: {detail})" if detail else ""))
    present = sorted(set(arrays["labels"].tolist()))
    if len(present) < 2:
        only = arrays["class_names"][present[0]]
        raise DataError(f"only one class ({only!r}) in {name}: a classifier needs at least two")


def dataset_summary(ds: Dataset) -> dict:
    return {"images": len(ds), "patients": int(len(np.unique(ds.patient_ids))),
            "classes": ds.class_names, "class_counts": ds.class_counts(),
            "image_shape": list(ds.images.shape[1:]), "has_own_split": ds.has_own_split,
            "skipped": len(ds.report.skipped), "content_hash": ds.content_hash,
            "load_seconds": ds.report.seconds, "from_cache": ds.report.from_cache}


def load_summary(report: LoadReport) -> str:
    """'4,488 images, decoded in 38.2 s and read from the cache in 0.2 s, 0 skipped': the decoding
    is named even when this load only read the cache it filled (the Dataset page decodes first)."""
    if not report.from_cache:
        how = f"decoded in {report.seconds:.1f} s"
    elif report.decode_seconds is not None:
        how = f"decoded in {report.decode_seconds:.1f} s and read from the cache in {report.seconds:.1f} s"
    else:
        how = f"read from the cache in {report.seconds:.1f} s"
    return f"{report.n_images:,} images, {how}, {len(report.skipped)} skipped"
