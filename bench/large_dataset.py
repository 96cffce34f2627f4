"""Datasets larger than memory: a synthetic chest-layout folder (100,000 images at 224 px by default)
loaded into the memory-mapped disk cache with progress, then

(a) the peak memory (ru_maxrss, through os.wait4) of a training process streaming it from that cache
    (data_pipeline "disk"; a small train fraction and the smallest validation and test fractions keep
    the time bounded, while the cache holds every image): target <= 3 GB;
(b) images/s of the disk pipeline against the in-memory one on a set that fits, measured in training
    processes of their own, in alternating rounds (which goes first alternates): target ratio >= 0.9.

The folders and the dataset cache are kept under --folder and reused by the next run.

    .venv/bin/python bench/large_dataset.py [--images 100000] [--size 224] [--format png]
        [--folder /tmp/cxr-large-dataset] [--train-fraction 0.05] [--fit-images 1000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from core.settings.config import TrainConfig  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
TARGET_PEAK_GB = 3.0
TARGET_RATIO = 0.9
WRITE_CHUNK = 500


# ----------------------------------------------------------------------------- the synthetic folder

def image_path(root: Path, index: int, fmt: str) -> Path:
    """Kermany-style names, one patient per image: NORMAL/IM-xxxxx-0001, PNEUMONIA/personN_{bacteria,virus}_N."""
    if index % 2 == 0:
        return root / "NORMAL" / f"IM-{index:06d}-0001.{fmt}"
    kind = "bacteria" if index % 4 == 1 else "virus"
    return root / "PNEUMONIA" / f"person{index}_{kind}_{index}.{fmt}"


def write_images(args: tuple) -> int:
    """Write images [start, stop): a soft gradient with noise, brighter for pneumonia (learnable)."""
    from PIL import Image
    root, start, stop, size, fmt = args
    rng = np.random.default_rng(start)
    ramp = np.linspace(0, 60, size, dtype=np.float32)
    for index in range(start, stop):
        base = 150 if index % 2 else 70
        pixels = base + ramp[None, :] * (index % 5) / 4 + rng.normal(0, 12, (size, size))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
        path = image_path(root, index, fmt)
        if fmt == "png":
            image.save(path, "PNG", compress_level=1)
        else:
            image.save(path, "JPEG", quality=90)
    return stop - start


def synthetic_folder(root: Path, n_images: int, size: int, fmt: str) -> Path:
    """The folder of `n_images`, written once (a marker names what it holds) and reused."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{n_images} {size} {fmt}":
        print(f"reusing {n_images:,} images in {root}")
        return root
    for folder in ("NORMAL", "PNEUMONIA"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    started, done = time.perf_counter(), 0
    chunks = [(root, s, min(s + WRITE_CHUNK, n_images), size, fmt) for s in range(0, n_images, WRITE_CHUNK)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for written in pool.map(write_images, chunks):
            done += written
            print(f"\rwriting images: {done:,} / {n_images:,}", end="", flush=True)
    marker.write_text(f"{n_images} {size} {fmt}")
    print(f"\nwrote {n_images:,} images to {root} in {time.perf_counter() - started:.0f} s")
    return root


# ----------------------------------------------------------------------------- loading

def load_with_progress(root: Path, size: int):
    from core.data.datasets import load_dataset

    def progress(done, total, message):
        print(f"\r{message}        ", end="", flush=True)

    started = time.perf_counter()
    dataset = load_dataset("folder", root, image_size=size, channels=1, progress=progress)
    origin = "from the cache" if dataset.report.from_cache else "decoded"
    print(f"\n{len(dataset):,} images {origin} in {time.perf_counter() - started:.1f} s; cache "
          f"{dataset.image_file} ({dataset.images.nbytes / 2**30:.2f} GiB)")
    return dataset


# ----------------------------------------------------------------------------- training processes

def train_in_child(config: TrainConfig, runs_dir: Path) -> dict:
    """Train `config` in a fresh process; its summary's resources plus its peak RSS from os.wait4."""
    child = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config.to_dict()), str(runs_dir)],
                             cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the training process failed: {output[-2000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "peak_rss_gb": usage.ru_maxrss * 1024 / 2**30}


def child_main(config_json: str, runs_dir: str) -> None:
    from core.ml.training import execute_run
    from core.store.runs import RunStore
    config = TrainConfig.from_dict(json.loads(config_json))
    run = RunStore(runs_dir).create(config.to_dict(), name=config.name)
    summary = execute_run(run, config)
    if run.state() != "done":
        raise SystemExit(run.status().get("error"))
    history = [row["images_per_sec"] for row in run.history() if row.get("images_per_sec")]
    print(json.dumps({"images_per_sec": history, "data_pipeline": summary["data_pipeline"],
                      "seconds": summary["seconds"], "val_accuracy": summary["val"]["accuracy"]}))


def config_for(root: Path, size: int, pipeline: str, **overrides) -> TrainConfig:
    return TrainConfig(**{"name": f"bench-{pipeline}", "arch": "seed_cnn", "data_source": "folder",
                          "data_path": str(root), "image_size": size, "epochs": 1, "batch_size": 32,
                          "data_pipeline": pipeline, **overrides})


# ----------------------------------------------------------------------------- main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/cxr-large-dataset"))
    parser.add_argument("--train-fraction", type=float, default=0.05)
    parser.add_argument("--fit-images", type=int, default=1000, help="images of the set that fits, for (b)")
    parser.add_argument("--fit-epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="0: only (a)")
    parser.add_argument("--skip-peak", action="store_true", help="only measure (b)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CXR_CACHE_DIR", str(args.folder / "cache"))
    print(f"machine: {os.cpu_count()} CPU cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM; folder {args.folder}")

    big = synthetic_folder(args.folder / f"images-{args.images}-{args.size}-{args.format}", args.images,
                           args.size, args.format)
    load_with_progress(big, args.size)
    if not args.skip_peak:
        config = config_for(big, args.size, "disk", train_fraction=args.train_fraction,
                            val_fraction=0.02, test_fraction=0.02)
        result = train_in_child(config, args.folder / "runs")
        verdict = "meets" if result["peak_rss_gb"] <= TARGET_PEAK_GB else "MISSES"
        print(f"(a) peak memory of a disk-pipeline training process on {args.images:,} images: "
              f"{result['peak_rss_gb']:.2f} GB ({verdict} the target of {TARGET_PEAK_GB} GB); "
              f"{result['seconds']:.0f} s, pipeline {result['data_pipeline']}")

    if args.rounds == 0:
        return
    fits = synthetic_folder(args.folder / f"images-{args.fit_images}-{args.size}-{args.format}",
                            args.fit_images, args.size, args.format)
    load_with_progress(fits, args.size)
    speeds = {"memory": [], "disk": []}
    for round_index in range(args.rounds):
        order = ("memory", "disk") if round_index % 2 == 0 else ("disk", "memory")
        for pipeline in order:
            result = train_in_child(config_for(fits, args.size, pipeline, epochs=args.fit_epochs),
                                    args.folder / "runs")
            steady = result["images_per_sec"][1:] or result["images_per_sec"]  # epoch 1 includes tracing
            speeds[pipeline].append(statistics.median(steady))
            print(f"round {round_index + 1} {pipeline:6s}: {speeds[pipeline][-1]:.1f} images/s, "
                  f"peak {result['peak_rss_gb']:.2f} GB, val accuracy {result['val_accuracy']:.3f}")
    memory, disk = statistics.median(speeds["memory"]), statistics.median(speeds["disk"])
    ratio = disk / memory
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"(b) images/s on {args.fit_images:,} images: memory {memory:.1f}, disk {disk:.1f}, "
          f"ratio {ratio:.3f} ({verdict} the target of {TARGET_RATIO})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
