"""The tf.data pipeline of a run: its dataset and split (load_data), batches of the split's rows copied
into memory or streamed from the disk cache batch by batch (the `data_pipeline` setting), and
predictions through the same pipeline. TensorFlow is imported inside functions."""
from __future__ import annotations

import os

import numpy as np

from core.data import datasets as data_lib
from core.data import splits
from core.data.formats import FormatOptions
from core.ml.run_control import Progress
from core.settings.config import TrainConfig


def load_data(config: TrainConfig, progress: Progress | None = None, cancel=None):
    """The dataset and its split for `config` (decoded images come from the disk cache when present,
    memory-mapped). `cancel` (a callable) stops a load that decodes: data_lib.LoadCancelled."""
    report = (lambda done, total, message: progress.update(load_done=done, load_total=total)) if progress else None
    dataset = data_lib.load_dataset(config.data_source, config.data_path or None, config.task,
                                    config.image_size, config.channels, progress=report, cancel=cancel,
                                    options=FormatOptions.from_settings(config))
    seed = config.effective_split_seed
    if config.cv_folds:
        split = splits.make_cv_split(dataset, config.cv_folds, config.cv_fold, config.test_fraction, seed)
    else:
        split = splits.make_split(dataset, config.val_fraction, config.test_fraction, seed,
                                    use_own_split=config.split == "own")
    return dataset, splits.subsample_train(dataset, split, config.train_fraction, seed)


def make_tf_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                    shuffle: bool, seed: int):
    """uint8 images + int labels -> batches of (float32 pixels 0-255, one-hot labels), prefetched."""
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    return shuffled_batches(ds, len(labels), batch_size, shuffle, seed,
                            lambda x, y: to_model_inputs(x, y, num_classes))


# Batches mapped and prefetched ahead, fixed numbers with tf.data's autotuner off. With the autotuner
# on, the first batch of an epoch waited about 2.5 s in one epoch of two or three (TensorFlow 2.21 on
# 2 cores: its thread is wound down with the last epoch's iterator), 30% of a recipe epoch's time
# (bench/flops.py). The maps are a cast and a one-hot, or reading rows from the disk cache; the
# streamed pipeline keeps fewer batches in flight to bound its memory.
BATCHES_IN_FLIGHT = 4
STREAMED_BATCHES_IN_FLIGHT = 2


def shuffled_batches(ds, count: int, batch_size: int, shuffle: bool, seed: int, to_model,
                     in_flight: int = BATCHES_IN_FLIGHT):
    """`count` elements -> batches (shuffled anew every epoch if `shuffle`) mapped by `to_model`
    in order, `in_flight` batches prefetched. The pipeline both the in-memory and the streamed
    data go through."""
    import tensorflow as tf
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    # Mapping after batching keeps float32 pixels out of the shuffle buffer (uint8 images or row positions).
    ds = ds.batch(batch_size).map(without_autograph(to_model), num_parallel_calls=in_flight, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(in_flight).with_options(options)


def with_mixup(batches, alpha: float, seed: int):
    """Mixup (Zhang et al., ICLR 2018) on training batches: each image blended with a partner from its
    batch, and its one-hot label in the same proportion, by a weight drawn from Beta(alpha, alpha).
    Stateless draws from a seeded stream that is redrawn every epoch: one seed, the same run."""
    import tensorflow as tf
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def mix(batch, pair):
        images, labels = batch
        weight_seed, other_seed, partner_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 3))
        count = tf.shape(images)[:1]
        first = tf.random.stateless_gamma(count, weight_seed, alpha=alpha)
        second = tf.random.stateless_gamma(count, other_seed, alpha=alpha)
        # Beta(alpha, alpha) from two gamma draws; both can underflow to 0 at a small alpha
        weight = tf.math.divide_no_nan(first, first + second)
        partner = tf.random.experimental.stateless_shuffle(tf.range(count[0]), partner_seed)
        blend = lambda x, w: w * x + (1.0 - w) * tf.gather(x, partner)  # noqa: E731
        return (blend(images, tf.reshape(weight, (-1, 1, 1, 1))),
                blend(labels, tf.reshape(weight, (-1, 1))))

    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.zip(batches, draws).map(without_autograph(mix))
            .prefetch(BATCHES_IN_FLIGHT).with_options(options))


def without_autograph(function):
    """`function` as tf.data and tf.function trace it, but not rewritten by AutoGraph, which parses its
    Python source: in a dashboard thread that can break a page compiled at the same moment on CPython
    3.11 before 3.11.8 (gh-106905). Our mapped functions are plain TensorFlow ops: nothing to rewrite."""
    import tensorflow as tf
    return tf.autograph.experimental.do_not_convert(function)


def to_model_inputs(images, labels, num_classes: int):
    """A batch of uint8 images and int labels as the model takes them: float32 pixels 0-255, one-hot."""
    import tensorflow as tf
    return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_data_pipeline(config: TrainConfig, dataset: data_lib.Dataset) -> str:
    """'memory' or 'disk': `config.data_pipeline`, where 'auto' streams from the disk cache when the
    decoded images would fill more than a quarter of this machine's memory."""
    if config.data_pipeline != "auto":
        return config.data_pipeline
    return "disk" if dataset.images.nbytes > machine_memory_bytes() / 4 else "memory"


def make_streamed_dataset(dataset: data_lib.Dataset, rows: np.ndarray, num_classes: int, batch_size: int,
                          shuffle: bool, seed: int):
    """The batches make_tf_dataset gives for these rows, read batch by batch from the disk cache.

    Positions are shuffled instead of images, so memory does not grow with the dataset; shuffling
    range(n) with the same seed and buffer size gives the same order as shuffling the images
    themselves, hence the very same batches (and metrics) as the in-memory pipeline.
    """
    import tensorflow as tf
    rows = np.asarray(rows, dtype=np.int64)
    labels = dataset.labels[rows].astype(np.int32)
    image_shape = (None, *dataset.images.shape[1:])

    def read(positions):
        return dataset.read_images(rows[positions]), labels[positions]

    def to_model(positions):
        # stateful=False: the same rows read the same pixels, so tf.data may read batches in parallel.
        x, y = tf.numpy_function(read, [positions], (tf.uint8, tf.int32), stateful=False)
        x.set_shape(image_shape)
        y.set_shape((None,))
        return to_model_inputs(x, y, num_classes)

    return shuffled_batches(tf.data.Dataset.range(len(rows)), len(rows), batch_size, shuffle, seed, to_model,
                            in_flight=STREAMED_BATCHES_IN_FLIGHT)


def split_batches(dataset: data_lib.Dataset, rows: np.ndarray, num_classes: int, batch_size: int,
                  shuffle: bool, seed: int, pipeline: str):
    """Batches of the dataset's `rows`: copied into memory, or streamed from the disk cache."""
    if pipeline == "disk":
        return make_streamed_dataset(dataset, rows, num_classes, batch_size, shuffle, seed)
    return make_tf_dataset(dataset.images[rows], dataset.labels[rows], num_classes, batch_size, shuffle, seed)


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0),
                      dtype=np.float32)


def predict_rows(model, dataset: data_lib.Dataset, rows: np.ndarray, batch_size: int = 64,
                 pipeline: str = "disk") -> np.ndarray:
    """Probabilities for the dataset's `rows`; with the disk pipeline, read batch by batch from the cache."""
    if pipeline == "memory" or len(rows) == 0:
        return predict_probabilities(model, dataset.images[rows], batch_size)
    batches = make_streamed_dataset(dataset, rows, model.output_shape[-1], batch_size, False, 0)
    images_only = batches.map(without_autograph(lambda x, y: x))
    return np.asarray(model.predict(images_only, verbose=0), dtype=np.float32)
