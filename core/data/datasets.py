"""Load image datasets (built-in chest X-rays, folders, zips, MedMNIST .npz) and split them by patient.

A dataset becomes plain numpy arrays: uint8 images (N, H, W, C), integer labels, patient ids and
file names. Decoded arrays are cached on disk, keyed by the source's content and the settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.imaging import (
    ImageError,
    displayable,
    is_image_name,
    resize_to_model,
    stretch_to_uint8,
    to_model_array,
)
from core.settings.config import SETTINGS
from core.store.files import atomic_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_ZIP = PROJECT_ROOT / "assets" / "datasets" / "chest_xray_128.zip"
TASK_TITLES = {
    "binary": "NORMAL vs PNEUMONIA",
    "subtype": "normal / bacterial / viral",
    "classes": "one class per folder",
}
SPLIT_NAMES = ("train", "val", "test")
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_PATIENT_RE = re.compile(r"^(person\d+|(?:NORMAL\d*-)?IM-\d+)", re.IGNORECASE)

ProgressFn = Callable[[int, int], None]


class DataError(ValueError):
    """A dataset that cannot be used; the message names the problem and what to do."""


@dataclass
class LoadReport:
    source: str
    n_images: int = 0
    skipped: list[dict] = field(default_factory=list)  # [{"file": ..., "reason": ...}]
    from_cache: bool = False
    seconds: float = 0.0


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

    def __len__(self) -> int:
        return len(self.labels)

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


def is_chest_xray_layout(class_folders) -> bool:
    return {c.upper() for c in class_folders} == {"NORMAL", "PNEUMONIA"}


# ----------------------------------------------------------------------------- sources

def cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE_DIR", PROJECT_ROOT / ".cache" / "datasets"))


def uploads_dir() -> Path:
    """Where uploaded datasets are kept: `CXR_UPLOADS_DIR`, else `uploads/` next to the dataset cache."""
    return Path(os.environ.get("CXR_UPLOADS_DIR", cache_dir().parent / "uploads"))


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
    if not any(resolved.is_relative_to(allowed) for allowed in (root, uploads_dir().resolve())):
        raise DataError(f"{path} is outside the data folder {root}: this dashboard is shared on a network, "
                        f"so it reads server paths only inside that folder (CXR_DATA_ROOT)")


def resolve_source_path(source: str, path: str | os.PathLike | None) -> Path:
    check_setting("data_source", source)
    if source == "builtin":
        return BUILTIN_ZIP
    if not path:
        raise DataError(f"data source {source!r} needs a path")
    resolved = Path(path).expanduser()
    check_data_root(resolved)
    if not resolved.exists():
        raise DataError(f"{resolved} does not exist")
    if source == "folder" and not resolved.is_dir():
        raise DataError(f"{resolved} is not a folder")
    if source in ("zip", "npz") and not resolved.is_file():
        raise DataError(f"{resolved} is not a file")
    return resolved


def content_hash(source: str, path: Path) -> str:
    """Hash of the source's content: file bytes for zip/npz, names+sizes+mtimes for a folder."""
    digest = hashlib.sha256()
    if source == "folder":
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _folder_entries(root: Path) -> dict[str, Callable[[], bytes]]:
    return {p.relative_to(root).as_posix(): p.read_bytes
            for p in sorted(root.rglob("*")) if p.is_file()}


def _zip_entries(path: Path) -> dict[str, Callable[[], bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path.name} is not a valid zip file") from None
    with archive:
        # Read everything up front: a ZipFile handle is not safe to share between decode threads.
        return {info.filename: (lambda data=archive.read(info): data)
                for info in archive.infolist() if not info.is_dir()}


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


def _decode_all(entries, paths, image_size, channels, progress: ProgressFn | None):
    """Decode images in parallel threads (Pillow releases the GIL while decoding)."""
    def decode(path):
        try:
            return to_model_array(entries[path](), image_size, channels), None
        except ImageError as exc:
            return None, str(exc)
        except OSError as exc:
            return None, f"could not be read ({exc})"

    results = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for done, result in enumerate(pool.map(decode, paths), 1):
            results.append(result)
            if progress and (done % 64 == 0 or done == len(paths)):
                progress(done, len(paths))
    return results


def _load_image_tree(entries, task, image_size, channels, progress) -> dict:
    report_skipped = []
    image_paths = []
    for rel in entries:
        if _is_junk(rel):
            continue
        if is_image_name(rel):
            image_paths.append(rel)
        else:
            report_skipped.append({"file": rel, "reason": "not an image file extension"})
    parsed, skipped = _parse_layout(image_paths)
    report_skipped += skipped
    if not parsed:
        raise DataError("no images found: expected one folder per class (optionally inside "
                        "train/ val/ test/), with JPEG or PNG files")
    class_names, labels, reasons = _labels_for_task(parsed, task)
    keep = [i for i, label in enumerate(labels) if label is not None]
    report_skipped += [{"file": parsed[i][0], "reason": reasons[i]}
                       for i, label in enumerate(labels) if label is None]
    decoded = _decode_all(entries, [parsed[i][0] for i in keep], image_size, channels, progress)
    arrays, rows = [], []
    for i, (array, error) in zip(keep, decoded):
        if error:
            report_skipped.append({"file": parsed[i][0], "reason": error})
            continue
        arrays.append(array)
        rows.append(i)
    files = [parsed[i][0] for i in rows]
    return {
        "images": np.stack(arrays) if arrays else np.zeros((0, image_size, image_size, channels), np.uint8),
        "labels": np.array([labels[i] for i in rows], dtype=np.int32),
        "class_names": class_names,
        "patient_ids": np.array([patient_id(f) for f in files], dtype=str),
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


def _load_npz(path: Path, task: str, image_size: int, channels: int, progress) -> dict:
    """MedMNIST layout: train_images / train_labels / val_... / test_... (or plain images / labels)."""
    if task != "classes":
        raise DataError(f"an .npz dataset has its own classes: use task 'classes', not {task!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path.name} is not a readable .npz file ({exc})") from None
    with archive:
        keys = set(archive.files)
        splits = [s for s in ("train", "val", "test") if f"{s}_images" in keys]
        prefixes = [f"{s}_" for s in splits] or ([""] if "images" in keys else [])
        if not prefixes:
            raise DataError(f"{path.name} has no 'train_images'/'images' arrays (found: {sorted(keys)})")
        parts = {name: [] for name in ("images", "labels", "patient_ids", "files", "own_split")}
        for prefix in prefixes:
            if f"{prefix}labels" not in keys:
                raise DataError(f"{path.name} has {prefix}images but no {prefix}labels")
            images = _npz_to_uint8(archive[f"{prefix}images"])
            labels = archive[f"{prefix}labels"].reshape(len(images), -1)[:, 0].astype(np.int32)
            split = prefix.rstrip("_")
            ids_key = f"{prefix}patient_ids"
            ids = archive[ids_key].astype(str) if ids_key in keys else \
                np.array([f"{split or 'image'}-{i}" for i in range(len(images))])
            parts["images"].append(np.stack([_npz_image_to_model(im, image_size, channels) for im in images]))
            parts["labels"].append(labels)
            parts["patient_ids"].append(ids)
            parts["files"].append(np.array([f"{split or 'images'}/{i}" for i in range(len(images))]))
            parts["own_split"].append(np.full(len(images), split, dtype=object).astype(str))
            if progress:
                progress(sum(len(p) for p in parts["labels"]), sum(len(p) for p in parts["labels"]))
        n_classes = int(max(int(p.max()) for p in parts["labels"] if len(p)) + 1)
        names = [str(n) for n in archive["class_names"]] if "class_names" in keys else \
            [f"class {i}" for i in range(n_classes)]
    return {**{k: np.concatenate(v) for k, v in parts.items()}, "class_names": names, "skipped": []}


def _npz_image_to_model(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    from PIL import Image
    return resize_to_model(Image.fromarray(displayable(image)), image_size, channels)


# ----------------------------------------------------------------------------- caching

def _cache_key(source: str, digest: str, task: str, image_size: int, channels: int) -> str:
    text = json.dumps([CACHE_VERSION, source, digest, task, image_size, channels])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _save_cache(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:  # a unique temp file: two jobs may decode the same dataset at once
        np.savez(tmp, images=arrays["images"], labels=arrays["labels"],
                 patient_ids=arrays["patient_ids"], files=arrays["files"], own_split=arrays["own_split"],
                 class_names=np.array(arrays["class_names"], dtype=str),
                 skipped=np.array(json.dumps(arrays["skipped"])))


def _read_cache(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {key: cached[key] for key in cached.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache is rebuilt
    arrays["class_names"] = [str(n) for n in arrays["class_names"]]
    arrays["skipped"] = json.loads(str(arrays["skipped"]))
    return arrays


# ----------------------------------------------------------------------------- public API

def load_dataset(source: str = "builtin", path: str | os.PathLike | None = None, task: str = "binary",
                 image_size: int = 128, channels: int = 1, use_cache: bool = True,
                 progress: ProgressFn | None = None) -> Dataset:
    """Load a dataset as arrays; raises DataError with a clear message when it cannot be used."""
    check_setting("task", task)
    check_setting("image_size", image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    started = time.perf_counter()
    resolved = resolve_source_path(source, path)
    digest = content_hash(source, resolved)
    cache_file = cache_dir() / f"{_cache_key(source, digest, task, image_size, channels)}.npz"
    arrays = _read_cache(cache_file) if use_cache and cache_file.exists() else None
    from_cache = arrays is not None
    if arrays is None:
        arrays = _load_uncached(source, resolved, task, image_size, channels, progress)
        _check_usable(arrays, resolved.name)
        if use_cache:
            _save_cache(cache_file, arrays)
    report = LoadReport(source=str(resolved), n_images=len(arrays["labels"]), skipped=arrays["skipped"],
                        from_cache=from_cache, seconds=round(time.perf_counter() - started, 3))
    return Dataset(images=arrays["images"], labels=arrays["labels"], class_names=arrays["class_names"],
                   patient_ids=arrays["patient_ids"], files=arrays["files"],
                   own_split=arrays["own_split"], content_hash=digest, report=report)


def _load_uncached(source, resolved, task, image_size, channels, progress) -> dict:
    if source == "npz":
        return _load_npz(resolved, task, image_size, channels, progress)
    entries = _folder_entries(resolved) if source == "folder" else _zip_entries(resolved)
    return _load_image_tree(entries, task, image_size, channels, progress)


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


def _finish_split(ds: Dataset, parts: dict, mode: str, warnings: list[str] | None = None) -> Split:
    report = split_report(ds, parts, mode)
    report.warnings = list(warnings or []) + report.warnings
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
