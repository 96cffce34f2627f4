"""One run, end to end: TrainConfig -> data -> model -> fit -> predictions, metrics and artifacts.

`execute_run` is what a training process (core.workers.process) and the CLI's foreground run call.
TensorFlow is imported inside functions so that importing this module (for TrainConfig) stays fast.
"""
from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from core.data import datasets as data_lib
from core.data.formats import FormatOptions
from core.settings.architectures import resolve_params
from core.settings.config import Augmentation, TrainConfig  # noqa: F401 - the config travels with the engine
from core.files import atomic_path
from core.store.runs import Run, read_json, write_json

# ----------------------------------------------------------------------------- live progress

class Progress:
    """Live state of one run, written by the training and read by the UI (thread-safe).

    With `path`, every change is also written there for other processes to read: atomically, at
    once when the phase changes, otherwise at most twice a second, and never left behind: a change
    that came too soon is written when the interval is up (else a reader polling short epochs sees
    mostly the state of an epoch's start: batch 0).
    """

    WRITE_INTERVAL_S = 0.5

    def __init__(self, epochs: int = 0, path=None):
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._state = {"phase": "queued", "epoch": 0, "epochs": epochs, "batch": 0, "batches": 0,
                       "images_per_sec": None, "eta_s": None, "learning_rate": None,
                       "batch_loss": None, "load_done": 0, "load_total": 0, "elapsed_s": 0.0}
        self._history: list[dict] = []
        self._path, self._written_at = path, 0.0
        self._version, self._written_version, self._pending = 0, 0, None

    def update(self, **fields) -> None:
        with self._lock:
            phase_changed = "phase" in fields and fields["phase"] != self._state["phase"]
            self._state.update(fields)
            self._version += 1
            if self._path is None:
                return
            wait = self.WRITE_INTERVAL_S - (time.monotonic() - self._written_at)
            if wait > 0 and not phase_changed:
                if self._pending is None:
                    self._pending = threading.Timer(wait, self._write_pending)
                    self._pending.daemon = True
                    self._pending.start()
                return
        self._write()

    def _write_pending(self) -> None:
        with self._lock:
            self._pending = None
        self._write()

    def _write(self) -> None:
        """Write the latest state, unless it is written already (one writer at a time, newest last)."""
        with self._write_lock:
            with self._lock:
                if self._written_version == self._version:
                    return
                state, self._written_version = dict(self._state), self._version
                self._written_at = time.monotonic()
            write_json(self._path, state)

    def add_epoch(self, row: dict) -> None:
        with self._lock:
            self._history.append(row)

    def snapshot(self) -> dict:
        with self._lock:
            return {**self._state, "history": list(self._history)}


@dataclass
class RunControl:
    """Progress and the Stop request of a run; `stop_file`, when given, is a Stop from any process."""
    progress: Progress = field(default_factory=Progress)
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_file: object = None

    def should_stop(self) -> bool:
        return self.stop_event.is_set() or (self.stop_file is not None and os.path.exists(self.stop_file))

    @classmethod
    def for_run(cls, run: Run, epochs: int = 0) -> "RunControl":
        """Progress written to the run folder, Stop read from it: what a training process uses."""
        return cls(progress=Progress(epochs, path=run.progress_path), stop_file=run.stop_path)


class Cancelled(Exception):
    pass


# ----------------------------------------------------------------------------- data

def load_data(config: TrainConfig, progress: Progress | None = None, cancel=None):
    """The dataset and its split for `config` (decoded images come from the disk cache when present,
    memory-mapped). `cancel` (a callable) stops a load that decodes: data_lib.LoadCancelled."""
    report = (lambda done, total: progress.update(load_done=done, load_total=total)) if progress else None
    dataset = data_lib.load_dataset(config.data_source, config.data_path or None, config.task,
                                    config.image_size, config.channels, progress=report, cancel=cancel,
                                    options=FormatOptions.from_settings(config))
    seed = config.effective_split_seed
    if config.cv_folds:
        split = data_lib.make_cv_split(dataset, config.cv_folds, config.cv_fold, config.test_fraction, seed)
    else:
        split = data_lib.make_split(dataset, config.val_fraction, config.test_fraction, seed,
                                    use_own_split=config.split == "own")
    return dataset, data_lib.subsample_train(dataset, split, config.train_fraction, seed)


def make_tf_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                    shuffle: bool, seed: int):
    """uint8 images + int labels -> batches of (float32 pixels 0-255, one-hot labels), prefetched."""
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    return shuffled_batches(ds, len(labels), batch_size, shuffle, seed,
                            lambda x, y: to_model_inputs(x, y, num_classes))


# Batches the disk pipeline reads ahead. A fixed number, not tf.data's autotuner: the streamed
# pipeline is there to bound memory, and the autotuner sizes its buffers by timings (more under load).
STREAMED_BATCHES_IN_FLIGHT = 2


def shuffled_batches(ds, count: int, batch_size: int, shuffle: bool, seed: int, to_model,
                     in_flight: int | None = None):
    """`count` elements -> batches (shuffled anew every epoch if `shuffle`) mapped by `to_model`
    in order, prefetched (`in_flight` batches ahead, or as many as tf.data's autotuner chooses).
    The pipeline both the in-memory and the streamed data go through."""
    import tensorflow as tf
    ahead = in_flight or tf.data.AUTOTUNE
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    # Mapping after batching keeps float32 pixels out of the shuffle buffer (uint8 images or row positions).
    ds = ds.batch(batch_size).map(without_autograph(to_model), num_parallel_calls=ahead, deterministic=True)
    return ds.prefetch(ahead)


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


def class_weight_map(labels: np.ndarray, num_classes: int, mode: str) -> dict | None:
    if mode != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    mapping = {int(c): 1.0 for c in range(num_classes)}
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


# ----------------------------------------------------------------------------- model pieces

def build_augmentation(aug: Augmentation, seed: int):
    """A keras.Sequential of preprocessing layers (active in training only), or None."""
    if not aug.any():
        return None
    import keras
    from keras import layers
    stack = []
    if aug.horizontal_flip:
        stack.append(layers.RandomFlip("horizontal", seed=seed))
    if aug.rotation_degrees:
        stack.append(layers.RandomRotation(aug.rotation_degrees / 360.0, fill_mode="constant", seed=seed + 1))
    if aug.zoom:
        stack.append(layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed + 2))
    if aug.shift:
        stack.append(layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed + 3))
    if aug.brightness:
        stack.append(layers.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed + 4))
    if aug.contrast:
        stack.append(layers.RandomContrast(aug.contrast, value_range=(0, 255), seed=seed + 5))
    if aug.shear:
        # (0, shear), not shear: Keras 3.15 saves a number as (-shear, shear), which it then refuses to
        # load; the layer flips the sign at random, so (0, shear) draws the same shears in [-shear, shear]
        stack.append(layers.RandomShear((0.0, aug.shear), (0.0, aug.shear), fill_mode="constant", seed=seed + 6))
    if aug.gaussian_noise:  # Keras' GaussianNoise takes a deviation of at most 1: noise on 0-1 pixels
        stack += [layers.Rescaling(1 / 255), layers.GaussianNoise(aug.gaussian_noise / 255, seed=seed + 7),
                  layers.Rescaling(255)]
    return keras.Sequential(stack, name="augmentation")


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int):
    """A float or a keras LearningRateSchedule for `config.schedule`."""
    from keras.optimizers import schedules
    lr, total_steps = config.learning_rate, max(1, steps_per_epoch * epochs)
    floor = min(config.min_learning_rate, lr)
    if config.schedule in ("constant", "plateau"):
        return lr
    if config.schedule in ("step", "exponential"):
        return schedules.ExponentialDecay(lr, decay_steps=steps_per_epoch * config.step_epochs,
                                          decay_rate=config.decay_rate, staircase=config.schedule == "step")
    if config.schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=total_steps, alpha=floor / lr)
    # one-cycle: linear warm-up from lr/25 to lr over 30% of training, then cosine down to the floor.
    warmup = max(1, int(0.3 * total_steps))
    return schedules.CosineDecay(lr / 25.0, decay_steps=max(1, total_steps - warmup), alpha=floor / lr,
                                 warmup_target=lr, warmup_steps=warmup)


def make_optimizer(config: TrainConfig, learning_rate):
    import keras
    common = {"learning_rate": learning_rate}
    if config.weight_decay:
        common["weight_decay"] = config.weight_decay
    if config.clipnorm:
        common["clipnorm"] = config.clipnorm
    if config.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(**{"weight_decay": 1e-4, **common})
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov, **common)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=config.momentum, **common)
    return keras.optimizers.Adagrad(**common)


def current_learning_rate(optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


def configure_devices(devices: int = 0, precision: str = "auto"):
    """The `precision` policy (core.ml.precision: auto is mixed precision on GPUs), op determinism on
    CPU, and the distribution strategy for `devices` (core.ml.devices: MirroredStrategy over more than one)."""
    import keras
    import tensorflow as tf

    from core.ml import devices as devices_lib
    from core.ml import precision as precision_lib
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:  # take GPU memory as needed: runs in other processes share the GPU, and peaks mean something
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised (a second run in this process)
    keras.mixed_precision.set_global_policy(precision_lib.policy_name(precision, bool(gpus)))
    if not gpus:
        # Reproducible on CPU: the same config and seed give the same metrics.
        tf.config.experimental.enable_op_determinism()
    return devices_lib.strategy_for(devices)


# ----------------------------------------------------------------------------- the callback

@dataclass
class ValidationScorer:
    """The validation pass of each epoch: one prediction of the validation rows, with the final
    predictions' pipeline (predict_rows), gives Keras' val_loss and val_accuracy and the val_auc and
    val_macro_f1 of classification_metrics. It replaces Keras' own validation pass (fit gets no
    validation_data), so the two extra metrics cost no second pass over the validation images."""
    dataset: data_lib.Dataset
    rows: np.ndarray
    batch_size: int
    pipeline: str

    def __call__(self, model) -> dict:
        if len(self.rows) == 0:
            return {}
        probabilities = predict_rows(model, self.dataset, self.rows, self.batch_size, self.pipeline)
        labels = self.dataset.labels[self.rows]
        return {**keras_validation_logs(model, probabilities, labels),
                **epoch_validation_metrics(probabilities, labels, self.dataset.class_names)}


def keras_validation_logs(model, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """{"val_loss", "val_accuracy"} as Keras' validation pass logs them: the compiled loss (label
    smoothing included; the models add no regularisation losses) and the categorical accuracy,
    both means over the images."""
    one_hot = np.eye(probabilities.shape[1], dtype=np.float32)[labels]
    loss = model.loss(one_hot, probabilities.astype(np.float32))
    accuracy = np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels))
    return {"val_loss": float(np.asarray(loss)), "val_accuracy": float(accuracy)}  # NaN stays NaN, as in Keras


def epoch_validation_metrics(probabilities, labels, class_names) -> dict:
    """{"val_auc", "val_macro_f1"}: classification_metrics' "auc" and "macro_f1" of these predictions."""
    from core.ml import metrics as metrics_lib
    scores = metrics_lib.classification_metrics(probabilities, labels, class_names)
    return {"val_auc": scores["auc"], "val_macro_f1": scores["macro_f1"]}


def batch_sizes(examples: int, batch_size: int) -> list[int]:
    """The size of each batch of an epoch over `examples` (the last one may be short)."""
    return [min(batch_size, examples - start) for start in range(0, examples, batch_size)]


def own_batch_values(running_means, sizes) -> list[float]:
    """Each batch's own value from Keras' running means of the epoch (weighted by batch size).

    Keras logs mean_k = sum(n_i * v_i, i <= k) / sum(n_i, i <= k); so
    v_k = (mean_k * N_k - mean_(k-1) * N_(k-1)) / n_k, with N_k the examples seen up to batch k.
    """
    means, sizes = np.asarray(running_means, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    totals = means * np.cumsum(sizes)
    return list(np.diff(totals, prepend=0.0) / sizes)


def learning_rate_at(learning_rate, step: int) -> float | None:
    """The rate the optimizer applies at `step` (a float, or a schedule evaluated at that step)."""
    if learning_rate is None:
        return None
    return float(np.asarray(learning_rate(step))) if callable(learning_rate) else float(learning_rate)


def first_epoch_rows(logged: dict[int, dict], examples: int, batch_size: int, learning_rate,
                     class_weighted: bool) -> list[dict]:
    """batches.json's rows from the first epoch's batch logs {batch: {loss, accuracy}} (running means).

    Accuracy is recovered only without class weights: Keras then weights the accuracy by the class
    weights of the batch's images, which the logs do not tell, while the loss stays weighted by size.
    """
    done = sorted(logged)
    sizes = batch_sizes(examples, batch_size)[:len(done)]
    running_loss = [logged[b]["loss"] for b in done]
    loss = own_batch_values(running_loss, sizes)
    accuracy = None if class_weighted or any(logged[b]["accuracy"] is None for b in done) else \
        own_batch_values([logged[b]["accuracy"] for b in done], sizes)
    return [{"batch": b + 1, "loss": _as_float(loss[i]), "running_loss": running_loss[i],
             "accuracy": _as_float(accuracy[i]) if accuracy is not None else None,
             "learning_rate": learning_rate_at(learning_rate, b)}
            for i, b in enumerate(done)]


@dataclass
class EpochScoring:
    """What the job callback needs beyond progress: the validation scorer and the first epoch's batches."""
    validation: ValidationScorer | None = None
    train_examples: int = 0
    learning_rate: object = None  # a float or a keras LearningRateSchedule
    class_weighted: bool = False


def _make_job_callback(run: Run, control: RunControl, steps_per_epoch: int, batch_size: int,
                       total_epochs: int, monitor: str, resumed: dict | None = None,
                       scoring: EpochScoring | None = None):
    import keras
    scoring = scoring or EpochScoring()

    class JobCallback(keras.callbacks.Callback):
        """Per-batch progress and stop checks; per-epoch metrics file and best model (model.keras);
        the first epoch batch by batch (batches.json)."""

        # Batch hooks only record numbers under a lock, so Keras may call them from its thread
        # pool: a synchronous batch hook would make every training step wait for the logs.
        async_safe = True

        def __init__(self):
            super().__init__()
            self.best_value, self.best_epoch = None, None
            if resumed:  # the best so far is in model.keras
                self.best_value, self.best_epoch = resumed.get("best_value"), resumed.get("best_epoch")
            self.phase, self.fine_tune_start = "train", None
            self.cancelled = False
            self.train_started = time.perf_counter()
            self._lock = threading.Lock()
            self.first_epoch_logs: dict[int, dict] = {}

        def on_epoch_begin(self, epoch, logs=None):
            with self._lock:
                self.epoch, self.epoch_started = epoch, time.perf_counter()
                self.first_batch_done, self.batches_done = None, 0
            control.progress.update(phase="training", epoch=epoch, batch=0, batches=steps_per_epoch,
                                    learning_rate=current_learning_rate(self.model.optimizer))

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            with self._lock:
                self.batches_done = max(self.batches_done, batch + 1)
                done = self.batches_done
                # The first batch of an epoch includes start-up (and tracing): time the batches after it.
                if self.first_batch_done is None:
                    self.first_batch_done, self.first_batch_index = now, done
                steady = done - self.first_batch_index
                elapsed = now - self.first_batch_done
                epochs_left = total_epochs - self.epoch - 1
                if self.epoch == 0:
                    self.first_epoch_logs[batch] = {"loss": _as_float((logs or {}).get("loss")),
                                                    "accuracy": _as_float((logs or {}).get("accuracy"))}
            per_batch = elapsed / steady if steady > 0 and elapsed > 0 else None
            control.progress.update(
                batch=done, images_per_sec=batch_size / per_batch if per_batch else None,
                eta_s=per_batch * (steps_per_epoch - done + epochs_left * steps_per_epoch) if per_batch else None,
                batch_loss=_as_float((logs or {}).get("loss")), elapsed_s=now - self.train_started)
            if control.should_stop():
                self.cancelled = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = {} if logs is None else logs
            if scoring.validation is not None:
                # Into Keras' own logs, as its validation pass would: the TensorBoard, halving, early
                # stopping and plateau callbacks after this one read them there. An AUC that does not
                # exist (one class in the validation split) is left out: TensorBoard cannot log None.
                logs.update({k: v for k, v in scoring.validation(self.model).items() if v is not None})
            seconds = time.perf_counter() - self.epoch_started
            if epoch == 0 and self.first_epoch_logs:
                write_json(run.batches_path, first_epoch_rows(self.first_epoch_logs, scoring.train_examples or
                                                              steps_per_epoch * batch_size, batch_size,
                                                              scoring.learning_rate, scoring.class_weighted))
            row = {"epoch": epoch + 1, **{k: _as_float(v) for k, v in logs.items()},
                   "learning_rate": current_learning_rate(self.model.optimizer),
                   "seconds": round(seconds, 3),
                   "images_per_sec": control.progress.snapshot()["images_per_sec"]}
            row.pop("lr", None)
            if self.cancelled:
                row["partial"] = True  # stopped mid-epoch; what was learned is still validated
                row["batches_done"] = self.batches_done
            run.append_metrics(row)
            control.progress.add_epoch(row)
            run.update_status(epoch=epoch + 1)
            value = logs.get(monitor)
            if value is not None and self._improved(float(value)):
                self.best_value, self.best_epoch = float(value), epoch + 1
                run.save_model(self.model)
            if not self.cancelled:
                save_checkpoint(run, self.model, epoch + 1, {"best_value": self.best_value,
                                                             "best_epoch": self.best_epoch, "phase": self.phase,
                                                             "fine_tune_start": self.fine_tune_start})

        def _improved(self, value: float) -> bool:
            if self.best_value is None or math.isnan(self.best_value):
                return not math.isnan(value)
            return value < self.best_value if monitor.endswith("loss") else value > self.best_value

    return JobCallback()


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(run: Run, model, epoch: int, state: dict) -> None:
    """Weights and optimizer state after `epoch` completed epochs, to resume from.

    Files carry the epoch in their names and state.json is written last, so a crash at any moment
    leaves the previous checkpoint whole.
    """
    folder = run.checkpoint_dir
    with atomic_path(folder / f"epoch-{epoch}.weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(folder / f"epoch-{epoch}.optimizer.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, *[np.asarray(v) for v in model.optimizer.variables])
    write_json(folder / "state.json", {**state, "epoch": epoch})
    for old in folder.glob("epoch-*"):
        if not old.name.startswith(f"epoch-{epoch}."):
            old.unlink(missing_ok=True)


def restore_checkpoint(run: Run, model) -> dict:
    """Load the last checkpoint into a compiled `model` (weights and optimizer state); its state."""
    state = read_json(run.checkpoint_dir / "state.json", {})
    epoch = state["epoch"]
    model.load_weights(run.checkpoint_dir / f"epoch-{epoch}.weights.h5")
    optimizer = model.optimizer
    if not optimizer.built:  # _compile built it; building loss scaling again would add its variables twice
        optimizer.build(model.trainable_variables)
    with np.load(run.checkpoint_dir / f"epoch-{epoch}.optimizer.npz", allow_pickle=False) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"the checkpoint's optimizer state ({len(values)} variables) does not fit this "
                         f"model's optimizer ({len(optimizer.variables)})")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
    return state


def restore_best_model(run: Run, model) -> None:
    """Load the best epoch's weights from model.keras, which the callback writes at each improvement.

    The file, not a copy in memory, is the one record of the best epoch: it outlives a crash, a Stop
    and a resume in another process. Its optimizer state may not fit a model recompiled for
    fine-tuning; only the weights matter here, so Keras' warning that it skips them is muted.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(run.model_path)


def truncate_history(run: Run, epochs: int) -> None:
    """Keep the metrics of the first `epochs` epochs: a resumed run goes on from there."""
    rows = [row for row in run.history() if row.get("epoch", 0) <= epochs]
    with atomic_path(run.metrics_path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))


def early_stopping(config: TrainConfig, resumed: dict | None):
    """Keras' EarlyStopping; a resumed run keeps its best value and its count of epochs without one."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            carried, self.carried = getattr(self, "carried", None), None
            if carried and carried.get("best_value") is not None:
                self.best = carried["best_value"]
                self.wait = carried["epoch"] - (carried.get("best_epoch") or carried["epoch"])

    callback = ResumableEarlyStopping(monitor=config.monitor, patience=config.patience, restore_best_weights=False)
    callback.carried = resumed
    return callback


def resources_used(wall_s: float, images_per_sec: list[float], strategy=None) -> dict:
    """Peak memory of this process (and of its GPUs, summed), steady images/s, wall time (all the
    run's segments: Run.wall_seconds), device,
    the replicas training in sync (MirroredStrategy: one per GPU) and the precision policy."""
    import resource

    import keras
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    peak_gpu = None
    if gpus:
        try:
            peak_gpu = round(sum(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"]
                                 for i in range(len(gpus))) / 2**20, 1)
        except (ValueError, RuntimeError):
            pass
    device = (f"{len(gpus)} GPU: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
              if gpus else f"CPU ({os.cpu_count()} cores)")
    steady = images_per_sec[1:] or images_per_sec  # the first epoch includes tracing
    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_gpu_memory_mb": peak_gpu,
            "images_per_sec": round(float(np.median(steady)), 1) if steady else None,
            "wall_s": wall_s, "device": device,
            "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
            "precision": keras.mixed_precision.global_policy().name}


def epoch_tensorboard(log_dir):
    """Keras' TensorBoard callback writing epoch summaries only.

    Its batch hooks would do nothing with update_freq="epoch", but merely having them makes Keras
    wait for every batch's logs; without them the training loop runs at bare model.fit speed.
    """
    import keras

    class EpochTensorBoard(keras.callbacks.TensorBoard):
        async_safe = True

        def on_train_batch_begin(self, batch, logs=None):
            pass

        def on_train_batch_end(self, batch, logs=None):
            pass

    return EpochTensorBoard(str(log_dir), update_freq="epoch", write_graph=False, profile_batch=0)


def _as_float(value):
    if value is None:
        return None
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- a whole run

def execute_run(run: Run, config: TrainConfig, control: RunControl | None = None, resume: bool = False) -> dict:
    """Train `config` into `run`, keeping status.json honest; returns the summary. With `resume`,
    training goes on from the run's last checkpoint.

    Never raises: failures are recorded in status.json (state failed, error, traceback).
    """
    control = control or RunControl()
    if control.should_stop():  # stopped while it waited for a process
        run.update_status(state="cancelled", finished=time.time(), error=None)
        control.progress.update(phase="cancelled")
        return {}
    # This segment of the run's wall time starts here (the worker's hand-over came a moment before).
    fields = {"state": "running", "epochs": config.epochs, "finished": None, "error": None,
              "segment_started": time.time()}
    if not resume:
        fields.update(started=time.time(), epoch=0, trained_s=0.0)
    run.update_status(**fields)
    try:
        summary = train(run, config, control, resume=resume)
    except Cancelled:
        run.update_status(state="cancelled", finished=time.time(), error=None)
        control.progress.update(phase="cancelled")
        return {}
    except BaseException as exc:  # noqa: BLE001 - a job must never take the process down
        run.update_status(state="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())
        control.progress.update(phase="failed")
        return {}
    state = "cancelled" if summary.get("cancelled") else "done"
    write_model_card(run)  # before the final state: whoever sees a run done finds all its files
    run.update_status(state=state, finished=time.time(), error=None)
    control.progress.update(phase=state)
    return summary


def write_model_card(run: Run) -> None:
    """model_card.md beside the model; a card that cannot be written is noted, the run stays done."""
    from core.ml import model_card
    try:
        model_card.write_model_card(run)
    except Exception as exc:  # noqa: BLE001 - the trained model matters more than its card
        run.update_status(model_card_error=f"{type(exc).__name__}: {exc}")


def train(run: Run, config: TrainConfig, control: RunControl, resume: bool = False) -> dict:
    """The training itself. Raises on error; `execute_run` turns errors into a failed status."""
    import keras

    from core.ml import devices, halving, hparams, models
    from core.ml import metrics as metrics_lib

    config.validate()
    devices.prepare(config.devices)  # first: TensorFlow's runtime must not have started
    started = time.perf_counter()
    if not resume:  # a resumed run's settings are already there
        hparams.write_settings(run.tensorboard_dir, config, trial_id=run.id)
    control.progress.update(phase="loading data")
    try:
        dataset, split = load_data(config, control.progress, cancel=control.should_stop)
    except data_lib.LoadCancelled:
        raise Cancelled() from None
    pipeline = choose_data_pipeline(config, dataset)
    run.write_environment({**environment_versions(), "dataset_hash": dataset.content_hash,
                           "dataset_source": dataset.report.source, "dataset_images": len(dataset),
                           "data_pipeline": pipeline})
    if control.should_stop():
        raise Cancelled()
    num_classes = len(dataset.class_names)
    y_train = dataset.labels[split.train]
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    fine_tune_epochs = int(resolve_params(config.arch, config.arch_params).get("fine_tune_epochs", 0)) \
        if config.arch == "transfer" else 0
    total_epochs = config.epochs + fine_tune_epochs

    keras.utils.set_random_seed(config.seed)
    strategy = configure_devices(config.devices, config.precision)
    train_ds = split_batches(dataset, split.train, num_classes, config.batch_size, True, config.seed, pipeline)
    notes = []  # what the run must say about its model (ImageNet weights offline: a base from scratch)
    with strategy.scope():
        model = models.build_model(config.arch, config.image_size, config.channels, num_classes,
                                   params=config.arch_params, dropout=config.dropout,
                                   augmentation=build_augmentation(config.augmentation, config.seed), notes=notes)
        learning_rate = learning_rate_schedule(config, steps_per_epoch, config.epochs)
        _compile(model, config, learning_rate)
        resumed = _resume(run, model, config) if resume else None
    if notes:
        run.update_status(warnings=notes)
    stats = models.model_stats(model)
    run.write_layer_table(models.layer_table(model))
    control.progress.update(phase="training", epochs=total_epochs, batches=steps_per_epoch, model=stats,
                            epoch=resumed["epoch"] if resumed else 0)
    run.update_status(epochs=total_epochs)

    class_weight = class_weight_map(y_train, num_classes, config.class_weights)
    scoring = EpochScoring(ValidationScorer(dataset, split.val, config.batch_size, pipeline), len(y_train),
                           learning_rate, class_weight is not None)
    job_callback = _make_job_callback(run, control, steps_per_epoch, config.batch_size, total_epochs,
                                      config.monitor, resumed, scoring)
    callbacks = [job_callback, epoch_tensorboard(run.tensorboard_dir)]
    halver = halving.halving_callback(run, config)  # successive halving in a sweep; before early stopping
    callbacks += [halver] if halver else []
    if config.early_stopping:
        callbacks.append(early_stopping(config, resumed))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.plateau_factor,
                                                           patience=config.plateau_patience,
                                                           min_lr=config.min_learning_rate))
    epochs_done = resumed["epoch"] if resumed else 0
    if not resumed or resumed.get("phase") == "train":
        model.fit(train_ds, initial_epoch=epochs_done, epochs=config.epochs,
                  callbacks=callbacks, class_weight=class_weight, shuffle=False, verbose=0)  # tf.data shuffles
        epochs_done = len(run.history())
        if fine_tune_epochs and not job_callback.cancelled and not model.stop_training:
            job_callback.phase, job_callback.fine_tune_start = "fine_tune", epochs_done
            _prepare_fine_tune(model, config)
    else:  # resumed during fine-tuning
        job_callback.phase, job_callback.fine_tune_start = "fine_tune", resumed["fine_tune_start"]
    if job_callback.phase == "fine_tune":
        model.fit(train_ds, initial_epoch=epochs_done,
                  epochs=job_callback.fine_tune_start + fine_tune_epochs, callbacks=callbacks,
                  class_weight=class_weight, shuffle=False, verbose=0)
    epochs_run = len(run.history())

    restored = bool(config.restore_best and job_callback.best_epoch and run.has_model())
    if restored:
        restore_best_model(run, model)
    run.save_model(model)
    control.progress.update(phase="evaluating")
    summary = {"val": None, "test": None, "best_epoch": job_callback.best_epoch,
               f"best_{config.monitor}": job_callback.best_value, "epochs_run": epochs_run,
               "cancelled": job_callback.cancelled, "stopped_early": epochs_run < total_epochs
               and not job_callback.cancelled, "model": stats, "class_names": dataset.class_names,
               "dataset": data_lib.dataset_summary(dataset), "split": data_lib.split_report_dict(split.report)}
    summary.update(halving.summary_fields(halver))
    summary["overfitting"] = fit_at_epoch(run.history(), job_callback.best_epoch if restored else epochs_run)
    summary["warnings"] = notes
    if config.monitor != "val_loss":
        summary["best_val_loss"] = min((r.get("val_loss") for r in run.history() if r.get("val_loss") is not None),
                                       default=None)
    summary["data_pipeline"] = pipeline
    predicted = {}
    for split_name in ("val", "test"):
        idx = split.indices(split_name)
        probabilities = predict_rows(model, dataset, idx, config.batch_size, pipeline)
        run.save_predictions(split_name, probabilities, dataset.labels[idx], dataset.patient_ids[idx],
                             dataset.files[idx], dataset.class_names)
        predicted[split_name] = (probabilities, dataset.labels[idx])
    # The run decides at the threshold chosen on validation: its figures are at that threshold, as
    # Evaluate, the model card and the CLI show them by default.
    summary["threshold"] = metrics_lib.decision_threshold(*predicted["val"], dataset.class_names)
    for split_name, (probabilities, labels) in predicted.items():
        summary[split_name] = metrics_lib.classification_metrics(probabilities, labels, dataset.class_names,
                                                                 summary["threshold"])
    summary["seconds"] = round(time.perf_counter() - started, 2)
    wall_s = run.wall_seconds() or summary["seconds"]  # None when train() runs outside execute_run
    summary["resources"] = resources_used(wall_s, [r["images_per_sec"] for r in run.history()
                                                    if r.get("images_per_sec") and not r.get("partial")],
                                          strategy)
    run.write_summary(summary)
    hparams.write_final_metrics(run.tensorboard_dir, summary, step=epochs_run)
    return summary


def fit_at_epoch(history: list[dict], epoch: int | None) -> dict:
    """How much better the evaluated model fit its training images than the validation ones, at its
    `epoch` (the best one when it was restored, else the last): train loss and accuracy as Keras logged
    them over that epoch (dropout and augmentation on), validation's, and the gaps (train - validation
    accuracy, validation - train loss; the larger, the more it overfits). Accuracies @ argmax, as the
    per-epoch curves. {} when that epoch has no row."""
    row = next((r for r in history if r.get("epoch") == epoch), None)
    if row is None:
        return {}
    train_accuracy, val_accuracy = row.get("accuracy"), row.get("val_accuracy")
    train_loss, val_loss = row.get("loss"), row.get("val_loss")
    return {"epoch": epoch, "train_accuracy": train_accuracy, "train_loss": train_loss,
            "val_accuracy": val_accuracy, "val_loss": val_loss,
            "accuracy_gap": _difference(train_accuracy, val_accuracy), "loss_gap": _difference(val_loss, train_loss)}


def _difference(a, b) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _resume(run: Run, model, config: TrainConfig) -> dict:
    """Go on from the last checkpoint: its weights and optimizer state, metrics up to its epoch."""
    state = read_json(run.checkpoint_dir / "state.json", {})
    if not state.get("epoch"):
        raise ValueError("this run has no checkpoint to resume from (it never completed an epoch)")
    if state.get("phase") == "fine_tune":
        _prepare_fine_tune(model, config)
    restore_checkpoint(run, model)
    truncate_history(run, state["epoch"])
    resumed_at = run.status().get("resumed_at_epochs", [])
    run.update_status(resumed_at_epochs=[*resumed_at, state["epoch"]], epoch=state["epoch"])
    return state


def _compile(model, config: TrainConfig, learning_rate) -> None:
    import keras
    model.compile(optimizer=make_optimizer(config, learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    # Its variables now, not inside the first traced step: variables created there make TensorFlow
    # trace the step twice (bench/startup.py: 2 s of a run's start-up); the same zeros either way.
    model.optimizer.build(model.trainable_variables)


def _prepare_fine_tune(model, config: TrainConfig) -> None:
    """Transfer learning, phase 2: unfreeze the top of the base and train on at a lower rate. A base
    trained from scratch (no pretrained weights) is trainable already and stays wholly so."""
    from core.ml import models
    params = resolve_params(config.arch, config.arch_params)
    if not models.transfer_base(model).trainable:
        models.unfreeze_top_layers(model, int(params["fine_tune_layers"]))
    _compile(model, config, config.learning_rate * float(params["fine_tune_lr_factor"]))


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


def environment_versions() -> dict:
    import keras
    import tensorflow as tf
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}
