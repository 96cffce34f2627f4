"""Accuracy of the recommended recipes on the built-in set, measured on held-out patients.

Trains `core.settings.recipes.recipe(task)` through the job manager (the same path as the dashboard) and
prints test metrics with the wall-clock time. Targets (2-core CPU, within 5 minutes each):
binary AUC >= 0.99 and accuracy >= 0.96; 3-class macro-F1 >= 0.78.

    .venv/bin/python bench/accuracy.py [--task binary|subtype|both] [--seed 42]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings.recipes import recipe  # noqa: E402
from core.store.runs import RunStore  # noqa: E402
from core.workers.manager import JobManager  # noqa: E402

TARGETS = {"binary": {"auc": 0.99, "accuracy": 0.96}, "subtype": {"macro_f1": 0.78}}
BUDGET_S = 300


def run_recipe(manager: JobManager, task: str, seed: int) -> dict:
    config = recipe(task)
    config.seed = seed
    started = time.perf_counter()
    run_id = manager.submit(config)
    state = manager.wait(run_id)
    seconds = time.perf_counter() - started
    run = manager.store.get(run_id)
    if state != "done":
        raise RuntimeError(f"{task}: run ended {state}: {run.status().get('error')}")
    summary = run.summary()
    return {"task": task, "seconds": seconds, "test": summary["test"], "val": summary["val"],
            "split": summary["split"], "run_dir": str(run.path), "config": config}


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
    for key, target in TARGETS[task].items():
        print(f"target {key} >= {target}: {'met' if test[key] >= target else 'NOT met'} ({test[key]:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("binary", "subtype", "both"), default="both")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    manager = JobManager(RunStore(tempfile.mkdtemp(prefix="cxr-accuracy-")))
    for task in (("binary", "subtype") if args.task == "both" else (args.task,)):
        report(run_recipe(manager, task, args.seed))


if __name__ == "__main__":
    main()
