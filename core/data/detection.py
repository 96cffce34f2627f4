"""Which data format a file or folder is, told from the file itself.

    detected = detect("~/data/mnist.npz")   # Detected(source="npz", kind="Keras .npz ...", task="classes")
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import cifar, label_csv
from core.data.dicom import is_dicom_name
from core.data.formats import looks_like_fashion
from core.data.imaging import is_image_name
from core.data.layout import SPLIT_ALIASES, DataError, is_chest_xray_layout

FOLDER_SCAN_LIMIT = 5000  # files looked at to tell a folder of DICOM files from one of images


@dataclass(frozen=True)
class Detected:
    source: str            # a TrainConfig data_source
    kind: str              # what the file is, in words
    task: str | None       # the task it needs ("classes" for a file's own classes), None: any


def detect(path: str | os.PathLike) -> Detected:
    """What the file or folder at `path` is; DataError when it is no format CXR Lab reads."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        return _detect_folder(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty (0 bytes)")
    if zipfile.is_zipfile(path):
        return _detect_zip(path)
    if path.suffix.lower() == ".csv":
        return Detected("csv", label_csv.describe(path), "classes")
    if tarfile.is_tarfile(path):
        return Detected("cifar", cifar.describe(path), "classes")
    raise DataError(f"{path.name} is not a dataset format CXR Lab reads: give a folder of class folders (images "
                 "or DICOM), a .zip of one, a MedMNIST or Keras .npz, a CIFAR python .tar.gz, or a CSV of labels")


def _detect_folder(path: Path) -> Detected:
    images = dicoms = 0
    for count, file in enumerate(path.rglob("*")):
        if count >= FOLDER_SCAN_LIMIT:
            break
        dicoms += is_dicom_name(file.name)
        images += is_image_name(file.name)
    task = "binary" if is_chest_xray_layout(_class_folders(path)) else "classes"
    what = "DICOM files" if dicoms and dicoms >= images else "images"
    return Detected("folder", f"a folder of {what} in class folders", task)


def _class_folders(root: Path) -> list[str]:
    """The class folders' names: the sub-folders, under train/val/test and one wrapping folder."""
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(folders) == 1 and folders[0].name.lower() not in SPLIT_ALIASES:
        return _class_folders(folders[0])
    if folders and all(p.name.lower() in SPLIT_ALIASES for p in folders):
        return sorted({c.name for p in folders for c in p.iterdir() if c.is_dir()})
    return [p.name for p in folders]


def _detect_zip(path: Path) -> Detected:
    with zipfile.ZipFile(path) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if not names or not all(name.endswith(".npy") for name in names):
        return Detected("zip", "a zip of class folders", None)
    keys = {name[:-len(".npy")] for name in names}
    if "x_train" in keys:
        return Detected("npz", f"a Keras .npz ({', '.join(sorted(keys))}), classes: "
                               f"{npz_class_title(path)}", "classes")
    return Detected("npz", f"a MedMNIST-style .npz ({', '.join(sorted(keys))})", "classes")


def npz_class_title(path: Path) -> str:
    """How the auto choice names a Keras .npz's classes, in words."""
    with np.load(path, allow_pickle=False) as archive:
        if "class_names" in archive.files:
            return "its own class_names"
        return ("Fashion-MNIST's names" if looks_like_fashion(path.name, archive["y_train"])
                else "the digits 0-9 (choose Fashion-MNIST below if it is)")


