"""Scoring several runs on ONE common test split, so their metrics can be compared.

Runs trained with another image size, split fractions, split seed, split mode, task or dataset
were each scored on their own test patients, so their saved metrics are not comparable. Here the
test patients of a reference run, minus every patient that ANY of the runs trained or validated
on, become one common test set; each run's model is scored on those images at its own image
size and colour mode. Splits are rebuilt from each run's config exactly as training built them
(`core.ml.data_pipeline.load_data`). TensorFlow is imported only inside `score_runs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.ml import metrics as metrics_lib
from core.ml import intervals as intervals_lib
from core.ml.inference import load_model
from core.ml.data_pipeline import load_data
from core.progress import ProgressFn, within
from core.settings.config import TrainConfig
from core.store.run_folder import Run

# Settings that change which images a run was tested on, or how it sees them: (config key, words).
TEST_SET_SETTINGS = (
    ("data_source", "dataset source"), ("data_path", "dataset path"), ("task", "task"),
    ("image_size", "image size"), ("color_mode", "colour mode"), ("split", "split (grouped or own)"),
    ("val_fraction", "validation fraction"), ("test_fraction", "test fraction"),
    ("split_seed", "split seed"), ("cv_folds", "cross-validation folds"),
)


class CommonSplitError(ValueError):
    """The runs cannot be scored on one common test set; the message says why."""


# ----------------------------------------------------------------------------- what differs

def test_setting(config: dict, key: str):
    """The value of a test-set setting as training used it (the split seed falls back to the seed)."""
    if key == "split_seed":
        return config.get("split_seed") if config.get("split_seed") is not None else config.get("seed")
    if key == "data_path":
        return config.get("data_path") or ""
    return config.get(key)


def test_set_differences(configs: dict[str, dict]) -> list[dict]:
    """Settings that make the runs' test sets (or their inputs) differ:
    [{"setting": "image size", "key": "image_size", "values": {run label: value}}]."""
    differences = []
    for key, words in TEST_SET_SETTINGS:
        values = {label: test_setting(config, key) for label, config in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            differences.append({"setting": words, "key": key, "values": values})
    return differences


def describe_differences(differences: list[dict]) -> list[str]:
    """One line per differing setting: 'image size: a = 32, b = 64'."""
    return [f"{d['setting']}: " + ", ".join(f"{label} = {value if value != '' else '(none)'}"
                                             for label, value in d["values"].items())
            for d in differences]


# ----------------------------------------------------------------------------- the common set

@dataclass
class CommonTestSet:
    reference: str                  # label of the run whose test patients were the starting point
    files: list[str]                # the images every run is scored on
    patients: list[str]             # their distinct patients
    reference_images: int           # the reference's own test images
    reference_patients: int
    removed_patients: list[str] = field(default_factory=list)  # trained or validated on by some run
    removed_images: int = 0
    missing_images: int = 0         # reference test images absent from another run's dataset

    def describe(self) -> str:
        text = (f"{len(self.files)} images of {len(self.patients)} patients: the test patients of "
                f"{self.reference} ({self.reference_images} images, {self.reference_patients} patients) "
                f"minus {len(self.removed_patients)} patients ({self.removed_images} images) that at "
                "least one of the runs trained or validated on")
        if self.missing_images:
            text += f", minus {self.missing_images} images missing from another run's dataset"
        return text + "."


@dataclass
class _RunSplit:
    seen_patients: set[str]   # patients in the run's train or validation split
    test_files: list[str]
    test_patients: dict[str, str]  # test file -> patient
    files: set[str]           # every file of the run's dataset


def run_split(config: dict) -> _RunSplit:
    """The run's split as training made it (same code path, same seed)."""
    dataset, split = load_data(TrainConfig.from_dict(config))
    seen = np.concatenate([split.train, split.val])
    return _RunSplit(seen_patients=set(dataset.patient_ids[seen].astype(str).tolist()),
                     test_files=dataset.files[split.test].astype(str).tolist(),
                     test_patients=dict(zip(dataset.files[split.test].astype(str).tolist(),
                                            dataset.patient_ids[split.test].astype(str).tolist())),
                     files=set(dataset.files.astype(str).tolist()))


def _split_key(config: dict) -> tuple:
    keys = ("data_source", "data_path", "task", "split", "val_fraction", "test_fraction", "train_fraction",
            "cv_folds", "cv_fold", "split_seed")
    return tuple(repr(test_setting(config, key)) for key in keys)


def common_test_set(configs: dict[str, dict], reference: str, progress: ProgressFn | None = None) -> CommonTestSet:
    """The reference run's test images whose patients no run trained or validated on, and
    which every run's dataset holds. Raises CommonSplitError when nothing is left."""
    if reference not in configs:
        raise CommonSplitError(f"the reference run {reference!r} is not among the runs being compared")
    splits, built = {}, {}
    for i, (label, config) in enumerate(configs.items()):
        if progress:
            progress(i, len(configs), f"Rebuilding the split of {label}")
        key = _split_key(config)  # runs differing only in image size or model share one split
        if key not in built:
            built[key] = run_split(config)
        splits[label] = built[key]
    ref = splits[reference]
    seen = set().union(*(s.seen_patients for s in splits.values()))
    kept, removed, missing = [], set(), 0
    for file in ref.test_files:
        patient = ref.test_patients[file]
        if patient in seen:
            removed.add(patient)
        elif all(file in s.files for s in splits.values()):
            kept.append(file)
        else:
            missing += 1
    result = CommonTestSet(reference=reference, files=kept,
                           patients=sorted({ref.test_patients[f] for f in kept}),
                           reference_images=len(ref.test_files),
                           reference_patients=len(set(ref.test_patients.values())),
                           removed_patients=sorted(removed),
                           removed_images=sum(ref.test_patients[f] in removed for f in ref.test_files),
                           missing_images=missing)
    if not kept:
        raise CommonSplitError("no image is left to score every run on: " + result.describe()
                               + " Pick another reference run, or compare runs that share a split seed.")
    return result


# ----------------------------------------------------------------------------- scoring

def score_run(run: Run, files: list[str], n_resamples: int = 500) -> dict:
    """One run's model on `files`, at the run's own image size and colour mode (argmax decisions)."""
    from core.ml.data_pipeline import choose_data_pipeline, predict_rows  # TensorFlow runs inside
    config = TrainConfig.from_dict(run.config())
    if not run.has_model():
        raise CommonSplitError(f"run {run.id} has no saved model to score")
    dataset, _ = load_data(config)
    index = {str(f): i for i, f in enumerate(dataset.files)}
    rows = np.array([index[f] for f in files])
    probabilities = predict_rows(load_model(run), dataset, rows, config.batch_size,
                                 choose_data_pipeline(config, dataset))
    labels, patients = dataset.labels[rows], dataset.patient_ids[rows]
    metrics = metrics_lib.classification_metrics(probabilities, labels, dataset.class_names)
    interval = intervals_lib.patient_bootstrap_ci(probabilities, labels, dataset.class_names, patients,
                                                n_resamples=n_resamples)
    return {"class_names": list(dataset.class_names), "metrics": metrics, "ci": interval,
            "images": len(rows), "patients": int(len(np.unique(patients)))}


def score_runs(runs: dict[str, Run], reference: str, progress: ProgressFn | None = None,
               n_resamples: int = 500) -> dict:
    """Score every run on the common test set built from `reference`'s test patients.

    Returns {"test_set": CommonTestSet, "scores": {label: score_run(...)}}.
    """
    configs = {label: run.config() for label, run in runs.items()}
    for label, run in runs.items():
        if not run.has_model():
            raise CommonSplitError(f"{label} has no saved model, so it cannot be scored")
    test_set = common_test_set(configs, reference, within(progress, 0.0, 0.3))
    scores = {}
    for i, (label, run) in enumerate(runs.items()):
        if progress:
            progress(0.3 + 0.7 * i / len(runs), 1.0, f"Scoring {label} on {len(test_set.files)} images")
        scores[label] = score_run(run, test_set.files, n_resamples)
    if progress:
        progress(1.0, 1.0, "Done")
    return {"test_set": test_set, "scores": scores}


def scores_table(scores: dict[str, dict]) -> list[dict]:
    """One row per run: accuracy (95% CI), macro-F1, AUC (95% CI), macro OvR AUC, n, recalls
    (a run without a class, e.g. binary next to 3-class, has no value for its recall)."""
    rows = []
    for label, score in scores.items():
        metrics, ci = score["metrics"], score["ci"]
        row = {"run": label, "accuracy": metrics["accuracy"], "accuracy 95% CI": _span(ci["accuracy"]),
               "macro-F1": metrics["macro_f1"], "AUC": metrics["auc"], "AUC 95% CI": _span(ci["auc"]),
               "macro OvR AUC": metrics["macro_ovr_auc"], "images": score["images"],
               "patients": score["patients"]}
        row.update({f"recall {name}": value for name, value in metrics["recall_per_class"].items()})
        rows.append(row)
    return rows


def _span(interval) -> str:
    return "—" if not interval else f"{interval[0]:.3f} – {interval[1]:.3f}"
