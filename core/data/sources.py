"""Where a dataset's images come from and how they are read: the source's path and content hash, a
folder or zip of class folders, an .npz, a CIFAR tarball or a CSV of labels (formats.py says which),
decoded in parallel threads into a sink (core/data/cache.py: the .npy cache, or rows in memory), with
the caller's progress and cancel request looked at between chunks. core/data/datasets.py calls it."""
from __future__ import annotations

import hashlib
import os
import re
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from core.data import formats
from core.data.archives import DATASET_ZIP, NPZ_FILE, UnsafeArchive, check_zip
from core.data.formats import FormatOptions
from core.data.imaging import ImageError, displayable, resize_to_model, stretch_to_uint8
from core.data.layout import (LIST_REPORT_EVERY, SPLIT_ALIASES, SPLIT_NAMES, DataError, LoadCancelled,
                              check_data_root, check_setting, find_upload, is_chest_xray_layout)
from core.progress import ProgressFn
from core.settings.paths import PROJECT_ROOT

BUILTIN_ZIP = PROJECT_ROOT / "assets" / "datasets" / "chest_xray_128.zip"
_PATIENT_RE = re.compile(r"^(person\d+|(?:NORMAL\d*-)?IM-\d+)", re.IGNORECASE)

DECODE_CHUNK = 256  # images decoded between two progress reports and cancellation checks



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
            self.progress(count, 0, f"Listing files: {count:,} found")

    def decoded(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(done, total, f"Decoding images: {done:,} of {total:,}")

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
        if len(heads) != 1 or None in heads or not deeper or next(iter(heads)).lower() in SPLIT_ALIASES:
            break
        depth += 1
    return {p: "/".join(parts[depth:]) for p, parts in split_paths.items()}


def _parse_layout(rel_paths: list[str]) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """[(path, split, class_folder)] from 'class/file' or 'split/class/file' paths, plus skipped."""
    stripped = _strip_common_folders(rel_paths)
    heads = {s.split("/")[0].lower() for s in stripped.values() if "/" in s}
    has_split = bool(heads) and heads <= set(SPLIT_ALIASES)
    parsed, skipped = [], []
    for original, rel in stripped.items():
        parts = rel.split("/")
        need = 3 if has_split else 2
        if len(parts) < need:
            skipped.append({"file": original, "reason": "not inside a class folder"})
            continue
        split = SPLIT_ALIASES[parts[0].lower()] if has_split else ""
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


def _npz_labels(labels: np.ndarray) -> np.ndarray:
    """One integer label per image: MedMNIST stores them as (n, 1), its multi-label sets as (n, k) (the
    first column is taken), Keras as (n,)."""
    labels = np.asarray(labels)
    if labels.ndim > 1:
        labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.size else labels.reshape(0)
    return labels.astype(np.int32)


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
            labels = _npz_labels(archive[labels_key])
            if len(labels) != len(images):
                raise DataError(f"{path.name}: {labels_key} holds {len(labels)} labels for the {len(images)} "
                                f"images of {images_key}")
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
        if not any(len(p) for p in parts["labels"]):
            raise DataError(f"{path.name} holds no images")
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
