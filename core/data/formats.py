"""The data formats of the classic reports: their options, and what the loaders share about them.

    options = FormatOptions.from_settings(config)   # the settings a format reads (label column, ...)

Which format a file is: core/data/detection.py.

A folder (class folders of images or DICOM files) or a .zip is read by the image-tree loader, a .npz
(MedMNIST or Keras' mnist.npz layout) by the arrays loader, a CIFAR "python version" tarball by
core/data/cifar.py and a CSV of labels by core/data/label_csv.py (core/data/sources.py calls them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.data.dicom import is_dicom, is_dicom_name, read_dicom
from core.data.imaging import is_image_name, resize_to_model, to_model_array
from core.data.layout import DataError
from core.settings.config import SETTINGS

# The options each source reads; a source ignores the others (and its cache entry does not depend on them).
OPTIONS_OF = {"npz": ("npz_classes",), "cifar": ("label_level",), "csv": ("label_column", "images_folder")}
# Sources whose classes are the file's own: their task is "classes".
OWN_CLASSES = ("npz", "cifar", "csv")

FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# The first ten training labels of the real Fashion-MNIST (MNIST's begin 5 0 4 1 9 2 1 3 1 4), so an
# upload, whose file name is not kept, is still recognised.
FASHION_MNIST_FIRST_LABELS = (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)
KERAS_SPLITS = (("train", "x_train", "y_train"), ("val", "x_val", "y_val"), ("test", "x_test", "y_test"))
CIFAR10_MEMBERS = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                   "test_batch", "batches.meta")
CIFAR100_MEMBERS = ("train", "test", "meta")


@dataclass(frozen=True)
class FormatOptions:
    """The settings of TrainConfig that one data format reads, with their declared defaults."""
    label_column: str = SETTINGS["label_column"].default
    images_folder: str = SETTINGS["images_folder"].default
    label_level: str = SETTINGS["label_level"].default
    npz_classes: str = SETTINGS["npz_classes"].default

    @classmethod
    def from_settings(cls, values) -> "FormatOptions":
        """From a TrainConfig, or a dict of settings (missing ones at their defaults)."""
        get = values.get if isinstance(values, dict) else lambda name, default: getattr(values, name, default)
        chosen = {name: get(name, default) for name, default in asdict(cls()).items()}
        for name, value in chosen.items():
            SETTINGS[name].check(value)
        return cls(**{name: (value or "").strip() if name in ("label_column", "images_folder") else value
                      for name, value in chosen.items()})

    def for_source(self, source: str) -> dict:
        """The options `source` reads that differ from their defaults (part of its cache key)."""
        defaults = FormatOptions()
        return {name: getattr(self, name) for name in OPTIONS_OF.get(source, ())
                if getattr(self, name) != getattr(defaults, name)}


# ----------------------------------------------------------------------------- Keras .npz

def is_keras_layout(keys) -> bool:
    return "x_train" in keys


def keras_splits(keys, name: str) -> list[tuple[str, str, str]]:
    """[(split, images key, labels key)] of a Keras .npz: x_train/y_train, x_test/y_test (x_val/y_val)."""
    splits = []
    for split, images, labels in KERAS_SPLITS:
        if images in keys:
            if labels not in keys:
                raise DataError(f"{name} has {images} but no {labels}")
            splits.append((split, images, labels))
    return splits


def looks_like_fashion(file_name: str, train_labels: np.ndarray) -> bool:
    first = tuple(int(v) for v in np.asarray(train_labels).reshape(-1)[:len(FASHION_MNIST_FIRST_LABELS)])
    return "fashion" in file_name.lower() or first == FASHION_MNIST_FIRST_LABELS


def keras_class_names(choice: str, file_name: str, train_labels: np.ndarray, n_classes: int) -> list[str]:
    """Fashion-MNIST's names or the digits, as `choice` (auto | digits | fashion) says."""
    fashion = choice == "fashion" or (choice == "auto" and looks_like_fashion(file_name, train_labels))
    if not fashion:
        return [str(i) for i in range(n_classes)]
    if n_classes > len(FASHION_MNIST):
        raise DataError(f"{file_name} has {n_classes} classes; Fashion-MNIST has {len(FASHION_MNIST)}")
    return list(FASHION_MNIST)


# ----------------------------------------------------------------------------- decoding

def decode_member(name: str, data: bytes, image_size: int, channels: int) -> tuple[np.ndarray, str]:
    """(model pixels, the DICOM PatientID or '') of one file: DICOM by its name or marker, else Pillow."""
    if is_dicom(data, name):
        image, patient = read_dicom(data)
        return resize_to_model(image, image_size, channels), patient
    return to_model_array(data, image_size, channels), ""


def is_decodable_name(name: str) -> bool:
    return is_image_name(name) or is_dicom_name(name)
