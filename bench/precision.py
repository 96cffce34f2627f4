"""Precision: the recipe model trained and run under each Keras dtype policy, side by side.

Speed first, interleaved: the recipe model (core/settings/recipes.py: deep BatchNorm CNN, width
0.75, 96 px, its augmentation) built once per policy in one process, then timed in turns, a few
training steps and predictions of each at a time, the order alternating, so that other work on a
shared machine slows every policy alike; per-round ratios say how steady that was.

Then accuracy: each policy trains the binary recipe for a few epochs through `execute_run` with its
`precision` setting, in a process of its own. Same seed, same data, same split: on CPU, op
determinism makes two runs of one policy identical, so any difference is the precision's. Reported:
the runs' own training images/s (epochs after the first), inference images/s of the reloaded
model.keras on the validation images, and validation numbers only (never the test split: this
measurement may change a default).

    .venv/bin/python bench/precision.py [--epochs 5] [--rounds 1] [--speed-rounds 10]
                                        [--policies float32 mixed_bfloat16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings.config import PRECISIONS  # noqa: E402

INFERENCE_BATCH = 64
INFERENCE_REPEATS = 3


def measure_one(policy: str, epochs: int, task: str) -> dict:
    """Train the recipe under `policy` in this process; its speeds and validation numbers."""
    import numpy as np

    from core.ml.inference import load_model
    from core.ml.precision import bfloat16_hardware
    from core.ml.data_pipeline import load_data
    from core.ml.training import execute_run
    from core.settings.recipes import recipe
    from core.store.runs import RunStore
    config = recipe(task).with_overrides({"epochs": epochs, "precision": policy})
    with tempfile.TemporaryDirectory(prefix="cxr-precision-") as folder:
        run = RunStore(folder).create(config.to_dict(), queued=False)
        execute_run(run, config)
        if run.state() != "done":
            raise RuntimeError(f"{policy}: the run ended {run.state()}: {run.status().get('error')}")
        history, summary = run.history(), run.summary()
        dataset, split = load_data(config)
        images = np.asarray(dataset.images[split.val], dtype=np.float32)
        model = load_model(run)
        model.predict(images[:INFERENCE_BATCH], batch_size=INFERENCE_BATCH, verbose=0)  # traces the graph
        seconds = []
        for _ in range(INFERENCE_REPEATS):
            began = time.perf_counter()
            model.predict(images, batch_size=INFERENCE_BATCH, verbose=0)
            seconds.append(time.perf_counter() - began)
    last = history[-1]
    return {"policy": summary["resources"]["precision"], "bf16_hardware": bfloat16_hardware(),
            "train_images_per_sec": statistics.median(row["images_per_sec"] for row in history[1:]),
            "epoch_seconds": [row["seconds"] for row in history],
            "inference_images_per_sec": len(images) / statistics.median(seconds),
            "val_loss": last["val_loss"], "val_accuracy_argmax": last["val_accuracy"], "val_auc": last.get("val_auc"),
            "val_macro_f1": last.get("val_macro_f1"), "val_threshold": summary.get("threshold"),
            "val_accuracy_at_threshold": (summary.get("val") or {}).get("accuracy"),
            "n_train": len(split.train), "n_val": len(images)}


def interleaved_speed(policies: list[str], rounds: int, steps: int, task: str) -> dict[str, dict[str, list]]:
    """Training and inference images/s of the recipe model under each policy, both models in this
    process and timed in turns (`steps` training steps, then as many 64-image predictions, per policy
    and round, the order alternating), so that load from other work on a shared machine falls on all
    alike. Per policy: the list of per-round training and inference images/s."""
    import keras
    import numpy as np

    from core.ml import models
    from core.ml.data_pipeline import load_data
    from core.ml.training import _compile, build_augmentation, configure_devices
    from core.settings.recipes import recipe
    config = recipe(task)
    dataset, split = load_data(config)
    n_classes = len(dataset.class_names)
    rows = split.train[:config.batch_size * steps]
    images = np.asarray(dataset.images[rows], dtype=np.float32)
    targets = keras.utils.to_categorical(dataset.labels[rows], n_classes)
    probe = np.asarray(dataset.images[split.val[:INFERENCE_BATCH]], dtype=np.float32)
    built = {}
    for policy in policies:
        configure_devices(0, policy)  # layers keep the policy they were built under
        keras.utils.set_random_seed(config.seed)
        model = models.build_model(config.arch, config.image_size, config.channels, n_classes, config.arch_params,
                                   augmentation=build_augmentation(config.augmentation, config.seed))
        _compile(model, config, config.learning_rate)
        model.train_on_batch(images[:config.batch_size], targets[:config.batch_size])  # traces, untimed
        model.predict_on_batch(probe)
        built[policy] = model
    speeds = {policy: {"train": [], "inference": []} for policy in policies}
    for round_ in range(rounds):
        for policy in (policies if round_ % 2 == 0 else policies[::-1]):
            model = built[policy]
            began = time.perf_counter()
            for step in range(steps):
                batch = slice(step * config.batch_size, (step + 1) * config.batch_size)
                model.train_on_batch(images[batch], targets[batch])
            speeds[policy]["train"].append(len(images) / (time.perf_counter() - began))
            began = time.perf_counter()
            for _ in range(steps):
                model.predict_on_batch(probe)
            speeds[policy]["inference"].append(steps * len(probe) / (time.perf_counter() - began))
    return speeds


def report_interleaved(speeds: dict, rounds: int, steps: int) -> None:
    policies = list(speeds)
    print(f"\ninterleaved in one process ({rounds} rounds of {steps} training steps of 32 images and {steps} "
          f"predictions of {INFERENCE_BATCH} per policy, turns alternating):")
    for policy in policies:
        print(f"  {policy:16} train {statistics.median(speeds[policy]['train']):7.1f} img/s, inference "
              f"{statistics.median(speeds[policy]['inference']):7.1f} img/s (medians)")
    base = policies[0]
    for policy in policies[1:]:
        for kind in ("train", "inference"):
            ratios = [a / b for a, b in zip(speeds[policy][kind], speeds[base][kind])]
            print(f"  {policy} / {base} {kind}: median of per-round ratios x{statistics.median(ratios):.2f} "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})")


def measure_in_process(policy: str, epochs: int, task: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", policy, "--epochs", str(epochs), "--task", task],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{policy} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict]], args) -> None:
    first = next(iter(results.values()))[0]
    print(f"\nrecipe ({args.task}) for {args.epochs} epochs, {first['n_train']} training and {first['n_val']} "
          f"validation images, {args.rounds} round(s); bfloat16 hardware on this CPU: {first['bf16_hardware']}")
    print(f"{'policy':16} {'train img/s':>12} {'infer img/s':>12} {'val loss':>9} {'acc argmax':>10} {'val AUC':>8} "
          f"{'macro-F1':>9} {'acc @ own threshold':>20}")
    for policy, rows in results.items():
        train = statistics.median(r["train_images_per_sec"] for r in rows)
        infer = statistics.median(r["inference_images_per_sec"] for r in rows)
        row = rows[0]
        at_threshold = (f"{row['val_accuracy_at_threshold']:.4f} @ {row['val_threshold']:.2f}"
                        if row.get("val_threshold") is not None else "—")
        print(f"{policy:16} {train:12.1f} {infer:12.1f} {row['val_loss']:9.4f} {row['val_accuracy_argmax']:10.4f} "
              f"{row['val_auc'] or float('nan'):8.4f} {row['val_macro_f1'] or float('nan'):9.4f} {at_threshold:>20}")
    base = statistics.median(r["train_images_per_sec"] for r in results[args.policies[0]])
    base_infer = statistics.median(r["inference_images_per_sec"] for r in results[args.policies[0]])
    for policy in args.policies[1:]:
        rows = results[policy]
        print(f"{policy} / {args.policies[0]}: training x{statistics.median(r['train_images_per_sec'] for r in rows) / base:.2f}, "
              f"inference x{statistics.median(r['inference_images_per_sec'] for r in rows) / base_infer:.2f}")
    print("per round (train img/s, inference img/s): " + "; ".join(
        f"{policy} " + ", ".join(f"{r['train_images_per_sec']:.0f}/{r['inference_images_per_sec']:.0f}" for r in rows)
        for policy, rows in results.items()))
    print("validation loss, accuracy at argmax, AUC and macro-F1 of the last epoch (the run's epoch metrics), and "
          "validation accuracy at the threshold each run chose on validation (optimistic, alike for both); never "
          "the test split")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1, help="full training runs per policy (for accuracy)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--speed-rounds", type=int, default=10)
    parser.add_argument("--speed-steps", type=int, default=15)
    parser.add_argument("--task", default="binary")
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=[p for p in PRECISIONS if p != "auto"])
    parser.add_argument("--one", choices=[p for p in PRECISIONS if p != "auto"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.epochs, args.task)))
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, with tracing, is left out)")
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f} (above 0.5: the cores are shared)",
          flush=True)
    speeds = interleaved_speed(args.policies, args.speed_rounds, args.speed_steps, args.task)
    report_interleaved(speeds, args.speed_rounds, args.speed_steps)
    import keras
    keras.mixed_precision.set_global_policy("float32")
    results = {policy: [] for policy in args.policies}  # --rounds 0: speed only
    for round_ in range(args.rounds):
        order = args.policies if round_ % 2 == 0 else list(reversed(args.policies))
        for policy in order:
            results[policy].append(measure_in_process(policy, args.epochs, args.task))
            row = results[policy][-1]
            print(f"round {round_ + 1} {policy}: train {row['train_images_per_sec']:.1f} img/s, inference "
                  f"{row['inference_images_per_sec']:.1f} img/s, val acc {row['val_accuracy_argmax']:.4f}, "
                  f"epochs {row['epoch_seconds']} s", flush=True)
    if args.rounds:
        report(results, args)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
