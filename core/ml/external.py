"""External validation: a trained run evaluated on another labelled dataset (any format the Dataset
page reads: a folder of class folders, a zip of one, a MedMNIST or Keras .npz, a CSV of labels, a
CIFAR tarball; told from the file itself, read with the run's own format settings), with the same metrics, patient-bootstrap intervals and
the share of images the out-of-distribution check flags, side by side with the run's own test split,
how the images' brightness and contrast compare with the training images' (a whole-set shift,
such as another scanner's, that the per-image check can miss), and which of its images the run has
already seen: the same picture among its training or validation images, or a patient id of theirs.

The result is saved as `run.external_dir/<slug>.json` and listed by `Run.external_results()`.
"""
from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.data import datasets as data_lib
from core.data import detection
from core.data.formats import FormatOptions
from core.files import json_ready
from core.ml import metrics as metrics_lib
from core.ml import intervals as intervals_lib
from core.ml import ood
from core.progress import ProgressFn, within
from core.settings.config import TrainConfig
from core.files import write_json
from core.store.run_folder import Run

PREDICT_CHUNK = 256  # images predicted between two progress reports / cancel checks
N_RESAMPLES = 1000
SHIFT_RANGE = (1.0, 99.0)  # percentiles of the training images' brightness and contrast
THUMBNAIL_SIDE = 16
# RMS difference of two standardised 16x16 thumbnails below which they are one picture. On the built-in
# set at 64 px, the same picture re-saved (JPEG, PNG), resized or re-exposed stays under 0.07 (0.09 with
# a fifth of it clipped white); of all 4,488 X-rays against each other, no two of different patients
# come closer than 0.17 (the only closer pairs: 22 duplicate files of one patient, at 0.00-0.01).
SAME_PICTURE_DISTANCE = 0.10


class ExternalDataError(data_lib.DataError):
    """The external dataset cannot be evaluated with this run (missing, unreadable, other classes)."""


def source_of(data_path) -> tuple[str, Path]:
    """(a TrainConfig data_source, path) for a labelled dataset, told from the file; a clear error otherwise."""
    path = Path(data_path).expanduser()
    if not path.exists():
        raise ExternalDataError(f"{path} does not exist: give a folder of class folders, a .zip of one, an "
                                ".npz, a CSV of labels or a CIFAR tarball")
    try:
        return detection.detect(path).source, path
    except data_lib.DataError as exc:
        raise ExternalDataError(str(exc)) from exc


def external_options(config: TrainConfig) -> FormatOptions:
    """The run's format settings (CSV label column, CIFAR-100 level, .npz class names) for the external
    set, whose images sit beside its own CSV rather than in the run's images folder."""
    return replace(FormatOptions.from_settings(config), images_folder="")


def task_for(source: str, config: TrainConfig) -> str:
    """Class folders are read with the run's task (NORMAL/PNEUMONIA folders give subtypes too); the other
    formats carry their own classes, matched to the run's by name."""
    return config.task if source in ("folder", "zip") else "classes"


def slug(name: str) -> str:
    """A file-name-safe version of a dataset's name: 'My X-rays (2024)' -> 'my-x-rays-2024'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "external"


def run_labels(run_classes, data_classes, labels, path) -> np.ndarray:
    """The dataset's labels as indices of the run's classes, matched by name (case aside, in any order);
    a clear error when the two sets of classes differ."""
    index = {name.lower(): i for i, name in enumerate(run_classes)}
    if sorted(index) != sorted(name.lower() for name in data_classes):
        raise ExternalDataError(
            f"{path} has the classes {', '.join(data_classes)} but run tells apart "
            f"{', '.join(run_classes)}: an external set needs the same classes")
    return np.array([index[name.lower()] for name in data_classes])[np.asarray(labels, dtype=int)]


def predict_with_features(model, images: np.ndarray, batch_size: int, progress: ProgressFn | None = None,
                          cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features (N, D), probabilities (N, C)) of uint8 images, a chunk at a time."""
    features_model = ood.features_model(model)
    features, probabilities = [], []
    for start in range(0, len(images), PREDICT_CHUNK):
        if cancel is not None and (cancel() if callable(cancel) else cancel.is_set()):
            raise data_lib.LoadCancelled("external evaluation was cancelled")
        chunk = np.asarray(images[start:start + PREDICT_CHUNK], dtype=np.float32)
        feats, probs = features_model.predict(chunk, batch_size=batch_size, verbose=0)
        features.append(np.asarray(feats, dtype=np.float64).reshape(len(chunk), -1))
        probabilities.append(np.asarray(probs, dtype=np.float64))
        if progress:
            done = min(start + PREDICT_CHUNK, len(images))
            progress(0.5 + 0.35 * done / len(images), 1.0, f"Predicting {done} of {len(images)} images")
    return np.concatenate(features), np.concatenate(probabilities)


def ood_rate(run: Run, model, features: np.ndarray) -> tuple[float | None, str | None]:
    """(share of images whose features lie beyond the run's out-of-distribution limit, None) or
    (None, why the check is off)."""
    try:
        reference = ood.reference_for_run(run, ood.features_model(model))
    except Exception as exc:  # noqa: BLE001 - e.g. the training data moved: the rest of the evaluation stands
        return None, f"the out-of-distribution check is off: its training data could not be used ({exc})"
    return float(np.mean(reference.distances(features) > reference.threshold)), None


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: brightness (mean grey level, 0-255) and contrast (standard deviation of the grey
    levels), a chunk at a time so a large set is never copied as floats whole."""
    parts = {"brightness": [], "contrast": []}
    for start in range(0, len(images), PREDICT_CHUNK):
        pixels = np.asarray(images[start:start + PREDICT_CHUNK], dtype=np.float32).reshape(
            min(PREDICT_CHUNK, len(images) - start), -1)
        parts["brightness"].append(pixels.mean(axis=1))
        parts["contrast"].append(pixels.std(axis=1))
    return {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}


def acquisition_shift(external_images: np.ndarray, training_images: np.ndarray) -> dict:
    """How the external images' brightness and contrast compare with the training images': both
    medians, where the external median falls among the training images (its percentile: about 50
    for images from the same source) and the share of external images outside the training images'
    SHIFT_RANGE percentiles (about 2% from the same source). A scanner or protocol change moves a
    whole set, which a per-image feature check can miss."""
    external, training = image_statistics(external_images), image_statistics(training_images)
    shift = {}
    for name in ("brightness", "contrast"):
        low, high = np.percentile(training[name], SHIFT_RANGE)
        outside = (external[name] < low) | (external[name] > high)
        median = float(np.median(external[name]))
        shift[name] = {"external_median": median, "training_median": float(np.median(training[name])),
                       "median_percentile": float(100 * np.mean(training[name] < median)),
                       "training_range": [float(low), float(high)], "outside_share": float(outside.mean())}
    return shift


def run_data(run: Run):
    """The run's own dataset and split, as it trained on them."""
    from core.ml.data_pipeline import load_data
    return load_data(TrainConfig.from_dict(run.config()))


def thumbnails(images: np.ndarray, rows: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """(N, 256) float32: each image as a grey 16x16 thumbnail (block means), standardised to mean 0 and
    standard deviation 1, so a copy with other brightness and contrast still matches. Read in chunks,
    so a memory-mapped set is never held whole."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    parts = []
    for start in range(0, len(rows), chunk):
        grey = np.asarray(images[rows[start:start + chunk]], dtype=np.float32).mean(axis=3)
        n, height, width = grey.shape
        side = min(THUMBNAIL_SIDE, height, width)
        grey = grey[:, :height // side * side, :width // side * side]
        small = grey.reshape(n, side, height // side, side, width // side).mean(axis=(2, 4)).reshape(n, -1)
        small -= small.mean(axis=1, keepdims=True)
        parts.append(small / np.maximum(small.std(axis=1, keepdims=True), 1.0))  # a flat image stays flat
    return np.concatenate(parts) if parts else np.zeros((0, THUMBNAIL_SIDE ** 2), np.float32)


def thumbnail_distances(thumbs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(len(thumbs), len(reference)) RMS differences between thumbnails, without a difference array."""
    squared = (thumbs ** 2).sum(axis=1)[:, None] + (reference ** 2).sum(axis=1)[None, :] - 2 * thumbs @ reference.T
    return np.sqrt(np.maximum(squared, 0) / thumbs.shape[1])


def same_pictures(thumbs: np.ndarray, reference: np.ndarray, chunk: int = 512) -> np.ndarray:
    """For each thumbnail, the row of `reference` that is the same picture (closest, within
    SAME_PICTURE_DISTANCE), or -1."""
    matches = np.full(len(thumbs), -1)
    if not len(reference):
        return matches
    for start in range(0, len(thumbs), chunk):
        block = thumbs[start:start + chunk]
        distance = thumbnail_distances(block, reference)
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(block)), nearest] < SAME_PICTURE_DISTANCE
        matches[start:start + chunk] = np.where(close, nearest, -1)
    return matches


def seen_by_run(dataset, run_dataset, split) -> dict:
    """Which external images the run has seen: the same picture as one of its training or validation
    images, or the patient id of one of their patients (same file-name scheme). Either makes the
    external numbers optimistic: they are no longer about new patients."""
    seen = np.concatenate([split.train, split.val])
    matches = same_pictures(thumbnails(dataset.images), thumbnails(run_dataset.images, seen))
    same_picture = matches >= 0
    same_patient = np.isin(dataset.patient_ids, np.unique(run_dataset.patient_ids[seen]))
    examples = [f"{dataset.files[i]} = {run_dataset.files[seen[matches[i]]]}" for i in np.flatnonzero(same_picture)[:3]]
    return {"compared_with": int(len(seen)), "same_pictures": int(same_picture.sum()),
            "same_patient_ids": int(same_patient.sum()), "seen": int((same_picture | same_patient).sum()),
            "examples": examples}


def checks_against_training(run: Run, dataset) -> tuple[dict | None, dict | None, str | None]:
    """(brightness and contrast shift, what the run has seen, None), or (None, None, why the run's own
    images could not be read for either)."""
    try:
        run_dataset, split = run_data(run)
        training = run_dataset.images[ood.subsample(split.train, ood.MAX_TRAIN_IMAGES)]
        return acquisition_shift(dataset.images, training), seen_by_run(dataset, run_dataset, split), None
    except (data_lib.DataError, OSError, ValueError) as exc:  # e.g. the training data moved
        return None, None, ("the brightness, contrast and overlap checks are off: the run's own images could "
                            f"not be read ({exc})")


def scored(probabilities, labels, class_names, patients, threshold) -> dict:
    """{"metrics", "intervals"} of one set of predictions at the run's threshold."""
    return {"metrics": metrics_lib.classification_metrics(probabilities, labels, class_names, threshold),
            "intervals": intervals_lib.bootstrap_intervals(probabilities, labels, class_names, patients, threshold,
                                                         n_resamples=N_RESAMPLES)}


def internal_test(run: Run, threshold) -> dict | None:
    saved = run.predictions("test")
    if saved is None:
        return None
    return scored(saved["probabilities"], saved["labels"], saved["class_names"], saved["patient_ids"], threshold)


def evaluate_external(run, data_path, progress: ProgressFn | None = None, cancel=None) -> dict:
    """Evaluate `run` (a Run or its folder) on the labelled dataset at `data_path`; save and return
    the result (see the module doc). Raises ExternalDataError / DataError with a clear message."""
    from core.ml.inference import Predictor
    run = run if isinstance(run, Run) else Run(Path(run))
    source, path = source_of(data_path)
    predictor = Predictor(run.path)
    config = TrainConfig.from_dict(run.config())
    dataset = data_lib.load_dataset(source, path, task_for(source, config), config.image_size, config.channels,
                                    progress=within(progress, 0.0, 0.5), cancel=cancel,
                                    options=external_options(config))
    labels = run_labels(predictor.class_names, dataset.class_names, dataset.labels, path)
    features, probabilities = predict_with_features(predictor.model, dataset.images, config.batch_size,
                                                    progress, cancel)
    if progress:
        progress(0.85, 1.0, "Checking for out-of-distribution images")
    rate, ood_error = ood_rate(run, predictor.model, features)
    if progress:
        progress(0.88, 1.0, "Comparing with the run's own images (brightness, contrast, pictures it has seen)")
    shift, seen, shift_error = checks_against_training(run, dataset)
    if progress:
        progress(0.9, 1.0, "Bootstrapping patients for the intervals")
    external = scored(probabilities, labels, predictor.class_names, dataset.patient_ids, predictor.threshold)
    name = path.stem if path.is_file() else path.name
    result = json_ready({
        "name": name, "source": str(path.resolve()), "evaluated": time.time(),
        "n_images": len(labels), "n_patients": external["intervals"]["n_patients"],
        "class_names": list(predictor.class_names), "threshold": predictor.threshold,
        "metrics": external["metrics"], "intervals": external["intervals"],
        "ood_rate": rate, "ood_error": ood_error, "shift": shift, "shift_error": shift_error,
        "seen": seen,
        "skipped": len(dataset.report.skipped),
        "internal_test": internal_test(run, predictor.threshold),
    })
    write_json(run.external_dir / f"{slug(name)}.json", result)
    if run.model_card_path.exists():  # the card lists external results: keep it up to date
        from core.ml import model_card
        model_card.write_model_card(run)
    if progress:
        progress(1.0, 1.0, "Done")
    return result
