"""Load image datasets (built-in chest X-rays, folders, zips, .npz, CIFAR tarballs, CSVs of labels) and
split them by patient. Which file is which format: core/data/formats.py.

A dataset becomes numpy arrays: uint8 images (N, H, W, C), integer labels, patient ids and file
names. Decoded images are written to an uncompressed .npy on disk while they are decoded (never all
in memory) and read back memory-mapped and read-only, so the dashboard and every training process
share the operating system's page cache instead of holding copies. The cache is keyed by the
source's content and the settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.data import formats
# The shared names, also reached as datasets.<name> by the dashboard, the CLI and the tests.
from core.data.layout import (LEGACY_UPLOADS_DIR, LIST_REPORT_EVERY, _SPLIT_ALIASES, DataError,  # noqa: F401
                              LoadCancelled, cache_dir, check_data_root, data_root, find_upload,
                              is_chest_xray_layout, uploads_dir)
from core.data.formats import FormatOptions
from core.data.imaging import ImageError, displayable, resize_to_model, stretch_to_uint8
from core.data.archives import DATASET_ZIP, NPZ_FILE, UnsafeArchive, check_zip
from core.settings.config import SETTINGS
from core.settings.paths import PROJECT_ROOT
from core.files import atomic_path

BUILTIN_ZIP = PROJECT_ROOT / "assets" / "datasets" / "chest_xray_128.zip"
TASK_TITLES = {
    "binary": "NORMAL vs PNEUMONIA",
    "subtype": "normal / bacterial / viral",
    "classes": "the dataset's own classes",
}
SPLIT_NAMES = ("train", "val", "test")
CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused
_PATIENT_RE = re.compile(r"^(person\d+|(?:NORMAL\d*-)?IM-\d+)", re.IGNORECASE)

DECODE_CHUNK = 256  # images decoded between two progress reports and cancellation checks

ProgressFn = Callable[[int, int], None]


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


@dataclass
class SplitReport:
    mode: str                               # "grouped" or "own"
    counts: dict[str, dict[str, int]]       # split -> class -> images
    patients: dict[str, int]                # split -> distinct patients
    fractions: dict[str, float]             # split -> share of all images
    overlap: dict[str, int]                 # "train/val" -> patients in both
    overlap_examples: list[str]
    warnings: list[str] = field(default_factory=list)
    per_image: bool = False                 # no patient ids: split per image, nothing to check overlap with

    @property
    def leaks(self) -> bool:
        return any(self.overlap.values())


@dataclass
class Split:
    train: np.ndarray  # indices into the dataset
    val: np.ndarray
    test: np.ndarray
    report: SplitReport

    def indices(self, name: str) -> np.ndarray:
        return getattr(self, name)


# ----------------------------------------------------------------------------- file names

def patient_id(file_name: str) -> str:
    """Patient id from a Kermany-style file name (personNNN, IM-NNNN, NORMAL2-IM-NNNN), else the stem."""
    stem = Path(file_name).stem
    match = _PATIENT_RE.match(stem)
    return match.group(1) if match else stem


def pneumonia_subtype(file_name: str) -> str | None:
    name = Path(file_name).name.lower()
    if "bacteria" in name:
        return "bacterial"
    if "virus" in name:
        return "viral"
    return None


# ----------------------------------------------------------------------------- sources

def resolve_source_path(source: str, path: str | os.PathLike | None) -> Path:
    check_setting("data_source", source)
    if source == "builtin":
        return BUILTIN_ZIP
    if not path:
        raise DataError(f"data source {source!r} needs a path")
    resolved = find_upload(Path(path).expanduser())
    check_data_root(resolved)
    if not resolved.exists():
        raise DataError(f"{resolved} does not exist")
    if source == "folder" and not resolved.is_dir():
        raise DataError(f"{resolved} is not a folder")
    if source in ("zip", "npz", "cifar", "csv") and not resolved.is_file():
        raise DataError(f"{resolved} is not a file")
    return resolved


def content_hash(source: str, path: Path, watch: "_Watch | None" = None, options: FormatOptions | None = None) -> str:
    """Hash of the source's content: file bytes for zip/npz/cifar, names+sizes+mtimes for a folder, both
    for a CSV (its bytes, its images folder's names+sizes+mtimes)."""
    if source == "csv":
        from core.data import label_csv
        return label_csv.content_hash(path, options or FormatOptions())
    digest = hashlib.sha256()
    if source == "folder":
        for count, file in enumerate(sorted(p for p in path.rglob("*") if p.is_file()), 1):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            if watch and count % LIST_REPORT_EVERY == 0:
                watch.listed(count)
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class _Watch:
    """The caller's progress callback and cancel request, looked at between chunks of work."""

    def __init__(self, name: str, progress: ProgressFn | None, cancel):
        self.name, self.progress = name, progress
        # `cancel`: a threading.Event or any callable returning True once loading should stop.
        self.cancelled = getattr(cancel, "is_set", cancel) or (lambda: False)

    def listed(self, count: int) -> None:
        """`count` files listed so far (a total of 0 says the total is not known yet)."""
        self.check()
        if self.progress:
            self.progress(count, 0)

    def decoded(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total)

    def check(self) -> None:
        if self.cancelled():
            raise LoadCancelled(f"loading {self.name} was cancelled; nothing was cached (the partly "
                                "decoded images were removed) and it can be loaded again at any time")


def _folder_entries(root: Path, watch: _Watch) -> dict[str, Callable[[], bytes]]:
    entries = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            entries[path.relative_to(root).as_posix()] = path.read_bytes
            if len(entries) % LIST_REPORT_EVERY == 0:
                watch.listed(len(entries))
    return entries


class _ZipReader:
    """The members of one zip, read when decoded, with one handle per thread (a ZipFile handle is
    not safe to share between threads); reading them all up front would hold the whole zip in memory."""

    def __init__(self, path: Path):
        self.path, self._local, self._handles, self._lock = path, threading.local(), [], threading.Lock()
        try:
            with zipfile.ZipFile(path) as archive:
                self.names = [info.filename for info in check_zip(archive, DATASET_ZIP) if not info.is_dir()]
        except zipfile.BadZipFile:
            raise DataError(f"{path.name} is not a valid zip file") from None
        except UnsafeArchive as exc:
            raise DataError(f"{path.name} is refused: {exc}") from None

    def entries(self) -> dict[str, Callable[[], bytes]]:
        return {name: (lambda name=name: self.read(name)) for name in self.names}

    def read(self, name: str) -> bytes:
        archive = getattr(self._local, "archive", None)
        if archive is None:
            archive = self._local.archive = zipfile.ZipFile(self.path)
            with self._lock:
                self._handles.append(archive)
        return archive.read(name)

    def close(self) -> None:
        with self._lock:
            for archive in self._handles:
                archive.close()
            self._handles.clear()


def _is_junk(rel_path: str) -> bool:
    parts = rel_path.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _strip_common_folders(paths: list[str]) -> dict[str, str]:
    """Map each path to itself minus the folders every path shares (e.g. 'chest_xray_128/')."""
    split_paths = {p: p.split("/") for p in paths}
    depth = 0
    while True:
        # Strip a folder every path is inside, as long as something below it still has class folders.
        heads = {parts[depth] if len(parts) > depth + 1 else None for parts in split_paths.values()}
        deeper = any(len(parts) > depth + 2 for parts in split_paths.values())
        if len(heads) != 1 or None in heads or not deeper or next(iter(heads)).lower() in _SPLIT_ALIASES:
            break
        depth += 1
    return {p: "/".join(parts[depth:]) for p, parts in split_paths.items()}


def _parse_layout(rel_paths: list[str]) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """[(path, split, class_folder)] from 'class/file' or 'split/class/file' paths, plus skipped."""
    stripped = _strip_common_folders(rel_paths)
    heads = {s.split("/")[0].lower() for s in stripped.values() if "/" in s}
    has_split = bool(heads) and heads <= set(_SPLIT_ALIASES)
    parsed, skipped = [], []
    for original, rel in stripped.items():
        parts = rel.split("/")
        need = 3 if has_split else 2
        if len(parts) < need:
            skipped.append({"file": original, "reason": "not inside a class folder"})
            continue
        split = _SPLIT_ALIASES[parts[0].lower()] if has_split else ""
        parsed.append((original, split, parts[1] if has_split else parts[0]))
    return parsed, skipped


def _no_labelled_images(image_paths: list[str]) -> str:
    """Why a tree gave no labelled images: the layout it needs, and what it holds instead (a flat
    folder of 'CLASS__name.jpeg' files says how to move them)."""
    layout = "one folder per class (optionally inside train/ val/ test/), with JPEG or PNG files"
    if not image_paths:
        return f"no images found: expected {layout}"
    names = [path.rsplit("/", 1)[-1] for path in image_paths]
    found = f"found {len(names)} images, but none inside a class folder: the class is the folder's name"
    if all("__" in name for name in names):
        classes = sorted({name.split("__", 1)[0] for name in names})
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        return (f"{found}, not a CLASS__ prefix of the file name ({shown}). Move each image into a folder named "
                f"after its class, e.g. {names[0]} into {names[0].split('__', 1)[0]}/; expected {layout}")
    return f"{found}. Expected {layout}, e.g. NORMAL/x.jpeg and PNEUMONIA/y.jpeg"


def _labels_for_task(parsed, task: str) -> tuple[list[str], list[int | None], list[str]]:
    """Class names and one label per parsed entry (None = skipped, with the reason)."""
    folders = sorted({entry[2] for entry in parsed})
    chest = is_chest_xray_layout(folders)
    if task in ("binary", "subtype") and not chest:
        raise DataError(f"task {task!r} needs NORMAL and PNEUMONIA class folders, found "
                        f"{', '.join(folders) or 'none'}; use task 'classes' for other datasets")
    if task == "classes":
        index = {name: i for i, name in enumerate(folders)}
        return folders, [index[e[2]] for e in parsed], ["" for _ in parsed]
    if task == "binary":
        return (["NORMAL", "PNEUMONIA"],
                [0 if e[2].upper() == "NORMAL" else 1 for e in parsed], ["" for _ in parsed])
    labels, reasons = [], []
    for path, _, folder in parsed:
        subtype = "normal" if folder.upper() == "NORMAL" else pneumonia_subtype(path)
        labels.append({"normal": 0, "bacterial": 1, "viral": 2}.get(subtype))
        reasons.append("" if subtype else "pneumonia image without 'bacteria' or 'virus' in its name")
    return ["normal", "bacterial", "viral"], labels, reasons


def _decode_into(sink, entries, paths, image_size, channels, watch: _Watch) -> tuple[list[str | None], list[str]]:
    """Decode images (DICOM too) in parallel threads (Pillow releases the GIL while decoding), a chunk at
    a time, appending each readable image to `sink` in order; returns one error (or None) and one DICOM
    PatientID ('' when none) per path."""
    def decode(path):
        try:
            array, patient = formats.decode_member(path, entries[path](), image_size, channels)
            return array, None, patient
        except ImageError as exc:
            return None, str(exc), ""
        except (OSError, zipfile.BadZipFile) as exc:
            return None, f"could not be read ({exc})", ""

    errors, patients = [], []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for start in range(0, len(paths), DECODE_CHUNK):
            watch.check()
            for array, error, patient in pool.map(decode, paths[start:start + DECODE_CHUNK]):
                if error is None:
                    sink.append(array)
                errors.append(error)
                patients.append(patient)
            watch.decoded(len(errors), len(paths))
    return errors, patients


def _load_image_tree(entries, task, sink, image_size, channels, watch: _Watch) -> dict:
    """Decode a class-folder tree into `sink`; returns everything else (labels, patients, files...)."""
    report_skipped = []
    image_paths = []
    for rel in entries:
        if _is_junk(rel):
            continue
        if formats.is_decodable_name(rel):
            image_paths.append(rel)
        else:
            report_skipped.append({"file": rel, "reason": "not an image file extension"})
    parsed, skipped = _parse_layout(image_paths)
    report_skipped += skipped
    if not parsed:
        raise DataError(_no_labelled_images(image_paths))
    class_names, labels, reasons = _labels_for_task(parsed, task)
    keep = [i for i, label in enumerate(labels) if label is not None]
    report_skipped += [{"file": parsed[i][0], "reason": reasons[i]}
                       for i, label in enumerate(labels) if label is None]
    errors, tagged = _decode_into(sink, entries, [parsed[i][0] for i in keep], image_size, channels, watch)
    rows, patients = [], []
    for i, error, tag in zip(keep, errors, tagged):
        if error:
            report_skipped.append({"file": parsed[i][0], "reason": error})
        else:
            rows.append(i)
            patients.append(tag or patient_id(parsed[i][0]))  # a DICOM's PatientID, else from the name
    files = [parsed[i][0] for i in rows]
    return {
        "labels": np.array([labels[i] for i in rows], dtype=np.int32),
        "class_names": class_names,
        "patient_ids": np.array(patients, dtype=str),
        "files": np.array(files, dtype=str),
        "own_split": np.array([parsed[i][1] for i in rows], dtype=str),
        "skipped": report_skipped,
    }


def _npz_to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 as it is, booleans and [0, 1] floats scaled by 255, anything else min-max stretched."""
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool:
        return images.astype(np.uint8) * 255
    if images.min() >= 0 and images.max() <= 1.0:
        return np.round(images.astype(np.float64) * 255).astype(np.uint8)
    return stretch_to_uint8(images)


def _npz_layout(keys: set, name: str) -> list[tuple[str, str, str]]:
    """[(split, images key, labels key)]: MedMNIST's train_images / train_labels / val_... / test_...
    (or plain images / labels), or Keras' x_train / y_train / x_test / y_test."""
    if formats.is_keras_layout(keys):
        return formats.keras_splits(keys, name)
    layout = [(s, f"{s}_images", f"{s}_labels") for s in SPLIT_NAMES if f"{s}_images" in keys] or \
        ([("", "images", "labels")] if "images" in keys else [])
    if not layout:
        raise DataError(f"{name} has no 'train_images'/'images' arrays (MedMNIST) nor 'x_train' (Keras) "
                        f"(found: {sorted(keys)})")
    for _, images, labels in layout:
        if labels not in keys:
            raise DataError(f"{name} has {images} but no {labels}")
    return layout


def _need_own_classes(task: str, what: str) -> None:
    if task != "classes":
        raise DataError(f"{what} has its own classes: use task 'classes', not {task!r}")


def _load_npz(path: Path, task: str, sink, image_size: int, channels: int, watch: _Watch,
              options: FormatOptions) -> dict:
    """The arrays of a MedMNIST or Keras .npz (`_npz_layout`); its own split is kept as `own_split`."""
    _need_own_classes(task, "an .npz dataset")
    try:
        if zipfile.is_zipfile(path):  # an .npz is a zip: the same guard before an array is unpacked
            with zipfile.ZipFile(path) as zipped:
                check_zip(zipped, NPZ_FILE)
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # UnsafeArchive is a ValueError
        raise DataError(f"{path.name} is not a readable .npz file ({exc})") from None
    with archive:
        keys = set(archive.files)
        layout = _npz_layout(keys, path.name)
        parts = {name: [] for name in ("labels", "patient_ids", "files", "own_split")}
        ids_keys = [f"{split}_patient_ids" if split else "patient_ids" for split, _, _ in layout]
        for (split, images_key, labels_key), ids_key in zip(layout, ids_keys):
            watch.check()
            images = _npz_to_uint8(archive[images_key])
            labels = archive[labels_key].reshape(len(images), -1)[:, 0].astype(np.int32)
            ids = archive[ids_key].astype(str) if ids_key in keys else \
                np.array([f"{split or 'image'}-{i}" for i in range(len(images))])
            for image in images:
                sink.append(_npz_image_to_model(image, image_size, channels))
            parts["labels"].append(labels)
            parts["patient_ids"].append(ids)
            parts["files"].append(np.array([f"{split or 'images'}/{i}" for i in range(len(images))]))
            parts["own_split"].append(np.full(len(images), split, dtype=object).astype(str))
            done = sum(len(p) for p in parts["labels"])
            watch.decoded(done, done)
        n_classes = int(max(int(p.max()) for p in parts["labels"] if len(p)) + 1)
        if "class_names" in keys:
            names = [str(n) for n in archive["class_names"]]
        elif formats.is_keras_layout(keys):
            names = formats.keras_class_names(options.npz_classes, path.name, parts["labels"][0], n_classes)
        else:
            names = [f"class {i}" for i in range(n_classes)]
    return {**{k: np.concatenate(v) for k, v in parts.items()}, "class_names": names, "skipped": [],
            "patients_per_image": not any(key in keys for key in ids_keys)}


def _load_cifar(path: Path, task: str, sink, image_size: int, channels: int, watch: _Watch,
                options: FormatOptions) -> dict:
    """A CIFAR-10/100 python tarball (core/data/cifar.py): its train and test batches as its own split."""
    from core.data import cifar
    _need_own_classes(task, "a CIFAR tarball")
    batches, class_names = cifar.read(path, options.label_level, watch.check)
    total, done = sum(len(b.labels) for b in batches), 0
    for batch in batches:
        if len(batch.labels) and (batch.labels.min() < 0 or batch.labels.max() >= len(class_names)):
            raise DataError(f"{batch.member} has labels outside the {len(class_names)} classes of its meta")
        for start in range(0, len(batch.images), DECODE_CHUNK):
            watch.check()
            for image in batch.images[start:start + DECODE_CHUNK]:
                sink.append(_npz_image_to_model(image, image_size, channels))
            done += len(batch.images[start:start + DECODE_CHUNK])
            watch.decoded(done, total)
    files = [f for b in batches for f in b.files]
    return {"labels": np.concatenate([b.labels for b in batches]).astype(np.int32), "class_names": class_names,
            "patient_ids": np.array(files, dtype=str), "files": np.array(files, dtype=str),
            "own_split": np.array([b.split for b in batches for _ in b.files], dtype=str),
            "skipped": [], "patients_per_image": True}


def _load_csv(path: Path, task: str, sink, image_size: int, channels: int, watch: _Watch,
              options: FormatOptions) -> dict:
    """A CSV of labels and its images folder (core/data/label_csv.py); patients from its patient
    column, else a DICOM's PatientID, else one per image."""
    from core.data import label_csv
    _need_own_classes(task, "a CSV of labels")
    planned = label_csv.plan(path, options, watch.listed)
    errors, tagged = _decode_into(sink, planned.entries, planned.files, image_size, channels, watch)
    kept = [i for i, error in enumerate(errors) if error is None]
    skipped = planned.skipped + [{"file": planned.files[i], "reason": error}
                                 for i, error in enumerate(errors) if error is not None]
    patients = [planned.patients[i] or tagged[i] for i in kept]
    per_image = not any(patients)
    return {"labels": np.array([planned.labels[i] for i in kept], dtype=np.int32),
            "class_names": planned.class_names,
            "patient_ids": np.array([p or planned.files[i] for p, i in zip(patients, kept)], dtype=str),
            "files": np.array([planned.files[i] for i in kept], dtype=str),
            "own_split": np.array(["" for _ in kept], dtype=str), "skipped": skipped,
            "patients_per_image": per_image}


def _npz_image_to_model(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    from PIL import Image
    return resize_to_model(Image.fromarray(displayable(image)), image_size, channels)


# ----------------------------------------------------------------------------- caching

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


# ----------------------------------------------------------------------------- public API

def load_dataset(source: str = "builtin", path: str | os.PathLike | None = None, task: str = "binary",
                 image_size: int = 128, channels: int = 1, use_cache: bool = True,
                 progress: ProgressFn | None = None, cancel=None, options: FormatOptions | None = None) -> Dataset:
    """Load a dataset; raises DataError with a clear message when it cannot be used.

    `progress(done, total)` is called while files are listed (total 0: not known yet) and decoded.
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


# ----------------------------------------------------------------------------- splits

def check_setting(name: str, value) -> None:
    """A dataset setting checked against its declaration (core.settings.config), as a DataError."""
    try:
        SETTINGS[name].check(value)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    check_setting("val_fraction", val_fraction)
    check_setting("test_fraction", test_fraction)
    if val_fraction + test_fraction > 0.8:
        raise DataError("validation + test fractions leave less than 20% for training")


def _check_class_patients(labels, groups, class_names, needed: int) -> None:
    for index, name in enumerate(class_names):
        mask = labels == index
        n_patients = len(set(groups[mask].tolist()))
        if 0 < n_patients < needed:
            raise DataError(f"class {name!r} has only {int(mask.sum())} images from {n_patients} "
                            f"patient(s); a split into {needed} parts needs at least {needed} patients per class")


def grouped_partition(labels: np.ndarray, groups: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split positions into len(fractions) parts, stratified by label and grouped by patient.

    StratifiedGroupKFold deals the patients into small folds (5% each, fewer on tiny data); whole
    folds are then given to each part, so the parts keep the class ratios and share no patient.
    Dealing takes seconds on the built-in set, so each result is kept on disk (every run of a
    sweep, and every training process, would otherwise repeat it).
    """
    key = hashlib.sha256(b"\0".join([np.asarray(labels).astype(np.int64).tobytes(),
                                      "\n".join(map(str, groups)).encode(),
                                      repr((list(fractions), int(seed))).encode()])).hexdigest()[:24]
    path = cache_dir() / "splits" / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            return [saved[f"part{i}"] for i in range(len(fractions))]
    except (OSError, KeyError, ValueError):
        pass
    parts = _deal_patients(labels, groups, fractions, seed)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{f"part{i}": part for i, part in enumerate(parts)})
    return parts


def _deal_patients(labels: np.ndarray, groups: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    classes_present = np.unique(labels)
    min_groups = min(len(set(groups[labels == c].tolist())) for c in classes_present)
    n_folds = int(max(len(fractions), min(20, min_groups)))
    from sklearn.model_selection import (
        StratifiedGroupKFold,  # 1.5 s to import: not on the first page
    )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]
    sizes = [max(1, round(f * n_folds)) for f in fractions[1:]]
    while sum(sizes) > n_folds - 1:  # the first part (train) keeps at least one fold
        sizes[int(np.argmax(sizes))] -= 1
    sizes = [n_folds - sum(sizes)] + sizes
    parts, start = [], 0
    for size in sizes:
        parts.append(np.sort(np.concatenate(folds[start:start + size])))
        start += size
    return parts


def make_split(ds: Dataset, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
               use_own_split: bool = False) -> Split:
    """Train/val/test indices, grouped by patient and stratified by class, with a report."""
    if use_own_split:
        return _own_split(ds, val_fraction, test_fraction, seed)
    _check_fractions(val_fraction, test_fraction)
    _check_class_patients(ds.labels, ds.patient_ids, ds.class_names, 3)
    train, val, test = grouped_partition(ds.labels, ds.patient_ids,
                                         [1 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
    return _finish_split(ds, {"train": train, "val": val, "test": test}, "grouped")


def make_cv_split(ds: Dataset, folds: int, fold: int, test_fraction: float = 0.15, seed: int = 0) -> Split:
    """Fold `fold` of patient-grouped k-fold cross-validation.

    The test part depends only on `seed` and `test_fraction`, so it is the same for every fold;
    the remaining patients are dealt into `folds` folds and fold number `fold` is validation.
    """
    check_setting("cv_folds", folds)
    if not folds:
        raise DataError("cross-validation needs at least 2 folds")
    if not 0 <= fold < folds:
        raise DataError(f"fold must be between 0 and {folds - 1}, not {fold}")
    _check_fractions(0.1, test_fraction)
    _check_class_patients(ds.labels, ds.patient_ids, ds.class_names, folds + 1)
    rest, test = grouped_partition(ds.labels, ds.patient_ids, [1 - test_fraction, test_fraction], seed)
    from sklearn.model_selection import StratifiedGroupKFold
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_pos, val_pos = list(splitter.split(rest, ds.labels[rest], ds.patient_ids[rest]))[fold]
    return _finish_split(ds, {"train": rest[train_pos], "val": rest[val_pos], "test": test},
                         f"cv fold {fold + 1}/{folds}")


def subsample_train(ds: Dataset, split: Split, fraction: float, seed: int = 0) -> Split:
    """Keep `fraction` of the training patients (stratified); val and test stay exactly as they were."""
    if not 0.05 <= fraction <= 1:
        raise DataError(f"training fraction must be between 0.05 and 1, not {fraction}")
    if fraction == 1:
        return split
    train = split.train
    _check_class_patients(ds.labels[train], ds.patient_ids[train], ds.class_names, 2)
    kept, _ = grouped_partition(ds.labels[train], ds.patient_ids[train], [fraction, 1 - fraction], seed)
    subset = _finish_split(ds, {"train": train[kept], "val": split.val, "test": split.test},
                           split.report.mode, split.report.warnings)
    subset.report.warnings.append(f"training on {fraction:.0%} of the training patients "
                                  f"({len(kept)} of {len(train)} images)")
    return subset


def _own_split(ds: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Split:
    if not ds.has_own_split:
        raise DataError("this dataset has no train/val/test folders of its own: use a grouped split")
    parts = {name: np.flatnonzero(ds.own_split == name) for name in SPLIT_NAMES}
    warnings = []
    if len(parts["train"]) == 0:
        raise DataError("the dataset's own split has no train part")
    for missing, fraction in (("test", test_fraction), ("val", val_fraction)):
        if len(parts[missing]) == 0:
            # Carve the missing part out of train, still grouped by patient.
            train = parts["train"]
            _check_class_patients(ds.labels[train], ds.patient_ids[train], ds.class_names, 2)
            keep, carved = grouped_partition(ds.labels[train], ds.patient_ids[train],
                                             [1 - fraction, fraction], seed)
            parts["train"], parts[missing] = train[keep], train[carved]
            warnings.append(f"the dataset has no {missing} part: {len(carved)} images "
                            f"({fraction:.0%} of train, grouped by patient) were set aside for it")
    return _finish_split(ds, parts, "own", warnings)


PER_IMAGE_SPLIT = ("this dataset names no patients, so each image counts as its own patient: the split is "
                   "per image, and images of one person may be in two splits (no patient grouping is possible)")


def _finish_split(ds: Dataset, parts: dict, mode: str, warnings: list[str] | None = None) -> Split:
    report = split_report(ds, parts, mode)
    report.per_image = ds.patients_per_image
    ordered = ([PER_IMAGE_SPLIT] if ds.patients_per_image else []) + list(warnings or []) + report.warnings
    report.warnings = list(dict.fromkeys(ordered))  # a subsample passes its split's warnings on again
    return Split(train=parts["train"], val=parts["val"], test=parts["test"], report=report)


def split_report(ds: Dataset, parts: dict[str, np.ndarray], mode: str) -> SplitReport:
    """Per-split class counts, patient counts and the patient-overlap check."""
    counts, patients, patient_sets = {}, {}, {}
    for name, idx in parts.items():
        per_class = np.bincount(ds.labels[idx], minlength=len(ds.class_names))
        counts[name] = {c: int(n) for c, n in zip(ds.class_names, per_class)}
        patient_sets[name] = set(ds.patient_ids[idx].tolist())
        patients[name] = len(patient_sets[name])
    overlap, examples = {}, []
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = patient_sets[a] & patient_sets[b]
            overlap[f"{a}/{b}"] = len(shared)
            examples += sorted(shared)[:5]
    total = sum(len(idx) for idx in parts.values())
    report = SplitReport(mode=mode, counts=counts, patients=patients,
                         fractions={n: round(len(i) / total, 4) for n, i in parts.items()},
                         overlap=overlap, overlap_examples=examples[:10])
    if report.leaks:
        leaked = ", ".join(f"{k}: {v}" for k, v in overlap.items() if v)
        report.warnings.append(f"patient leak: the same patients appear in more than one split ({leaked}); "
                               "metrics on the leaking split overstate how well the model generalises")
    for name, per_class in counts.items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            report.warnings.append(f"{name} has no images of {', '.join(empty)}")
    return report


def split_report_dict(report: SplitReport) -> dict:
    return {**asdict(report), "leaks": report.leaks}
