"""Train / validation / test splits of a dataset, grouped by patient and stratified by class (or the
dataset's own split, or patient-grouped k-fold), with the report that checks them for patient leaks."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

from core.data.datasets import Dataset
from core.data.layout import SPLIT_NAMES, DataError, cache_dir, check_setting
from core.files import atomic_path


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
