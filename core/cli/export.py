"""A run's model card and its model exported for serving, with a JSON summary.

    python -m core export runs/<run_id>               # model_card.md, saved_model/, model.tflite
    python -m core export runs/<run_id> --card-only   # model_card.md alone (no TensorFlow)

The summary gives the files and their sizes, and the largest difference between the exports'
probabilities and model.keras's on the first images of the run's test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import print_json
from core.data.datasets import DataError
from core.ml.model_card import write_model_card
from core.store.run_folder import Run

AGREEMENT_IMAGES = 8


def export_command(run_dir, card_only: bool = False) -> dict:
    """Export `run_dir` (unless `card_only`), then write its card; what was written, as a dict."""
    run = Run(Path(run_dir))
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    result = {"run_id": run.id}
    if not card_only:
        from core.ml import export
        result["exports"] = export.export_run(run)
        result["agreement"] = agreement(run)
    result["model_card"] = str(write_model_card(run))
    return result


def agreement(run: Run) -> dict:
    """How far the exports' probabilities are from model.keras's on a few test images."""
    from core.ml import export
    try:
        images = export.sample_test_images(run, AGREEMENT_IMAGES)
    except (DataError, OSError) as exc:
        return {"images": 0, "error": f"the run's test images could not be loaded: {exc}"}
    return export.export_agreement(run, images)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--card-only", action="store_true", help="write model_card.md only, no exports")
    args = parser.parse_args(argv)
    return print_json(lambda: export_command(args.run_dir, args.card_only),
                      (FileNotFoundError, RuntimeError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
