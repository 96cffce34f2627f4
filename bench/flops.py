"""Achieved FLOP/s of the recipe model against the device's peak, and the input pipeline alone against training.

On the CPU, or on the GPU where TensorFlow sees one (then the run's GPU settings apply: `--precision
auto` is mixed_float16 and `--xla auto` Keras' XLA choice, as a run there trains). Peak, two ways:
- measured: matrix products (2048 x 2048; on a GPU 8192 x 8192) by TensorFlow in the compute dtype of
  the precision policy (float32; float16 or bfloat16 under mixed precision), timed in the same rounds
  as the model: the most this software stack gets out of the device;
- nominal: on a CPU, cores x clock (/proc/cpuinfo) x FP32 FLOP per cycle per core, from its vector
  units (AMD Zen 4: two 256-bit FMA pipes, 32; Intel with two AVX-512 FMA units, 64; AVX2 only, 32);
  on a GPU, the maker's dense figure for the compute dtype (tensor cores; TF32 for float32, which
  TensorFlow uses for float32 products on such GPUs), for the GPUs in NOMINAL_GPU_TFLOPS.

Model FLOPs: 2 x the multiply-accumulates of one image's forward pass (core.ml.models.model_stats:
convolutions and dense layers; BatchNorm, activations, pooling and augmentation are left out, so
the achieved figure is a slight underestimate), training 3 x the forward pass (forward, gradients of
the activations, gradients of the weights).

Timings are interleaved: each round times the matmul peak, a training epoch of `--steps` batches
through the run's own tf.data pipeline and model.fit (two epochs in one fit, as a run trains), the same
without augmentation, the same through tf.data's autotuner (as before 2026-12-05), inference, and
the input pipeline alone (and with the augmentation layers), so load from other work falls on all
alike. Medians of the rounds after a first, untimed one (tracing).

    .venv/bin/python bench/flops.py [--rounds 5] [--steps 40] [--task binary] [--arch ...] [--image-size ...]
        [--batch-size ...] [--precision auto|float32|mixed_float16|mixed_bfloat16] [--xla auto|on|off]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings.config import PRECISIONS, XLA_MODES  # noqa: E402

MATMUL_SIZE = 2048
GPU_MATMUL_SIZE = 8192  # big enough to keep a data-centre GPU's tensor cores busy
MATMUL_REPEATS = 8
# Dense (no sparsity) peak TFLOP/s by compute dtype, from NVIDIA's data sheets (SXM parts unless named).
NOMINAL_GPU_TFLOPS = {
    "H200": {"float32": 494.7, "float16": 989.4, "bfloat16": 989.4},
    "H100 PCIe": {"float32": 378.0, "float16": 756.0, "bfloat16": 756.0},
    "H100": {"float32": 494.7, "float16": 989.4, "bfloat16": 989.4},
    "A100": {"float32": 156.0, "float16": 312.0, "bfloat16": 312.0},
    "L4": {"float32": 60.0, "float16": 121.0, "bfloat16": 121.0},
    "T4": {"float32": 8.1, "float16": 65.0},
}
INFERENCE_BATCH = 64
GOAL_SHARE_OF_PEAK = 0.60  # issue 24: training at >= 60% of the FP32 peak


def nominal_peak() -> tuple[float, str]:
    """(FLOP/s, how it was reckoned) from the cores, their clock and their vector units."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vendor = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("vendor_id")), "")
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    clock = (statistics.median(mhz) if mhz else 0.0) * 1e6
    if "avx512f" in flags and vendor != "AuthenticAMD":
        per_cycle, units = 64, "two AVX-512 FMA units (16 floats x 2 FLOP x 2)"
    elif "avx512f" in flags or "avx2" in flags:
        per_cycle, units = 32, ("AVX-512 on two 256-bit FMA pipes, Zen 4 (8 floats x 2 FLOP x 2)"
                                if "avx512f" in flags else "two AVX2 FMA units (8 floats x 2 FLOP x 2)")
    else:
        per_cycle, units = 8, "SSE (an assumption)"
    cores = os.cpu_count() or 1
    return cores * clock * per_cycle, f"{cores} cores x {clock / 1e9:.2f} GHz x {per_cycle} FP32 FLOP/cycle ({units})"


def gpu_name() -> str | None:
    """The first GPU's name as TensorFlow reports it, or None without one."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None


def nominal_gpu_peak(name: str, dtype: str) -> tuple[float | None, str]:
    """(FLOP/s, how it was reckoned) for a GPU named `name` computing in `dtype`; None when unknown."""
    for model, figures in NOMINAL_GPU_TFLOPS.items():  # "H100 PCIe" before "H100"
        if model in name and dtype in figures:
            kind = "TF32 tensor cores" if dtype == "float32" else f"{dtype} tensor cores"
            return figures[dtype] * 1e12, f"{model}: {figures[dtype]:g} TFLOP/s dense, {kind} (data sheet)"
    return None, f"no data-sheet figure for {name} in {dtype}"


def matmul_timer(dtype: str = "float32", size: int = MATMUL_SIZE):
    """A function timing MATMUL_REPEATS products of two size x size matrices in `dtype`: FLOP/s."""
    import tensorflow as tf
    a = tf.cast(tf.random.stateless_normal((size, size), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((size, size), seed=(3, 4)), dtype)

    @tf.function(autograph=False)
    def products(a, b):
        total = tf.zeros(())
        for _ in range(MATMUL_REPEATS):  # unrolled: one graph, the products one after another
            a = tf.linalg.matmul(a, b) * tf.cast(size ** -0.5, dtype)  # scaled: the values stay near 1
            total += tf.cast(a[0, 0], tf.float32)
        return total

    products(a, b).numpy()  # traced, untimed

    def timed() -> float:
        began = time.perf_counter()
        products(a, b).numpy()  # .numpy() waits for the device
        return MATMUL_REPEATS * 2 * size ** 3 / (time.perf_counter() - began)
    return timed


def recipe_parts(args):
    """The recipe's config, its training rows, a model with and one without augmentation, its data."""
    import keras

    from core.ml import models
    from core.ml.data_pipeline import load_data
    from core.ml.training import _compile, build_augmentation, configure_devices
    from core.settings.recipes import recipe
    config = recipe(args.task).with_overrides({k: v for k, v in (("arch", args.arch), ("image_size", args.image_size),
                                                                 ("batch_size", args.batch_size),
                                                                 ("precision", args.precision), ("xla", args.xla))
                                               if v is not None})
    dataset, split = load_data(config)
    configure_devices(0, config.precision, config.xla)
    n_classes = len(dataset.class_names)
    built = {}
    for name, augmentation in (("with augmentation", build_augmentation(config.augmentation, config.seed)),
                               ("without augmentation", None)):
        keras.utils.set_random_seed(config.seed)
        model = models.build_model(config.arch, config.image_size, config.channels, n_classes, config.arch_params,
                                   augmentation=augmentation)
        _compile(model, config, config.learning_rate)
        built[name] = model
    return config, dataset, split, built


def pipeline(config, dataset, rows, n_classes):
    from core.ml.data_pipeline import make_tf_dataset
    return make_tf_dataset(dataset.images[rows], dataset.labels[rows], n_classes, config.batch_size, True, config.seed)


def autotuned_pipeline(config, dataset, rows, n_classes):
    """The same batches through tf.data's autotuner (AUTOTUNE map and prefetch), as before 2026-12-05."""
    import numpy as np
    import tensorflow as tf

    from core.ml.data_pipeline import to_model_inputs, without_autograph
    ds = tf.data.Dataset.from_tensor_slices((dataset.images[rows], dataset.labels[rows].astype(np.int32)))
    ds = ds.shuffle(len(rows), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)
    ds = ds.map(without_autograph(lambda x, y: to_model_inputs(x, y, n_classes)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def measure(args) -> None:
    import numpy as np
    import tensorflow as tf

    from core.ml import models
    from core.ml.training import build_augmentation
    import keras
    config, dataset, split, built = recipe_parts(args)
    gpu = gpu_name()
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    peak_nominal, reckoning = nominal_gpu_peak(gpu, compute_dtype) if gpu else nominal_peak()
    n_classes = len(dataset.class_names)
    rows = split.train[:config.batch_size * args.steps]
    train_ds = pipeline(config, dataset, rows, n_classes)
    autotuned_ds = autotuned_pipeline(config, dataset, rows, n_classes)
    every_row = pipeline(config, dataset, split.train, n_classes)
    probe = np.asarray(dataset.images[split.val[:INFERENCE_BATCH]], dtype=np.float32)
    augment = build_augmentation(config.augmentation, config.seed)
    augment_step = tf.function(lambda x: augment(x, training=True), autograph=False)
    macs = models.model_stats(built["without augmentation"])["macs"]
    peak = matmul_timer(compute_dtype, GPU_MATMUL_SIZE if gpu else MATMUL_SIZE)

    def fit_rate(model, data=train_ds) -> float:
        # Two epochs in one fit, as a run trains: the second starts a new iterator of the pipeline.
        began = time.perf_counter()
        model.fit(data, epochs=2, verbose=0, shuffle=False)
        return 2 * len(rows) / (time.perf_counter() - began)

    def inference_rate(model) -> float:
        began = time.perf_counter()
        for _ in range(args.steps):
            model.predict_on_batch(probe)
        return args.steps * len(probe) / (time.perf_counter() - began)

    def pipeline_rate(step=None) -> float:
        began, count = time.perf_counter(), 0
        for images, _ in every_row:
            if step is not None:
                images = step(images)
            count += int(images.shape[0])
            images.numpy()  # the batch is really made
        return count / (time.perf_counter() - began)

    timers = {"matmul peak": peak,
              "training": lambda: fit_rate(built["with augmentation"]),
              "training without augmentation": lambda: fit_rate(built["without augmentation"]),
              "training, tf.data autotuner on": lambda: fit_rate(built["with augmentation"], autotuned_ds),
              "inference": lambda: inference_rate(built["without augmentation"]),
              "input pipeline alone": pipeline_rate,
              "input pipeline + augmentation layers": lambda: pipeline_rate(augment_step)}
    rates = {name: [] for name in timers}
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f} (above 0.5: the cores are shared)")
    print(f"device: {gpu or 'CPU'}; policy {keras.mixed_precision.global_policy().name}; XLA "
          + ", ".join(f"{name} {'on' if model.jit_compile else 'off'}" for name, model in built.items()))
    print(f"{config.arch} {config.arch_params} at {config.image_size} px, batch {config.batch_size}: "
          f"{macs / 1e6:.1f} M multiply-accumulates per image forward; {len(rows)} training images per timed epoch, "
          f"{len(split.train)} in the pipeline-alone pass", flush=True)
    for round_ in range(args.rounds + 1):
        names = list(timers) if round_ % 2 == 0 else list(reversed(timers))
        for name in names:
            value = timers[name]()
            if round_:  # round 0 traces every graph and warms oneDNN: untimed
                rates[name].append(value)
        if round_:
            print(f"round {round_}: " + ", ".join(f"{name} {rates[name][-1] / (1e9 if name == 'matmul peak' else 1):.1f}"
                                                   for name in timers), flush=True)
    report({name: statistics.median(values) for name, values in rates.items()}, rates, macs, peak_nominal, reckoning,
           compute_dtype)


def report(median: dict, rates: dict, macs: int, peak_nominal: float | None, reckoning: str,
           dtype: str = "float32") -> None:
    peak = median["matmul peak"]
    nominal = f"{peak_nominal / 1e9:.1f} GFLOP/s = {reckoning}" if peak_nominal else f"unknown ({reckoning})"
    print(f"\npeak {dtype}: measured {peak / 1e9:.1f} GFLOP/s (TensorFlow matmul, median; range "
          f"{min(rates['matmul peak']) / 1e9:.1f}-{max(rates['matmul peak']) / 1e9:.1f}); nominal {nominal}")
    for name, flop_per_image in (("training", 6 * macs), ("training without augmentation", 6 * macs),
                                 ("training, tf.data autotuner on", 6 * macs), ("inference", 2 * macs)):
        achieved = median[name] * flop_per_image
        of_nominal = f"{achieved / peak_nominal:5.1%} of nominal" if peak_nominal else "nominal unknown"
        print(f"{name:31} {median[name]:8.1f} img/s = {achieved / 1e9:6.1f} GFLOP/s: {achieved / peak:5.1%} of the "
              f"measured peak, {of_nominal}"
              + (f" (goal >= {GOAL_SHARE_OF_PEAK:.0%})" if name == "training" else ""))
    for name in ("input pipeline alone", "input pipeline + augmentation layers"):
        print(f"{name:31} {median[name]:8.1f} img/s = x{median[name] / median['training']:.1f} the training's "
              f"images/s")
    print(f"augmentation's share of a training step: {1 - median['training'] / median['training without augmentation']:.0%}")
    ratios = [a / b for a, b in zip(rates["training"], rates["training, tf.data autotuner on"])]
    print(f"training, autotuner off / on: x{statistics.median(ratios):.2f} (median of per-round ratios, range "
          f"{min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training batches per timed epoch")
    parser.add_argument("--task", default="binary")
    parser.add_argument("--arch")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int, help="the recipe's by default (on a GPU, try 128 or 256)")
    parser.add_argument("--precision", choices=PRECISIONS, help="the recipe's (auto) by default")
    parser.add_argument("--xla", choices=XLA_MODES, help="the recipe's (auto) by default")
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
