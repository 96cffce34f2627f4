"""What the dashboard's forms need, without Streamlit: dataset settings shared between pages,
widget specs from architecture parameters, form values -> TrainConfig, and saved uploads.

No TensorFlow: the settings' declarations say how to draw them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from core.data import datasets as data_lib
from core.settings.config import TrainConfig
from core.store.files import atomic_path

# TrainConfig fields chosen on the Dataset page and carried over to the Train page.
DATASET_FIELDS = ("data_source", "data_path", "task", "image_size", "color_mode", "split",
                  "val_fraction", "test_fraction", "seed")
SOURCE_TITLES = {"builtin": "Built-in chest X-rays", "folder": "Folder on the server",
                 "zip": "Zip file", "npz": "MedMNIST .npz"}
UPLOAD_SUFFIXES = (".zip", ".npz")


# ----------------------------------------------------------------------------- dataset settings

def default_dataset_settings() -> dict:
    defaults = TrainConfig()
    return {name: getattr(defaults, name) for name in DATASET_FIELDS}


def dataset_settings_from_config(config: dict) -> dict:
    """The dataset part of a saved run config (to re-use a run's data)."""
    settings = default_dataset_settings()
    settings.update({k: config[k] for k in DATASET_FIELDS if k in config})
    return settings


def default_task(source: str) -> str:
    """.npz datasets carry their own classes; image folders default to the chest X-ray task."""
    return "classes" if source == "npz" else "binary"


def dataset_label(settings: dict) -> str:
    """A one-line description of the chosen dataset, for captions."""
    source = SOURCE_TITLES.get(settings["data_source"], settings["data_source"])
    where = f" ({Path(settings['data_path']).name})" if settings.get("data_path") else ""
    task = data_lib.TASK_TITLES.get(settings["task"], settings["task"])
    split = ("the dataset's own split" if settings["split"] == "own" else
             f"val {settings['val_fraction']:.0%} / test {settings['test_fraction']:.0%}, seed {settings['seed']}")
    return (f"{source}{where} · {task} · {settings['image_size']} px {settings['color_mode']} · {split}")


# ----------------------------------------------------------------------------- architecture params

def param_widget(param) -> dict:
    """How to draw one declared setting (`core.settings.declare.Setting`): kind select | checkbox |
    int | float | int_list."""
    default = param.default
    if param.choices:
        return {"kind": "select", "options": list(param.choices)}
    if isinstance(default, bool):
        return {"kind": "checkbox"}
    if isinstance(default, list):
        return {"kind": "int_list", "text": ", ".join(str(v) for v in default)}
    if isinstance(default, int):
        return {"kind": "int", "min": None if param.min is None else int(param.min),
                "max": None if param.max is None else int(param.max), "step": 1}
    span = (param.max or 1.0) - (param.min or 0.0)
    return {"kind": "float", "min": param.min, "max": param.max,
            "step": 0.05 if span <= 1 else 0.25, "format": "%.4g"}


# ----------------------------------------------------------------------------- the config

def build_config(dataset_settings: dict, values: dict) -> TrainConfig:
    """A validated TrainConfig from the dataset settings and the Train form's values.

    `values` holds TrainConfig fields (arch, arch_params, optimizer, ...) plus an
    `augmentation` dict; raises ValueError with a readable message for a bad setting.
    """
    settings = {k: v for k, v in dataset_settings.items() if k in DATASET_FIELDS}
    return TrainConfig.from_dict({**settings, **values}).validate()


def train_image_estimate(n_images: int, settings: dict, own_train_images: int | None = None) -> int:
    """Images in the training split: the dataset's own train part, or what the fractions leave."""
    if settings.get("split") == "own" and own_train_images:
        return int(own_train_images)
    return int(round(n_images * (1 - settings["val_fraction"] - settings["test_fraction"])))


# ----------------------------------------------------------------------------- uploads

def save_upload(content: bytes, file_name: str) -> Path:
    """Save an uploaded .zip/.npz as `<uploads>/<sha>.<ext>` (same content, same path) and return it."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise data_lib.DataError(f"{file_name}: upload a .zip of class folders or a MedMNIST .npz file")
    if not content:
        raise data_lib.DataError(f"{file_name} is empty")
    target = data_lib.uploads_dir() / f"{hashlib.sha256(content).hexdigest()[:20]}{suffix}"
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_bytes(content)
    return target

