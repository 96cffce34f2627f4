"""Test-time augmentation: what averaging over core.ml.tta's views costs and changes, on the recipe.

Trains the binary recipe (core/settings/recipes.py; `--epochs` fewer than its 20 to keep this short)
or takes a finished run (`--run FOLDER`), then scores its validation split as the Evaluate page does
(tta.score_split: the run's model reloaded, every view predicted at the run's batch size) and prints
the cost (forward passes, seconds, against the plain prediction's) and the validation numbers without
and with TTA at the run's own threshold. Validation only: TTA is not tuned here, but nothing in this
project is judged on the test split before it is chosen.

    .venv/bin/python bench/tta.py [--epochs 10] [--run runs/<id>]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ml import metrics as metrics_lib  # noqa: E402
from core.ml import tta  # noqa: E402
from core.store.run_folder import Run  # noqa: E402
from core.store.runs import RunStore  # noqa: E402

SHOWN = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "log_loss", "brier")


def trained_recipe(folder: str, epochs: int) -> Run:
    from core.ml.training import execute_run
    from core.settings.recipes import recipe
    config = recipe("binary").with_overrides({"epochs": epochs})
    run = RunStore(folder).create(config.to_dict(), queued=False)
    began = time.perf_counter()
    execute_run(run, config)
    if run.state() != "done":
        raise RuntimeError(f"the recipe run ended {run.state()}: {run.status().get('error')}")
    print(f"trained the recipe for {epochs} epochs in {time.perf_counter() - began:.0f} s", flush=True)
    return run


def compare(run: Run) -> None:
    plain = run.predictions("val")
    threshold = run.summary().get("threshold")
    saved = tta.score_split(run, "val")
    n = int(saved["images"])
    print(f"\n{tta.views_sentence(saved['views'])}; {n} validation images at "
          f"{run.config()['image_size']} px, batch {run.config()['batch_size']}")
    print(f"cost: {saved['passes']} forward passes per image; {saved['seconds']:.2f} s with TTA against "
          f"{saved['plain_seconds']:.2f} s plain (x{saved['seconds'] / saved['plain_seconds']:.1f}), "
          f"{1000 * saved['seconds'] / n:.2f} ms per image")
    names = plain["class_names"]
    before = metrics_lib.classification_metrics(plain["probabilities"], plain["labels"], names, threshold)
    after = metrics_lib.classification_metrics(saved["probabilities"], plain["labels"], names, threshold)
    print(f"validation, both at the run's threshold {threshold:.2f}:")
    for key in SHOWN:
        print(f"  {key:18} plain {before[key]:.4f}   with TTA {after[key]:.4f}   ({after[key] - before[key]:+.4f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--run", help="a finished run's folder instead of training the recipe")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f} (above 0.5: the cores are shared)",
          flush=True)
    if args.run:
        compare(Run(Path(args.run)))
    else:
        with tempfile.TemporaryDirectory(prefix="cxr-tta-") as folder:
            compare(trained_recipe(folder, args.epochs))
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
