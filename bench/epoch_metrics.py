"""Cost of the per-epoch validation AUC and macro-F1 against plain training.

Training validates once per epoch with `core.ml.callbacks.ValidationScorer`: one prediction of the
validation rows gives Keras' val_loss and val_accuracy and the AUC and macro-F1, in place of Keras'
own validation pass. This measures, on one model and the same data, interleaved round by round so
a drift of the machine hits all of them:

  fit       one training epoch with no validation (model.fit, the batches alone)
  keras     Keras' validation pass (model.evaluate on the validation batches), what fit did before
  scorer    the scorer (prediction + val_loss/accuracy + classification_metrics)

and prints epoch time with the scorer (fit + scorer) against plain training as it was (fit + keras),
target ratio <= 1.05, and what scoring on top of Keras' pass would have cost (fit + keras + scorer).

    .venv/bin/python bench/epoch_metrics.py [--rounds 3] [--image-size 64] [--arch seed_cnn]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ml import callbacks, data_pipeline, training  # noqa: E402
from core.settings.config import TrainConfig  # noqa: E402


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--arch", default="seed_cnn")
    args = parser.parse_args(argv)
    import keras

    from core.ml import models
    config = TrainConfig(arch=args.arch, image_size=args.image_size).validate()
    dataset, split = data_pipeline.load_data(config)
    keras.utils.set_random_seed(config.seed)
    training.configure_devices()
    pipeline = data_pipeline.choose_data_pipeline(config, dataset)
    classes = len(dataset.class_names)
    train_ds = data_pipeline.split_batches(dataset, split.train, classes, config.batch_size, True, config.seed, pipeline)
    val_ds = data_pipeline.split_batches(dataset, split.val, classes, config.batch_size, False, config.seed, pipeline)
    model = models.build_model(config.arch, config.image_size, config.channels, classes, params=config.arch_params,
                               dropout=config.dropout)
    training._compile(model, config, config.learning_rate)
    scorer = callbacks.ValidationScorer(dataset, split.val, config.batch_size, pipeline)
    print(f"{config.arch} at {config.image_size} px, {pipeline} pipeline: {len(split.train)} training and "
          f"{len(split.val)} validation images", flush=True)
    model.fit(train_ds, epochs=1, verbose=0)  # warm-up: tracing of every function timed below
    model.evaluate(val_ds, verbose=0)
    scorer(model)
    times = {"fit": [], "keras": [], "scorer": []}
    for round_index in range(args.rounds):
        times["fit"].append(timed(lambda: model.fit(train_ds, epochs=1, verbose=0)))
        steps = [("keras", lambda: model.evaluate(val_ds, verbose=0)), ("scorer", lambda: scorer(model))]
        for name, action in steps if round_index % 2 == 0 else steps[::-1]:
            times[name].append(timed(action))
        print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    fit, keras_pass, scoring = (statistics.median(times[k]) for k in ("fit", "keras", "scorer"))
    print(f"median: fit {fit:.2f} s, Keras' validation {keras_pass:.2f} s, scorer {scoring:.2f} s")
    print(f"epoch with the scorer / plain epoch as before: {(fit + scoring) / (fit + keras_pass):.3f} (target <= 1.05)")
    print(f"scoring on top of Keras' validation would be: {(fit + keras_pass + scoring) / (fit + keras_pass):.3f}")


if __name__ == "__main__":
    main()
