"""Predict images with a trained run, one JSON line per image. Research tool, not for clinical use.

    python -m core predict runs/<run_id> chest.jpeg more_images/
    {"file": "chest.jpeg", "probabilities": {"NORMAL": 0.03, "PNEUMONIA": 0.97}, "predicted": "PNEUMONIA",
     "unusual": false}
    {"file": "house.jpg", "probabilities": {...}, "predicted": "PNEUMONIA", "unusual": true,
     "warning": "This image looks unlike the training X-rays, so the prediction is unreliable: ..."}
    {"file": "notes.jpg", "error": "not an image file Pillow can read (is it really a JPEG/PNG?)"}

"predicted" is decided as on the Diagnose page: the disease score ("disease_score", P(disease))
against the run's best-F1 threshold on validation (or --threshold) where the classes have a
disease-vs-normal view, the most likely class otherwise. Each image gets the Diagnose page's out-of-distribution check
(core.ml.diagnosis.Diagnoser / core.ml.ood); an unusual image also gets a warning on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CLINICAL_NOTE = "note: research tool, not for clinical use; predictions are not a medical diagnosis."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold on the disease score (default: the run's saved threshold)")
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be between 0 and 1, not {args.threshold}")
    from core.ml.diagnosis import Diagnoser
    from core.ml.inference import expand_inputs
    try:
        diagnoser = Diagnoser(args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(CLINICAL_NOTE, file=sys.stderr)
    if diagnoser.reference() is None:
        print(f"warning: {diagnoser.ood_error}", file=sys.stderr)
    failures = 0
    for path in expand_inputs(args.inputs):
        result = predict_path(diagnoser, path, args.threshold)
        failures += "error" in result
        if result.get("unusual"):
            print(f"warning: {path}: {result['warning']}", file=sys.stderr)
        print(json.dumps(result), flush=True)
    return 1 if failures else 0


def predict_path(diagnoser, path: Path, threshold: float | None = None) -> dict:
    """One JSON-ready result: probabilities, the predicted class and the unusual-input check."""
    if not path.is_file():
        return {"file": str(path), "error": "no such file" if not path.exists() else "not a file"}
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "error": f"cannot be read ({exc.strerror or exc})"}
    return result_line(diagnoser.diagnose(data, str(path), threshold))


def result_line(diagnosis) -> dict:
    if not diagnosis.ok:
        return {"file": diagnosis.file, "error": diagnosis.error}
    probabilities = diagnosis.probabilities
    line = {"file": diagnosis.file, "probabilities": {c: round(p, 6) for c, p in probabilities.items()},
            "predicted": diagnosis.predicted, "unusual": diagnosis.ood.unusual}
    if diagnosis.score is not None:
        line["disease_score"] = round(diagnosis.score, 6)
    if diagnosis.ood.unusual:
        line["warning"] = diagnosis.ood.message()
    return line


if __name__ == "__main__":
    sys.exit(main())
