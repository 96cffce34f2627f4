"""A CSV of labels with its images in a folder: three layouts of the classic chest X-ray sets.

    filename,label[,patient_id]                    one class per row
    Image Index,Finding Labels,...,Patient ID      NIH ChestX-ray14: findings joined by '|'
    Path,...,Cardiomegaly,...,Pneumonia,...        CheXpert: one column per finding, 1 / 0 / -1 / empty

The target (`label_column`) is a column (CheXpert: 1 positive, 0 or empty negative, -1 uncertain and
skipped) or one of NIH's findings (that finding against the rest). Without one, the label column is
the class; NIH's rows with exactly one finding are kept (the others are skipped, with the reason).
The images are looked for under the images folder (the CSV's own by default) and its sub-folders:
by the path the CSV gives, or any tail of it, or, when it is unique there, by the file name alone.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from core.data.layout import LIST_REPORT_EVERY, DataError, check_data_root
from core.data.formats import FormatOptions, is_decodable_name

FILE_COLUMNS = ("filename", "file", "file_name", "image", "image index", "image_index", "path", "image_path")
LABEL_COLUMNS = ("label", "labels", "class", "target", "diagnosis")
PATIENT_COLUMNS = ("patient_id", "patient id", "patientid", "patient", "subject_id")
FINDINGS_COLUMN = "finding labels"
_PATIENT_FOLDER = re.compile(r"^patient\d+$", re.IGNORECASE)  # CheXpert: train/patient00001/study1/...
MISSING_SHOWN = 5


@dataclass
class CsvPlan:
    """The rows to decode: their files (as the CSV names them), labels and patients."""
    files: list[str]
    entries: dict[str, Callable[[], bytes]]
    labels: list[int]
    class_names: list[str]
    patients: list[str]                 # '' where the CSV gives none
    skipped: list[dict] = field(default_factory=list)


def read_table(path: Path, rows: int | None = None):
    import pandas as pd
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=rows, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path.name} is not a readable CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _column(frame, candidates) -> str | None:
    by_lower = {c.lower(): c for c in frame.columns}
    return next((by_lower[c.lower()] for c in candidates if c.lower() in by_lower), None)


def _file_column(frame, name: str) -> str:
    column = _column(frame, FILE_COLUMNS)
    if column is None:
        raise DataError(f"{name} has no column of image files: expected one named filename, Image Index or "
                        f"Path; its columns are {', '.join(frame.columns)}")
    return column


def _is_binary(values) -> bool:
    """A CheXpert-style column: every value 1, 0, -1 (as integers or floats) or empty, some not empty."""
    seen = {v.strip() for v in values}
    return bool(seen - {""}) and seen <= {"", "1", "0", "-1", "1.0", "0.0", "-1.0"}


def _findings(values) -> list[str]:
    return sorted({f.strip() for v in values for f in v.split("|") if f.strip()})


# ----------------------------------------------------------------------------- labels

def labels_of(frame, target: str, name: str) -> tuple[list[str], list[int | None], list[str]]:
    """(class names, one label per row or None when it is skipped, the reason for each skip)."""
    findings = _column(frame, (FINDINGS_COLUMN,))
    if target:
        column = _column(frame, (target,))
        if column is not None:
            values = frame[column].tolist()
            return _binary(values, column) if _is_binary(values) else _classes(values, column)
        match = next((f for f in _findings(frame[findings]) if f.lower() == target.lower()), None) if findings else None
        if match:
            return _finding_against_rest(frame[findings].tolist(), match)
        known = f"; the findings in {findings!r} are {', '.join(_findings(frame[findings]))}" if findings else ""
        raise DataError(f"unknown target {target!r} for {name}: its columns are {', '.join(frame.columns)}{known}")
    column = _column(frame, LABEL_COLUMNS)
    if column is not None:
        return _classes(frame[column].tolist(), column)
    if findings:
        return _single_findings(frame[findings].tolist())
    per_finding = [c for c in frame.columns if _is_binary(frame[c].tolist())]
    if per_finding:
        raise DataError(f"{name} has one 1/0/-1 column per finding ({', '.join(per_finding)}): choose one as "
                        "the target")
    raise DataError(f"{name} has no labels: expected a label column (filename,label[,patient_id]), NIH's "
                    f"'Finding Labels', or one 1/0/-1 column per finding; its columns are {', '.join(frame.columns)}")


def _classes(values, column: str):
    values = [v.strip() for v in values]
    names = sorted(set(values) - {""})
    index = {n: i for i, n in enumerate(names)}
    return names, [index.get(v) for v in values], ["" if v else f"no {column}" for v in values]


def _binary(values, column: str):
    labels, reasons = [], []
    for value in values:
        number = float(value) if value.strip() else 0.0  # empty: not mentioned, read as negative
        labels.append(None if number == -1 else int(number == 1))
        reasons.append(f"uncertain {column} (-1)" if number == -1 else "")
    return [f"no {column}", column], labels, reasons


def _finding_against_rest(values, finding: str):
    labels = [int(finding in {f.strip() for f in v.split("|")}) for v in values]
    return [f"no {finding}", finding], labels, ["" for _ in values]


def _single_findings(values):
    names = sorted({v.strip() for v in values if v.strip() and "|" not in v})
    index = {n: i for i, n in enumerate(names)}
    reasons = [f"several findings ({v}): choose one as the target" if "|" in v else
               ("" if v.strip() else "no finding labels") for v in values]
    return names, [index.get(v.strip()) if "|" not in v else None for v in values], reasons


def patients_of(frame, files: list[str]) -> list[str]:
    """The patient column's ids, else CheXpert's patientNNNNN folder in the path, else ''."""
    column = _column(frame, PATIENT_COLUMNS)
    if column is not None:
        return [v.strip() for v in frame[column].tolist()]
    return [next((p for p in PurePosixPath(f.replace("\\", "/")).parts if _PATIENT_FOLDER.match(p)), "")
            for f in files]


# ----------------------------------------------------------------------------- images

def images_folder(csv_path: Path, options: FormatOptions) -> Path:
    folder = Path(options.images_folder).expanduser() if options.images_folder else csv_path.parent
    check_data_root(folder)  # a shared dashboard reads images only inside its data folder, as for any path
    if not folder.is_dir():
        raise DataError(f"the images folder {folder} is not a folder")
    return folder


def index_images(folder: Path, listed: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Every decodable file under `folder`, by its path relative to it."""
    index = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and is_decodable_name(path.name):
            index[path.relative_to(folder).as_posix()] = path
            if listed and len(index) % LIST_REPORT_EVERY == 0:
                listed(len(index))
    return index


class _Finder:
    def __init__(self, index: dict[str, Path]):
        self.index, self.by_name = index, defaultdict(list)
        for rel in index:
            self.by_name[rel.rsplit("/", 1)[-1]].append(rel)

    def find(self, listed: str) -> tuple[Path | None, str]:
        """(the file, '') or (None, why not)."""
        parts = PurePosixPath(listed.replace("\\", "/")).parts
        for start in range(len(parts)):
            tail = "/".join(parts[start:])
            if tail in self.index:
                return self.index[tail], ""
        same_name = self.by_name.get(parts[-1] if parts else "", [])
        if len(same_name) == 1:
            return self.index[same_name[0]], ""
        if same_name:
            return None, f"its name is in {len(same_name)} folders: give its path in the CSV"
        return None, "listed in the CSV but not found"


def plan(csv_path: Path, options: FormatOptions, listed: Callable[[int], None] | None = None) -> CsvPlan:
    """What to decode for the CSV at `csv_path`: DataError for an unknown target, no files found, no rows."""
    name = csv_path.name
    frame = read_table(csv_path)
    if frame.empty:
        raise DataError(f"{name} has no rows")
    file_column = _file_column(frame, name)
    files = [v.strip() for v in frame[file_column].tolist()]
    class_names, labels, reasons = labels_of(frame, options.label_column, name)
    patients = patients_of(frame, files)
    folder = images_folder(csv_path, options)
    finder = _Finder(index_images(folder, listed))
    result = CsvPlan([], {}, [], class_names, [])
    missing = []
    for listed_file, label, reason, patient in zip(files, labels, reasons, patients):
        found, why = finder.find(listed_file) if listed_file else (None, "no file name")
        if found is None:
            missing.append(listed_file)
            result.skipped.append({"file": listed_file, "reason": why})
        elif listed_file in result.entries:
            result.skipped.append({"file": listed_file, "reason": "listed twice in the CSV"})
        elif label is None:
            result.skipped.append({"file": listed_file, "reason": reason})
        else:
            result.entries[listed_file] = found.read_bytes
            result.files.append(listed_file)
            result.labels.append(label)
            result.patients.append(patient)
    if len(missing) == len(files):
        raise DataError(f"none of the {len(files):,} files listed in {name} is in {folder} or its sub-folders "
                        f"(e.g. {', '.join(missing[:MISSING_SHOWN])}): set the images folder")
    if not result.files:
        counts = defaultdict(int)
        for skip in result.skipped:
            counts[skip["reason"]] += 1
        top = "; ".join(f"{n:,} {why}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        raise DataError(f"no usable rows in {name} ({top})")
    return result


def missing_summary(skipped: list[dict]) -> str | None:
    """'3 files listed in the CSV were not found (a.png, b.png, c.png)', or None."""
    missing = [s["file"] for s in skipped if s["reason"] == "listed in the CSV but not found"]
    if not missing:
        return None
    shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
    return f"{len(missing):,} files listed in the CSV were not found ({shown}); their rows were skipped"


def content_hash(csv_path: Path, options: FormatOptions) -> str:
    """The CSV's bytes and the names, sizes and times of the files in its images folder."""
    digest = hashlib.sha256(csv_path.read_bytes())
    folder = images_folder(csv_path, options)
    for rel, path in index_images(folder).items():
        stat = path.stat()
        digest.update(f"{rel}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def describe(csv_path: Path) -> str:
    """What the CSV is, in words, from its first rows."""
    frame = read_table(csv_path, rows=500)
    file_column = _file_column(frame, csv_path.name)
    findings = _column(frame, (FINDINGS_COLUMN,))
    if findings:
        shown = ", ".join(_findings(frame[findings])[:6])
        return (f"a CSV of labels in NIH ChestX-ray14 style ({file_column!r}, {findings!r}); target: empty for "
                f"the rows with one finding, or one finding against the rest (e.g. {shown})")
    if _column(frame, LABEL_COLUMNS):
        return f"a CSV of labels ({', '.join(frame.columns)})"
    per_finding = [c for c in frame.columns if _is_binary(frame[c].tolist())]
    if per_finding:
        return (f"a CSV of labels in CheXpert style, one 1/0/-1 column per finding: choose the target among "
                f"{', '.join(per_finding)}")
    return f"a CSV ({', '.join(frame.columns)}) without a label column"
