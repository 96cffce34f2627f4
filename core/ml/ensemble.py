"""Ensembles of finished runs: the class probabilities of runs that scored the same held-out images
(same dataset and split: e.g. the seeds of a sweep point, which share their split), averaged. No
TensorFlow: every member's predictions are already in its folder (predictions_<split>.npz), so an
ensemble costs nothing more to score; what it cost is the members' training time, and at prediction
time one forward pass per member.

    members = partners(store, run, "test")          # runs that scored the same test images
    ensemble = average([run, *members[:2]], "test")  # probabilities, labels, its own threshold
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.ml import metrics as metrics_lib

# Settings that decide which images a run's splits hold: runs equal on these are worth comparing
# file by file (the split seed is left to that comparison).
SAME_DATA = ("data_source", "data_path", "task", "label_column", "images_folder", "label_level", "npz_classes",
             "split", "val_fraction", "test_fraction", "cv_folds", "cv_fold")


@dataclass
class Ensemble:
    """Averaged probabilities of `run_ids` on one split, with that split's labels and patients, and the
    threshold chosen on the members' averaged validation probabilities (None: argmax)."""
    run_ids: tuple[str, ...]
    split: str
    probabilities: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    files: np.ndarray
    class_names: list[str]
    threshold: float | None
    trained_seconds: float | None  # the members' training time together (None: one is unknown)

    @property
    def passes(self) -> int:
        """Forward passes per image at prediction time: one per member."""
        return len(self.run_ids)

    def metrics(self, threshold: float | None = "own") -> dict:
        """classification_metrics at `threshold` (default: the ensemble's own, chosen on validation)."""
        chosen = self.threshold if threshold == "own" else threshold
        return metrics_lib.classification_metrics(self.probabilities, self.labels, self.class_names, chosen)


def same_images(first: dict, other: dict) -> bool:
    """Whether two runs' saved predictions of a split are of the same images, labels and classes, in order."""
    return (list(first["class_names"]) == list(other["class_names"])
            and np.array_equal(first["files"], other["files"]) and np.array_equal(first["labels"], other["labels"]))


def partners(store, run, split: str = "test") -> list:
    """Finished runs other than `run` whose `split` predictions are of exactly `run`'s images: the runs it
    can form an ensemble with, newest first."""
    own = run.predictions(split)
    if own is None:
        return []
    config = run.config()
    found = []
    for other in store.list():
        if other.id == run.id or other.state() != "done":
            continue
        other_config = other.config()
        if any(other_config.get(key) != config.get(key) for key in SAME_DATA):
            continue
        saved = other.predictions(split)
        if saved is not None and same_images(own, saved):
            found.append(other)
    return found


def average(runs, split: str = "test") -> Ensemble:
    """The ensemble of `runs` (two or more Run objects) on `split`. Raises ValueError when a run has no
    predictions of the split or they are of other images than the first run's."""
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    saved = [run.predictions(split) for run in runs]
    check_same(runs, saved, split)
    first = saved[0]
    probabilities = np.mean([np.asarray(s["probabilities"], np.float64) for s in saved], axis=0).astype(np.float32)
    seconds = [run.wall_seconds() for run in runs]
    return Ensemble(tuple(run.id for run in runs), split, probabilities, first["labels"], first["patient_ids"],
                    first["files"], list(first["class_names"]), validation_threshold(runs),
                    None if None in seconds else float(sum(seconds)))


def check_same(runs, saved: list, split: str) -> None:
    for run, predictions in zip(runs, saved):
        if predictions is None:
            raise ValueError(f"run {run.id} has no saved {split} predictions")
        if not same_images(saved[0], predictions):
            raise ValueError(f"run {run.id} scored other {split} images than run {runs[0].id} (another dataset or "
                             "split): an ensemble averages predictions of the same images")


def validation_threshold(runs) -> float | None:
    """The decision threshold of the members' averaged validation probabilities, chosen as a run's own
    is (metrics.decision_threshold); None when the task has none or a member lacks validation predictions."""
    saved = [run.predictions("val") for run in runs]
    if any(s is None for s in saved) or not all(same_images(saved[0], s) for s in saved):
        return None
    probabilities = np.mean([np.asarray(s["probabilities"], np.float64) for s in saved], axis=0)
    return metrics_lib.decision_threshold(probabilities, saved[0]["labels"], list(saved[0]["class_names"]))
