"""Test-time augmentation (TTA): a model's class probabilities averaged over a few views of each
image, with what that costs (forward passes and measured seconds). One computation (`predict_views`)
serves the Evaluate page (a run's split scored once and saved in the run folder, `score_split`) and
the Diagnose page (one uploaded image).

The views are X-ray-safe: small shifts and zooms, the kind of change a patient's position or the
collimation makes, within the recipe's training augmentation (shift 5%, zoom 10%). No horizontal
flip: a chest X-ray is not left-right symmetric (the heart sits on the left; a flipped film shows
dextrocardia), so a flipped image is a different picture, not another view of the same one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.files import atomic_path
from core.progress import ProgressFn

NOT_A_VIEW = ("No horizontal flip: a chest X-ray is not left-right symmetric (the heart sits on the left), "
              "so a flipped film is a different picture, not another view of the same chest.")
CHUNK = 512  # images transformed and predicted at a time, so a large split is never copied whole


@dataclass(frozen=True)
class View:
    """One view of an image: shifted by a fraction of its side (down, right), zoomed about its centre
    (above 1: closer), the uncovered border black as in the training augmentation (fill_mode constant)."""
    name: str
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0

    @property
    def identity(self) -> bool:
        return self.shift == (0.0, 0.0) and self.zoom == 1.0


IDENTITY = View("as is")
VIEWS = (IDENTITY,
         View("3% up", shift=(-0.03, 0.0)), View("3% down", shift=(0.03, 0.0)),
         View("3% left", shift=(0.0, -0.03)), View("3% right", shift=(0.0, 0.03)),
         View("5% closer", zoom=1.05), View("5% farther", zoom=1 / 1.05))


def views_sentence(views=VIEWS) -> str:
    """'7 views (as is, 3% up, ...)' for captions; `views` are View objects or their names."""
    names = [view.name if isinstance(view, View) else str(view) for view in views]
    return f"{len(names)} views ({', '.join(names)})"


# ----------------------------------------------------------------------------- one computation

def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """(N, S, S, C) pixels as float32, seen through `view` (the identity returns them unchanged)."""
    images = np.asarray(images, dtype=np.float32)
    if view.identity:
        return images
    import keras
    height, width = images.shape[1:3]
    inverse = 1.0 / view.zoom  # the transform maps an output pixel to the input pixel it shows
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    transform = [inverse, 0.0, centre_x * (1 - inverse) - view.shift[1] * width,
                 0.0, inverse, centre_y * (1 - inverse) - view.shift[0] * height, 0.0, 0.0]
    moved = keras.ops.image.affine_transform(images, np.asarray(transform, np.float32), interpolation="bilinear",
                                             fill_mode="constant", data_format="channels_last")
    return np.asarray(moved, dtype=np.float32)


@dataclass
class TTAResult:
    """Probabilities averaged over `views` (N, K float32), and the seconds each view's pass took."""
    probabilities: np.ndarray
    views: tuple[str, ...]
    view_seconds: tuple[float, ...]

    @property
    def passes(self) -> int:
        """Forward passes per image: one per view."""
        return len(self.views)

    @property
    def seconds(self) -> float:
        return float(sum(self.view_seconds))

    @property
    def plain_seconds(self) -> float | None:
        """The identity view's pass: what the prediction without TTA costs (None without it)."""
        return self.view_seconds[self.views.index(IDENTITY.name)] if IDENTITY.name in self.views else None


def predict_views(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, views=VIEWS,
                  progress: ProgressFn | None = None) -> TTAResult:
    """The mean of `predict` (float32 pixels -> probabilities) over `views` of `images`, chunk by chunk;
    `progress` (core/progress.py) counts forward passes, after each view of each chunk. The mean is
    taken in float64, so with the identity view alone it is exactly `predict(images)`."""
    if not len(images) or not views:
        raise ValueError("test-time augmentation needs at least one image and one view")
    seconds, parts, done, passes = np.zeros(len(views)), [], 0, len(images) * len(views)
    for start in range(0, len(images), CHUNK):
        chunk, total = images[start:start + CHUNK], 0.0
        for index, view in enumerate(views):
            began = time.perf_counter()
            total = total + np.asarray(predict(apply_view(chunk, view)), dtype=np.float64)
            seconds[index] += time.perf_counter() - began
            done += len(chunk)
            if progress:
                progress(done, passes, f"Forward passes: {done:,} of {passes:,}")
        parts.append(total / len(views))
    return TTAResult(np.concatenate(parts).astype(np.float32), tuple(view.name for view in views),
                     tuple(float(s) for s in seconds))


def keras_predict(model, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """`model.predict` at `batch_size`, as the run's own predictions were made."""
    return lambda images: model.predict(images, batch_size=batch_size, verbose=0)


# ----------------------------------------------------------------------------- a run's split, saved

class RowsOf:
    """`images[rows]` read a slice at a time (a memory-mapped dataset's split is never loaded whole)."""

    def __init__(self, images, rows):
        self.images, self.rows = images, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.asarray(self.images[self.rows[part]])


def saved_path(run, split: str) -> Path:
    return Path(run.path) / f"tta_{split}.npz"


def load_saved(run, split: str, views=VIEWS) -> dict | None:
    """The split's saved TTA result for the run's current model and these views, else None."""
    path = saved_path(run, split)
    if not path.exists() or not run.has_model():
        return None
    with np.load(path, allow_pickle=False) as saved:
        result = {key: saved[key] for key in saved.files}
    fresh = (float(result["model_mtime"]) == run.model_path.stat().st_mtime
             and tuple(result["views"]) == tuple(view.name for view in views))
    return {**result, "seconds": float(result["seconds"]), "plain_seconds": float(result["plain_seconds"]),
            "passes": int(result["passes"])} if fresh else None


def score_split(run, split: str = "test", views=VIEWS, progress: ProgressFn | None = None) -> dict:
    """Predict the run's `split` (the rows and order of its saved predictions) through `views`, save
    it in the run folder (tta_<split>.npz, atomically) and return it. Raises ValueError when the run's
    data no longer give the images its saved predictions were made on."""
    from core.ml.external import run_data
    from core.ml.inference import load_model
    saved = run.predictions(split)
    if saved is None:
        raise ValueError(f"run {run.id} has no saved {split} predictions to compare with")
    model_mtime = run.model_path.stat().st_mtime
    dataset, data_split = run_data(run)
    rows = data_split.indices(split)
    if list(dataset.files[rows]) != list(saved["files"]):
        raise ValueError(f"the run's dataset no longer gives the {split} images its predictions were made on "
                         "(the data changed or moved)")
    batch_size = int(run.config().get("batch_size", 64))
    predict, images = keras_predict(load_model(run), batch_size), RowsOf(dataset.images, rows)
    predict(apply_view(images[:batch_size], IDENTITY))  # traced here, untimed: every view's seconds are alike
    result = predict_views(predict, images, views, progress)
    fields = {"probabilities": result.probabilities, "views": np.array(result.views),
              "view_seconds": np.array(result.view_seconds), "seconds": result.seconds,
              "plain_seconds": result.plain_seconds if result.plain_seconds is not None else np.nan,
              "passes": result.passes, "images": len(rows), "model_mtime": model_mtime}
    with atomic_path(saved_path(run, split)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **fields)
    return load_saved(run, split, views)
