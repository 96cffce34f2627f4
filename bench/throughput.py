"""Training throughput: a bare `model.fit` against the same training through the job manager.

Both train the same model on the same data with the same tf.data pipeline, alternating, so any
drift of the machine hits both. Prints steady-state images/s (first epoch, with graph tracing,
left out) and the ratio job/bare; target >= 0.97.

    .venv/bin/python bench/throughput.py [--rounds 6] [--epochs 3] [--arch deep_bn_cnn] [--image-size 64]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jobs import JobManager  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.training import TrainConfig, configure_devices, load_data, make_tf_dataset, _compile, \
    learning_rate_schedule  # noqa: E402


def bare_fit(config: TrainConfig, dataset, split) -> float:
    """images/s of model.fit alone, timed per epoch by the lightest possible callback."""
    import keras
    from core import models
    keras.utils.set_random_seed(config.seed)
    configure_devices()
    n_classes = len(dataset.class_names)
    train_ds = make_tf_dataset(dataset.images[split.train], dataset.labels[split.train], n_classes,
                               config.batch_size, True, config.seed)
    val_ds = make_tf_dataset(dataset.images[split.val], dataset.labels[split.val], n_classes,
                             config.batch_size, False, config.seed)
    model = models.build_model(config.arch, config.image_size, config.channels, n_classes, config.arch_params)
    steps = -(-len(split.train) // config.batch_size)
    _compile(model, config, learning_rate_schedule(config, steps, config.epochs))
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[EpochTimer()],
              shuffle=False, verbose=0)
    return len(split.train) * (len(times) - 1) / sum(times[1:])


def job_fit(config: TrainConfig, manager: JobManager) -> float:
    """images/s of the same training run as a background job (per-epoch seconds from metrics.jsonl)."""
    run_id = manager.submit(config)
    state = manager.wait(run_id)
    if state != "done":
        raise RuntimeError(f"job {run_id} ended {state}: {manager.store.get(run_id).status().get('error')}")
    run = manager.store.get(run_id)
    seconds = [row["seconds"] for row in run.history()][1:]
    n_train = sum(run.summary()["split"]["counts"]["train"].values())
    return n_train * len(seconds) / sum(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="deep_bn_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    config = TrainConfig(arch=args.arch, image_size=args.image_size, epochs=args.epochs,
                         batch_size=args.batch_size, early_stopping=False)
    dataset, split = load_data(config)
    manager = JobManager(RunStore(tempfile.mkdtemp(prefix="cxr-bench-")))
    bare, job, ratios = [], [], []
    for round_ in range(1, args.rounds + 1):
        # Alternate which goes first, so warm-up and drift of this shared VM hit both alike.
        if round_ % 2:
            bare.append(bare_fit(config, dataset, split))
            job.append(job_fit(config, manager))
        else:
            job.append(job_fit(config, manager))
            bare.append(bare_fit(config, dataset, split))
        ratios.append(job[-1] / bare[-1])
        print(f"round {round_}: bare {bare[-1]:.1f} img/s, job {job[-1]:.1f} img/s, ratio {ratios[-1]:.3f}",
              flush=True)
    bare_median, job_median = statistics.median(bare), statistics.median(job)
    print(f"\n{config.arch} {config.image_size}px batch {config.batch_size}, {len(split.train)} training images, "
          f"{args.rounds} rounds x {args.epochs} epochs")
    print(f"bare model.fit : {bare_median:.1f} img/s (median)")
    print(f"job manager    : {job_median:.1f} img/s (median)")
    print(f"ratio job/bare : {job_median / bare_median:.3f} (medians; target >= 0.97)")
    print(f"per-round ratio: median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
