"""Metrics of a finished run from its saved predictions, as JSON.

    python -m core evaluate runs/<run_id>                 # test split, at the run's own threshold
    python -m core evaluate runs/<run_id> --split val --threshold 0.4 --curves
    python -m core evaluate runs/<run_id> --argmax        # the most likely class decides

Thresholded numbers (accuracy, balanced accuracy, macro-F1, recalls) are decided as the run decides:
at the disease-score threshold chosen on its validation split, the same numbers as its summary, the
runs tables, Evaluate and its model card; "decided_at" in the JSON names the rule.
    python -m core evaluate runs/<run_id> --data other_xrays/   # external validation (any dataset format)

With --data the run's model predicts every image of another labelled dataset (same class folders),
and the JSON holds its metrics with 95% patient-bootstrap intervals, the share of images the
out-of-distribution check flags, and the run's own test split beside them; it is also saved in the
run folder as external/<name>.json. Research tool, not for clinical use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import print_json
from core.ml import metrics
from core.ml import curves as curves_lib
from core.ml.decisions import decision_rule
from core.store.run_folder import Run


RUN_THRESHOLD = "run"  # evaluate_run's default: the run's own threshold, chosen on validation


def evaluate_run(run_dir, split: str = "test", threshold: float | None | str = RUN_THRESHOLD,
                 curves: bool = False) -> dict:
    """Metrics of the run's saved `split` predictions, decided at `threshold`: the run's own by
    default, a number, or None for argmax."""
    run = Run(Path(run_dir))
    saved = run.predictions(split)
    if saved is None:
        raise FileNotFoundError(f"{run_dir} has no {split} predictions (state: {run.state()})")
    threshold = run.summary().get("threshold") if threshold == RUN_THRESHOLD else threshold
    args = (saved["probabilities"], saved["labels"], saved["class_names"])
    if curves:
        found = curves_lib.evaluate_predictions(*args, threshold=threshold)
        return {"run_id": run.id, "split": split, "decided_at": decision_rule(found["metrics"]["threshold"]), **found}
    best = metrics.f1_vs_threshold(*args)
    found = metrics.classification_metrics(*args, threshold=threshold)
    return {"run_id": run.id, "split": split, "decided_at": decision_rule(found["threshold"]), "metrics": found,
            "best_f1_threshold": best["best_threshold"] if best else None}


def evaluate_external_data(run_dir, data_path) -> dict:
    """External validation of a run on a labelled folder or zip (saved in the run folder too)."""
    run = Run(Path(run_dir))
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    from core.ml.external import evaluate_external  # TensorFlow runs inside
    return {"run_id": run.id, **evaluate_external(run, data_path)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--threshold", type=float,
                          help="decision threshold on the disease score (default: the run's own, chosen on validation)")
    decision.add_argument("--argmax", action="store_true", help="the most likely class decides, no threshold")
    parser.add_argument("--curves", action="store_true", help="include ROC, PR, F1-threshold, calibration")
    parser.add_argument("--data", metavar="FOLDER_OR_ZIP",
                        help="external validation on this labelled dataset: a folder of class folders, a .zip, an "
                             ".npz, a CSV of labels or a CIFAR tarball, with the run's classes")
    args = parser.parse_args(argv)
    if args.data:
        return print_json(lambda: evaluate_external_data(args.run_dir, args.data), (FileNotFoundError, ValueError))
    threshold = None if args.argmax else RUN_THRESHOLD if args.threshold is None else args.threshold
    return print_json(lambda: evaluate_run(args.run_dir, args.split, threshold, args.curves),
                      (FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
