"""What the dashboard's forms need, without Streamlit: dataset settings shared between pages,
how a declared setting is drawn, form values -> TrainConfig, and saved uploads.

No TensorFlow: the settings' declarations say how to draw them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from core.data import datasets as data_lib
from core.data.formats import OWN_CLASSES, FormatOptions
from core.files import atomic_path
from core.settings.config import SETTINGS, TrainConfig

# TrainConfig fields chosen on the Dataset page and carried over to the Train page.
DATASET_FIELDS = ("data_source", "data_path", "task", "image_size", "color_mode", "split",
                  "val_fraction", "test_fraction", "split_seed", *FormatOptions.__dataclass_fields__)
SOURCE_TITLES = {"builtin": "Built-in chest X-rays", "folder": "Folder on the server",
                 "zip": "Zip file", "npz": ".npz arrays (MedMNIST, MNIST)", "cifar": "CIFAR tarball",
                 "csv": "CSV of labels"}
UPLOAD_SUFFIXES = (".zip", ".npz", ".gz", ".tgz", ".tar")


# ----------------------------------------------------------------------------- dataset settings

def default_dataset_settings() -> dict:
    """The built-in set with the default split; the split seed is set (the training seed is the Train page's)."""
    defaults = TrainConfig()
    return {**{name: getattr(defaults, name) for name in DATASET_FIELDS}, "split_seed": defaults.effective_split_seed}


def dataset_settings_from_config(config: dict) -> dict:
    """The dataset part of a saved run config (to re-use a run's data), with the seed its split used."""
    settings = complete_dataset_settings(config)
    split_seed = config.get("split_seed")
    settings["split_seed"] = split_seed if split_seed is not None else config.get("seed", settings["split_seed"])
    return settings


def complete_dataset_settings(saved: dict | None) -> dict:
    """Saved dataset settings (perhaps from an older version, or partial) as a full set of them."""
    return {**default_dataset_settings(),
            **{k: v for k, v in (saved or {}).items() if k in DATASET_FIELDS and v is not None}}


def default_task(source: str) -> str:
    """.npz, CIFAR and CSV datasets carry their own classes; image folders default to the chest X-ray task."""
    return "classes" if source in OWN_CLASSES else "binary"


def dataset_label(settings: dict) -> str:
    """A one-line description of the chosen dataset, for captions."""
    source = SOURCE_TITLES.get(settings["data_source"], settings["data_source"])
    where = f" ({Path(settings['data_path']).name})" if settings.get("data_path") else ""
    task = data_lib.TASK_TITLES.get(settings["task"], settings["task"])
    split = ("the dataset's own split" if settings["split"] == "own" else
             f"val {settings['val_fraction']:.0%} / test {settings['test_fraction']:.0%}, "
             f"split seed {settings['split_seed']}")
    chosen = FormatOptions.from_settings(settings).for_source(settings["data_source"])
    own = "".join(f" · {SETTINGS[name].title}: {value}" for name, value in chosen.items())
    return (f"{source}{where} · {task}{own} · {settings['image_size']} px {settings['color_mode']} · {split}")


# ----------------------------------------------------------------------------- widgets of settings

def widget_spec(setting, choices=None) -> dict:
    """How to draw one declared setting (`core.settings.declare.Setting`): kind select | checkbox |
    text (free text, or a list of whole numbers) | slider | number, with its options or range, step
    and format.
    `choices` narrows the setting's own choices (e.g. the tasks a source offers)."""
    if choices is not None or setting.choices or setting.options:
        return {"kind": "select", "options": list(choices or setting.choices or setting.options)}
    if setting.kind is bool:
        return {"kind": "checkbox"}
    if setting.kind in (str, list):
        return {"kind": "text"}
    whole = setting.kind is int
    low = setting.min if setting.off is None or setting.min is None else min(setting.off, setting.min)
    return {"kind": "slider" if setting.slider else "number",
            "min": _bound(low, whole), "max": _bound(setting.max, whole),
            "step": _step(setting, whole), "format": None if whole else (setting.format or "%.4g")}


def _bound(bound, whole: bool):
    if bound is None:
        return None
    return int(bound) if whole else float(bound)


def _step(setting, whole: bool):
    """The declared step; else 1 for whole numbers and a twentieth-ish of a small float range."""
    if setting.step is not None:
        return int(setting.step) if whole else float(setting.step)
    if whole:
        return 1
    span = (setting.max if setting.max is not None else 1.0) - (setting.min or 0.0)
    return 0.05 if span <= 1 else 0.25


def to_widget(setting, value, choices=None):
    """A setting's value as its widget holds it: a list as '256, 128' text, a number of the widget's
    type, a number offered as a short list as the nearest option, a choice it does not offer as
    its first."""
    if value is None and setting.optional:
        return None
    spec = widget_spec(setting, choices)
    if spec["kind"] == "select":
        options = spec["options"]
        if value in options:
            return value
        if isinstance(value, (int, float)) and all(isinstance(o, (int, float)) for o in options):
            return min(options, key=lambda option: abs(option - value))
        return options[0]
    if spec["kind"] == "text":
        return ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    if spec["kind"] == "checkbox":
        return bool(value)
    return int(value) if setting.kind is int else float(value)


def from_widget(setting, value):
    """A widget's value as the setting's type ('256, 128' -> [256, 128]); a value the declaration
    refuses is returned as it is, so validating the config names the setting and what it takes."""
    try:
        return setting.check(value)
    except ValueError:
        return value


# ----------------------------------------------------------------------------- the config

def build_config(dataset_settings: dict, values: dict) -> TrainConfig:
    """A validated TrainConfig from the dataset settings and the Train form's values.

    `values` holds TrainConfig fields (arch, arch_params, optimizer, ...) plus an
    `augmentation` dict; raises ValueError with a readable message for a bad setting.
    """
    settings = {k: v for k, v in dataset_settings.items() if k in DATASET_FIELDS}
    return TrainConfig.from_dict({**settings, **values}).validate()


# ----------------------------------------------------------------------------- uploads

def save_upload(content: bytes, file_name: str) -> Path:
    """Save an uploaded .zip/.npz as `<uploads>/<sha>.<ext>` (same content, same path) and return it."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise data_lib.DataError(f"{file_name}: upload a .zip of class folders, an .npz (MedMNIST or Keras) or "
                                 "a CIFAR python .tar.gz")
    if not content:
        raise data_lib.DataError(f"{file_name} is empty")
    target = data_lib.uploads_dir() / f"{hashlib.sha256(content).hexdigest()[:20]}{suffix}"
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_bytes(content)
    return target

