"""Predict images with a trained run, one JSON line per image.

    python -m core.predict runs/<run_id> chest.jpeg more_images/
    {"file": "chest.jpeg", "probabilities": {"NORMAL": 0.03, "PNEUMONIA": 0.97}, "predicted": "PNEUMONIA"}
    {"file": "notes.jpg", "error": "not an image file Pillow can read (is it really a JPEG/PNG?)"}
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    args = parser.parse_args(argv)
    from core.inference import Predictor, expand_inputs
    try:
        predictor = Predictor(args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for path in expand_inputs(args.inputs):
        if not path.exists():
            result = {"file": str(path), "error": "no such file"}
        else:
            result = predictor.predict_file(path)
        failures += "error" in result
        print(json.dumps(result), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
