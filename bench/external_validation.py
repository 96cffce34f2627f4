"""External validation, intervals, referral and calibration of the recommended binary recipe.

There is no second hospital's data offline, so the "external" sets are built from the run's own
held-out test patients, read from the original 128 px JPEGs and written as a labelled folder:
  1. as they are: external evaluation must reproduce the internal test split's numbers exactly
     (same patients, same pixels: a check of the external path);
  2. as if from another scanner (simulated): lower contrast, a little blur, brighter and a shifted
     crop; how much the numbers drop, how many images the out-of-distribution check flags, and how
     far the set's brightness and contrast moved from the training images'.
Prints each with 95% patient-bootstrap intervals, the referral curve at 90% / 80% coverage, the
temperature fitted on validation with ECE before/after, and the time each step took.

    .venv/bin/python bench/external_validation.py [--seed 42]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.datasets import BUILTIN_ZIP  # noqa: E402
from core.ml import metrics  # noqa: E402
from core.ml.external import evaluate_external  # noqa: E402
from core.settings.recipes import recipe  # noqa: E402
from core.store.runs import RunStore  # noqa: E402
from core.workers.manager import JobManager  # noqa: E402

SHOWN = ("accuracy", "auc", "sensitivity", "specificity", "macro_f1")


def other_scanner(image: Image.Image) -> Image.Image:
    """A simulated acquisition shift: flatter contrast, softer detail, brighter, framed differently."""
    shifted = ImageEnhance.Contrast(image).enhance(0.6).filter(ImageFilter.GaussianBlur(1.2))
    shifted = ImageEnhance.Brightness(shifted).enhance(1.25)
    w, h = shifted.size
    return shifted.crop((6, 10, w, h)).resize((w, h))


def write_test_patients(files, folder: Path, transform=None) -> Path:
    """The test split's original JPEGs as CLASS/name.jpeg (names keep the patient ids)."""
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        for member in files:
            target = folder / Path(member).parent.name / Path(member).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if transform is None:  # the very bytes: the same pixels as the internal test split
                target.write_bytes(archive.read(member))
            else:
                transform(Image.open(io.BytesIO(archive.read(member)))).save(target, "JPEG", quality=90)
    return folder


def interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    if entry.get("low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def print_result(title: str, result: dict, seconds: float) -> None:
    print(f"\n== {title}: {result['n_images']} images of {result['n_patients']} patients "
          f"(evaluated in {seconds:.1f} s; out-of-distribution: {result['ood_rate']:.1%})")
    for name, values in (result.get("shift") or {}).items():
        print(f"  {name:<12} median {values['external_median']:.0f} vs {values['training_median']:.0f} in training "
              f"(percentile {values['median_percentile']:.0f} of the training images); "
              f"{values['outside_share']:.0%} beyond their 1st-99th percentile")
    internal = result["internal_test"]["intervals"]["intervals"]
    for key in SHOWN:
        print(f"  {key:<12} external {interval(result['intervals']['intervals'].get(key)):<26} "
              f"internal test {interval(internal.get(key))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs")
        manager = JobManager(store)
        config = recipe("binary")
        config.seed = args.seed
        started = time.perf_counter()
        run = store.get(manager.submit(config))
        if manager.wait(run.id) != "done":
            print(f"training failed: {run.status().get('error')}")
            return 1
        print(f"trained {config.arch} {config.image_size}px, {config.epochs} epochs in "
              f"{time.perf_counter() - started:.0f} s")
        manager.shutdown()
        test, val = run.predictions("test"), run.predictions("val")

        started = time.perf_counter()
        boot = metrics.bootstrap_intervals(test["probabilities"], test["labels"], test["class_names"],
                                           test["patient_ids"], run.summary().get("threshold"))
        print(f"1000 patient-bootstrap resamples of {boot['n_patients']} test patients: "
              f"{time.perf_counter() - started:.2f} s")

        curve = metrics.referral_curve(test["probabilities"], test["labels"], test["class_names"],
                                       run.summary().get("threshold"))
        by_coverage = dict(zip(curve["coverage"], curve["accuracy"]))
        print(f"referral: accuracy {by_coverage[1.0]:.3f} on all, {by_coverage[0.9]:.3f} on the surest 90%, "
              f"{by_coverage[0.8]:.3f} on the surest 80%")
        report = metrics.temperature_report(val, test)
        print(f"temperature (fitted on validation): {report['temperature']:.2f}; test ECE "
              f"{report['test']['ece']['before']:.3f} -> {report['test']['ece']['after']:.3f}, test NLL "
              f"{report['test']['nll']['before']:.3f} -> {report['test']['nll']['after']:.3f}")

        for title, transform in (("held-out test patients, as they are", None),
                                 ("the same patients, simulated other scanner", other_scanner)):
            folder = write_test_patients(test["files"], Path(tmp) / title.split(",")[0].replace(" ", "_")
                                         / ("shifted" if transform else "same"), transform)
            started = time.perf_counter()
            result = evaluate_external(run, folder)
            print_result(title, result, time.perf_counter() - started)
            if transform is None:
                same = abs(result["metrics"]["accuracy"] - result["internal_test"]["metrics"]["accuracy"]) < 1e-9
                print(f"  agrees with the internal test split: {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
