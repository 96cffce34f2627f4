"""Accuracy of the recommended recipes on the built-in set, measured on held-out patients, twice.

The built-in X-rays are first parted by patient: a fixed 12% of patients (chosen by a hash of the
patient id, the same on every machine and every day) is the **bench holdout**, never trained,
validated or tuned on, by the recipe's authors included (`--holdout-share 0` trains on everything, as
before 2026-12-05). `core.settings.recipes.recipe(task)` trains on the rest, a zip of it, through the
job manager (the dashboard's path), and is scored on
  1. its own test split: the 15% of the remaining patients its patient-grouped split held out;
  2. the bench holdout, through external validation (core.ml.external: the Evaluate page's path),
     with 95% patient-bootstrap intervals.
Goals (issue 24; 2-core CPU, within 5 minutes each): binary accuracy >= 0.975 and AUC >= 0.993;
3-class macro-F1 >= 0.83. Thresholded metrics are at the run's own threshold, chosen on validation.

`--tta` scores each run again over the views of Evaluate's test-time augmentation (core.ml.tta), at
the run's threshold, on both sets, with its cost.
`--ensemble N` trains N members (seeds seed, seed+1, ...; one split) and scores their average
(core.ml.ensemble: the Evaluate page's ensemble) on both sets, at the threshold chosen on the
members' averaged validation probabilities; its wall time is the members' together.

    .venv/bin/python bench/accuracy.py [--task binary|subtype|both] [--seed 42] [--holdout-share 0.12]
                                       [--set image_size=128 ...] [--ensemble 2] [--tta]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.sources import BUILTIN_ZIP, patient_id  # noqa: E402
from core.ml import ensemble as ensemble_lib  # noqa: E402
from core.ml.external import evaluate_external, scored, source_of  # noqa: E402
from core.settings.recipes import recipe  # noqa: E402
from core.store.runs import RunStore  # noqa: E402
from core.workers.manager import JobManager  # noqa: E402

TARGETS = {"binary": {"accuracy": 0.975, "auc": 0.993}, "subtype": {"macro_f1": 0.83}}
BUDGET_S = 300


def in_holdout(member: str, share: float) -> bool:
    """Whether the image's patient is in the bench holdout: a hash of the patient id, not a random draw."""
    digest = hashlib.sha256(patient_id(Path(member).name).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2 ** 32 < share


def part_by_patient(folder: Path, share: float) -> tuple[Path, Path]:
    """(training zip, holdout zip): the built-in zip's images parted by patient, layout unchanged."""
    pool, holdout = folder / "chest_xray_pool.zip", folder / "chest_xray_holdout.zip"
    with zipfile.ZipFile(BUILTIN_ZIP) as source, zipfile.ZipFile(pool, "w") as rest, \
            zipfile.ZipFile(holdout, "w") as kept:
        for info in source.infolist():
            if not info.is_dir():
                (kept if in_holdout(info.filename, share) else rest).writestr(info, source.read(info))
    return pool, holdout


def run_recipe(manager: JobManager, task: str, seed: int, data: Path | None, overrides: dict | None = None) -> dict:
    config = recipe(task).with_overrides(overrides or {})
    config.seed = seed
    if data is not None:
        config = config.with_overrides({"data_source": "zip", "data_path": str(data)})
    started = time.perf_counter()
    run_id = manager.submit(config)
    state = manager.wait(run_id)
    seconds = time.perf_counter() - started
    run = manager.store.get(run_id)
    if state != "done":
        raise RuntimeError(f"{task}: run ended {state}: {run.status().get('error')}")
    summary = run.summary()
    return {"task": task, "seconds": seconds, "test": summary["test"], "val": summary["val"],
            "split": summary["split"], "run_dir": str(run.path), "config": config, "run": run,
            "threshold": summary.get("threshold")}


def score_holdout(result: dict, holdout: Path) -> dict:
    external = evaluate_external(result["run"], holdout)
    return {"metrics": external["metrics"], "intervals": external["intervals"]["intervals"],
            "n_images": external["n_images"], "n_patients": external["n_patients"], "seen": external["seen"]}


def holdout_dataset(run, holdout: Path):
    """The holdout images as the run's model reads them (its task, size and channels)."""
    from core.data import datasets as data_lib
    from core.settings.config import TrainConfig
    config = TrainConfig.from_dict(run.config())
    return data_lib.load_dataset(*source_of(holdout), config.task, config.image_size, config.channels)


def holdout_probabilities(run, holdout: Path):
    """The run's model on the holdout images: (probabilities, the holdout dataset)."""
    from core.ml.inference import Predictor
    dataset = holdout_dataset(run, holdout)
    model = Predictor(run.path).model
    return model.predict(dataset.images, batch_size=int(run.config()["batch_size"]), verbose=0), dataset


def report_ensemble(task: str, members: list[dict], holdout: Path | None) -> None:
    ensemble = ensemble_lib.average([member["run"] for member in members], "test")
    test, seconds = ensemble.metrics(), sum(member["seconds"] for member in members)
    print(f"\n== {task}: ensemble of {len(members)} (seeds {', '.join(str(m['config'].seed) for m in members)}, "
          f"one split), threshold {f'{ensemble.threshold:.2f}' if ensemble.threshold is not None else 'argmax'} "
          "(chosen on the averaged validation probabilities)")
    print(f"wall time       : {seconds:.0f} s, the members' together (budget {BUDGET_S} s: "
          f"{'ok' if seconds <= BUDGET_S else 'OVER'})")
    print_test(test)
    found = None
    if holdout is not None:
        predicted = [holdout_probabilities(member["run"], holdout) for member in members]
        dataset = predicted[0][1]
        averaged = sum(p for p, _ in predicted) / len(predicted)
        found = score_and_print_holdout(averaged, dataset, ensemble.class_names, ensemble.threshold)
    print_goals(task, test, found)


def report_tta(result: dict, holdout: Path | None) -> None:
    """The run scored again over core.ml.tta's views (Evaluate's test-time augmentation), at the run's own
    threshold as Evaluate applies it: the test split, the holdout, and what it cost."""
    from core.ml import tta
    from core.ml.inference import Predictor
    run, task, threshold = result["run"], result["task"], result["threshold"]
    began = time.perf_counter()
    on_test = tta.score_split(run, "test")
    saved = run.predictions("test")
    test = scored(on_test["probabilities"], saved["labels"], saved["class_names"], saved["patient_ids"], threshold)
    print(f"\n== {task}: test-time augmentation over {tta.views_sentence(on_test['views'])}, at the run's "
          "threshold")
    print(f"test split      : {on_test['passes']} forward passes per image, {on_test['seconds']:.1f} s for "
          f"{saved['labels'].shape[0]} images (plain {on_test['plain_seconds']:.1f} s)")
    print_test(test["metrics"], plain=result["test"])
    found = None
    if holdout is not None:
        dataset = holdout_dataset(run, holdout)
        predict = tta.keras_predict(Predictor(run.path).model, int(result["config"].batch_size))
        averaged = tta.predict_views(predict, dataset.images).probabilities
        found = score_and_print_holdout(averaged, dataset, saved["class_names"], threshold)
    print(f"wall time       : {result['seconds']:.0f} s training + {time.perf_counter() - began:.0f} s of TTA "
          "scoring (both sets)")
    print_goals(task, test["metrics"], found)


def print_test(test: dict, plain: dict | None = None) -> None:
    """The test split's headline numbers, beside the plain run's when these are averaged predictions."""
    for key in ("accuracy", "auc", "macro_f1"):
        print(f"test {key:<11}: {test[key]:.4f}" + (f" (plain {plain[key]:.4f})" if plain else ""))


def score_and_print_holdout(probabilities, dataset, class_names, threshold) -> dict:
    """Averaged holdout probabilities (an ensemble's, TTA's) scored as external validation scores them."""
    found = scored(probabilities, dataset.labels, class_names, dataset.patient_ids, threshold)
    found = {"metrics": found["metrics"], "intervals": found["intervals"]["intervals"]}
    print_holdout(found)
    return found


def print_holdout(holdout: dict) -> None:
    """The holdout's headline numbers with their 95% patient-bootstrap intervals."""
    for key in ("accuracy", "auc", "macro_f1"):
        low_high = holdout["intervals"].get(key) or {}
        span = f" (95% CI {low_high['low']:.4f}-{low_high['high']:.4f})" if low_high.get("low") is not None else ""
        print(f"  holdout {key:<8}: {holdout['metrics'][key]:.4f}{span}")


def print_goals(task: str, test: dict, holdout: dict | None) -> None:
    """Each goal of issue 24, met or not, on the test split and on the holdout."""
    for key, target in TARGETS[task].items():
        on_holdout = (f"; bench holdout {'met' if holdout['metrics'][key] >= target else 'NOT met'} "
                      f"({holdout['metrics'][key]:.4f})" if holdout else "")
        print(f"goal {key} >= {target}: test split {'met' if test[key] >= target else 'NOT met'} "
              f"({test[key]:.4f}){on_holdout}")


def report(result: dict) -> None:
    test, task = result["test"], result["task"]
    config = result["config"]
    print(f"\n== {task}: {config.arch} {config.arch_params} {config.image_size}px, {config.epochs} epochs, {config.schedule} "
          f"lr {config.learning_rate}, seed {config.seed}")
    print(f"wall time       : {result['seconds']:.0f} s (budget {BUDGET_S} s: "
          f"{'ok' if result['seconds'] <= BUDGET_S else 'OVER'})")
    print(f"test patients   : {result['split']['patients']['test']} ({test['n']} images, no overlap with "
          f"train/val: {not any(result['split']['overlap'].values())})")
    print(f"test accuracy   : {test['accuracy']:.4f}")
    print(f"test macro-F1   : {test['macro_f1']:.4f}")
    print(f"test AUC        : {test['auc']:.4f}" + (" (pneumonia vs normal)" if task == "subtype" else ""))
    if task == "subtype":
        print(f"test macro OvR AUC: {test['macro_ovr_auc']:.4f}")
    for name, values in test["per_class"].items():
        print(f"  recall {name:<10}: {values['recall']:.4f}   precision {values['precision']:.4f}")
    threshold = result.get("threshold")
    print(f"threshold       : {f'{threshold:.2f}' if threshold is not None else 'argmax'} (chosen on validation)")
    holdout = result.get("holdout")
    if holdout:
        print(f"bench holdout   : {holdout['n_patients']} patients, {holdout['n_images']} images, never tuned on "
              f"(images the run has seen: {holdout['seen']['seen'] if holdout['seen'] else 'not checked'})")
        print_holdout(holdout)
    print_goals(task, test, holdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("binary", "subtype", "both"), default="both")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-share", type=float, default=0.12,
                        help="share of patients kept out of everything (0: train on the whole built-in set)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="try a variant of the recipe, e.g. --set image_size=128 epochs=25")
    parser.add_argument("--ensemble", type=int, default=1, metavar="N",
                        help="train N members on one split and score their average too")
    parser.add_argument("--tta", action="store_true",
                        help="score each run with test-time augmentation too (Evaluate's views)")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    folder = Path(tempfile.mkdtemp(prefix="cxr-accuracy-"))
    pool, holdout = part_by_patient(folder, args.holdout_share) if args.holdout_share > 0 else (None, None)
    manager = JobManager(RunStore(folder / "runs"))
    try:
        for task in (("binary", "subtype") if args.task == "both" else (args.task,)):
            members = []
            for seed in range(args.seed, args.seed + args.ensemble):
                one_split = {"split_seed": args.seed} if args.ensemble > 1 else {}
                result = run_recipe(manager, task, seed, pool, {**overrides, **one_split})
                if holdout is not None:
                    result["holdout"] = score_holdout(result, holdout)
                report(result)
                if args.tta:
                    report_tta(result, holdout)
                members.append(result)
            if args.ensemble > 1:
                report_ensemble(task, members, holdout)
    finally:
        manager.shutdown()
    print(f"\nruns (with their predictions) and the parted zips are kept in {folder}: delete it when done")


if __name__ == "__main__":
    main()
