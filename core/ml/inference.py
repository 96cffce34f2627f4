"""A run's saved model loaded (`load_model`), a trained run loaded for prediction (`Predictor`: its
model, settings, classes and threshold), and the image files a prediction command was given
(`expand_inputs`)."""
from __future__ import annotations

import os
from pathlib import Path

from core.data.imaging import is_image_name
from core.settings.config import TrainConfig
from core.store.run_folder import Run


def load_model(run: Run):
    """The run's model.keras, in Keras' safe mode (no code from the file runs), uncompiled."""
    import keras
    return keras.models.load_model(run.model_path, safe_mode=True, compile=False)


class Predictor:
    """A run's model, settings, class names and decision threshold, loaded once (core.ml.diagnosis uses it)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run = Run(Path(run_dir))
        if not self.run.config_path.exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
        if not self.run.has_model():
            raise FileNotFoundError(f"run {self.run.id} has no model.keras (state: {self.run.state()})")
        self.config = TrainConfig.from_dict(self.run.config())
        summary = self.run.summary()
        self.class_names = summary.get("class_names") or self._class_names_from_predictions()
        self.threshold = summary.get("threshold")
        self.model = load_model(self.run)

    def _class_names_from_predictions(self) -> list[str]:
        saved = self.run.predictions("val") or self.run.predictions("test")
        if saved is not None:
            return saved["class_names"]
        # A run stopped before its evaluation (interrupted, failed) still saved its best epoch:
        # its classes are those of the dataset it was trained on.
        from core.ml.data_pipeline import load_data
        try:
            return list(load_data(self.config)[0].class_names)
        except Exception as exc:  # noqa: BLE001 - DataError, a moved folder ...: say which run and why
            raise FileNotFoundError(f"run {self.run.id} has neither a summary nor predictions, and its "
                                    f"dataset cannot be loaded to name the classes ({exc})") from None


def expand_inputs(paths) -> list[Path]:
    """Files as given; folders become the image files inside them, sorted."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        else:
            files.append(path)
    return files
