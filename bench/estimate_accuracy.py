"""Estimated against real run time: train a first run, estimate the next ones from it, train them,
print both. Small runs (64 px by default) on the built-in set, in a temporary run store.

    .venv/bin/python bench/estimate_accuracy.py [--image-size 64]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.present import estimate  # noqa: E402
from core.settings.config import TrainConfig  # noqa: E402
from core.store.runs import RunStore  # noqa: E402
from core.workers.manager import JobManager  # noqa: E402


def configs(size: int) -> tuple[TrainConfig, list[TrainConfig]]:
    """The basis run and the runs estimated from it."""
    first = TrainConfig(arch="seed_cnn", image_size=size, epochs=3, name="basis")
    return first, [TrainConfig(arch="seed_cnn", image_size=size, epochs=5, name="same model, 5 epochs"),
                   TrainConfig(arch="seed_cnn", image_size=size, epochs=3, train_fraction=0.5,
                               name="same model, half the data"),
                   TrainConfig(arch="deep_bn_cnn", image_size=size, epochs=3, name="other model (scaled by MACs)")]


def macs(config: TrainConfig) -> float:
    from core.ml import models
    model = models.build_model(config.arch, config.image_size, config.channels, 2, config.arch_params, config.dropout)
    return models.model_stats(model)["macs"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    first, following = configs(parser.parse_args().image_size)
    with tempfile.TemporaryDirectory() as folder:
        manager = JobManager(RunStore(Path(folder) / "runs"))
        manager.wait(manager.submit(first))
        past = estimate.past_runs(manager.store)
        print(f"{'run':34} {'estimated':>10} {'real':>8} {'error':>7}  {'epoch est/real':>15}  "
              f"{'overhead est/real':>18}  basis")
        for config in following:
            guess = estimate.estimate_run(config.to_dict(), past, macs=macs(config))
            run_id = manager.submit(config)
            manager.wait(run_id)
            done = estimate.past_runs(manager.store)[0]  # newest first
            real = done.duration_s
            error = (guess.seconds - real) / real
            epoch, overhead = estimate.steady_epoch_seconds(done.history), estimate.overhead_seconds(done)
            print(f"{config.name:34} {guess.seconds:9.1f}s {real:7.1f}s {error:+7.0%}  "
                  f"{guess.epoch_seconds:6.1f}/{epoch:<6.1f}s  {guess.overhead_seconds:8.1f}/{overhead:<7.1f}s  "
                  f"{guess.basis}", flush=True)
        manager.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
