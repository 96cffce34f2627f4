"""External validation, intervals, referral and calibration of the recommended binary recipe.

There is no second hospital's data offline, so the "external" sets are built from the run's own
held-out test patients, read from the original 128 px JPEGs and written as a labelled folder:
  1. as they are: external evaluation must reproduce the internal test split's numbers exactly
     (same patients, same pixels: a check of the external path);
  2. as if from another scanner (simulated): lower contrast, a little blur, brighter and a shifted
     crop; how much the numbers drop, how many images the out-of-distribution check flags, and how
     far the set's brightness and contrast moved from the training images';
  3. images the run has seen: its training and validation patients re-saved as PNG at twice the
     size: the overlap check must find every one.
First, how the overlap check tells one picture from another: the distances between all the built-in
X-rays' thumbnails against the distances of re-saved, resized and re-exposed copies to their originals.
Prints each with 95% patient-bootstrap intervals, the referral curve at 90% / 80% coverage, the
temperature fitted on validation with ECE before/after, and the time each step took.

    .venv/bin/python bench/external_validation.py [--seed 42] [--quick]

--quick trains a 3-epoch seed CNN at 64 px instead of the recipe (the overlap figures do not depend on
the model).
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.datasets import load_dataset  # noqa: E402
from core.data.sources import BUILTIN_ZIP, patient_id  # noqa: E402
from core.ml import calibration as calibration_lib
from core.ml import curves as curves_lib
from core.ml import intervals as intervals_lib
from core.ml.external import (  # noqa: E402
    SAME_PICTURE_DISTANCE,
    evaluate_external,
    run_data,
    thumbnail_distances,
    thumbnails,
)
from core.settings.config import TrainConfig  # noqa: E402
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


def resaved(image: Image.Image) -> Image.Image:
    """The same picture as another copy of it: twice the size (saved as PNG by the caller)."""
    return image.resize((image.width * 2, image.height * 2), Image.BICUBIC)


def write_members(files, folder: Path, transform=None, suffix: str = ".jpeg") -> Path:
    """Members of the built-in zip as CLASS/name (names keep the patient ids), optionally transformed."""
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        for member in files:
            target = folder / Path(member).parent.name / (Path(member).stem + suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            if transform is None:  # the very bytes
                target.write_bytes(archive.read(member))
            else:
                transform(Image.open(io.BytesIO(archive.read(member)))).save(target, **({"quality": 90} if suffix == ".jpeg" else {}))
    return folder


def picture_distances(size: int = 64) -> None:
    """How far apart the thumbnails of different X-rays are, and how close re-saved copies stay."""
    started = time.perf_counter()
    dataset = load_dataset("builtin", image_size=size)
    thumbs = thumbnails(dataset.images)
    patients = np.asarray([patient_id(f) for f in dataset.files])
    closest_other, duplicates = np.inf, []
    for start in range(0, len(thumbs), 512):
        block = thumbnail_distances(thumbs[start:start + 512], thumbs)
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # not itself
        other_patient = patients[start:start + 512, None] != patients[None]
        closest_other = min(closest_other, float(block[other_patient].min()))
        duplicates += [float(d) for d in block[~other_patient & (block < SAME_PICTURE_DISTANCE)]]
    print(f"thumbnails of all {len(thumbs):,} built-in X-rays at {size} px against each other "
          f"({time.perf_counter() - started:.1f} s): two of different patients never closer than {closest_other:.3f}; "
          f"{len(duplicates) // 2} pairs of one patient's duplicate files at {min(duplicates, default=0):.2f}-"
          f"{max(duplicates, default=0):.2f}; the same-picture threshold is {SAME_PICTURE_DISTANCE}")
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        originals = [Image.open(io.BytesIO(archive.read(str(f)))).convert("L") for f in dataset.files[::45]]
    def at_size(image):
        return np.asarray(image.convert("L").resize((size, size), Image.BILINEAR))[None, ..., None]
    def jpeg(image):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=50)
        return Image.open(buffer)
    copies = {"JPEG quality 50": jpeg, "upscaled 2x": resaved,
              "contrast x1.2, brightness x1.1": lambda i: ImageEnhance.Brightness(ImageEnhance.Contrast(i)
                                                                                    .enhance(1.2)).enhance(1.1)}
    for title, make in copies.items():
        gaps = [float(thumbnail_distances(thumbnails(at_size(make(o))), thumbnails(at_size(o)))[0, 0])
                for o in originals]
        print(f"  {len(originals)} copies, {title}: distance to their original at most {max(gaps):.3f}")


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
    seen = result.get("seen") or {}
    print(f"  seen by the run: {seen.get('seen')} (the same picture as a training or validation image: "
          f"{seen.get('same_pictures')}; a patient id of theirs: {seen.get('same_patient_ids')})")
    internal = result["internal_test"]["intervals"]["intervals"]
    for key in SHOWN:
        print(f"  {key:<12} external {interval(result['intervals']['intervals'].get(key)):<26} "
              f"internal test {interval(internal.get(key))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="a 3-epoch seed CNN at 64 px instead of the recipe")
    args = parser.parse_args()
    picture_distances()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs")
        manager = JobManager(store)
        config = (TrainConfig(arch="seed_cnn", image_size=64, epochs=3, seed=args.seed) if args.quick
                  else recipe("binary"))
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
        boot = intervals_lib.bootstrap_intervals(test["probabilities"], test["labels"], test["class_names"],
                                           test["patient_ids"], run.summary().get("threshold"))
        print(f"1000 patient-bootstrap resamples of {boot['n_patients']} test patients: "
              f"{time.perf_counter() - started:.2f} s")

        curve = curves_lib.referral_curve(test["probabilities"], test["labels"], test["class_names"],
                                       run.summary().get("threshold"))
        by_coverage = dict(zip(curve["coverage"], curve["accuracy"]))
        print(f"referral: accuracy {by_coverage[1.0]:.3f} on all, {by_coverage[0.9]:.3f} on the surest 90%, "
              f"{by_coverage[0.8]:.3f} on the surest 80%")
        report = calibration_lib.temperature_report(val, test)
        print(f"temperature (fitted on validation): {report['temperature']:.2f}; test ECE "
              f"{report['test']['ece']['before']:.3f} -> {report['test']['ece']['after']:.3f}, test NLL "
              f"{report['test']['nll']['before']:.3f} -> {report['test']['nll']['after']:.3f}")

        dataset, split = run_data(run)
        seen_files = dataset.files[np.concatenate([split.train, split.val])]
        for title, files, transform, suffix in (
                ("held-out test patients, as they are", test["files"], None, ".jpeg"),
                ("the same patients, simulated other scanner", test["files"], other_scanner, ".jpeg"),
                ("training and validation patients, re-saved as PNG at twice the size", seen_files, resaved, ".png")):
            folder = write_members(files, Path(tmp) / title.split(",")[0].replace(" ", "_"), transform, suffix)
            started = time.perf_counter()
            result = evaluate_external(run, folder)
            print_result(title, result, time.perf_counter() - started)
            if transform is None:
                same = abs(result["metrics"]["accuracy"] - result["internal_test"]["metrics"]["accuracy"]) < 1e-9
                print(f"  agrees with the internal test split: {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
