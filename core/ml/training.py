"""One run, end to end: TrainConfig -> data -> model -> fit -> predictions, metrics and artifacts.

`execute_run` is what a training process (core.workers.process) and the CLI's foreground run call.
The pieces it puts together: run_control.py (progress and Stop), data_pipeline.py (data and batches),
callbacks.py (what runs inside fit), checkpoints.py (resuming). TensorFlow is imported inside
functions so that importing this module stays fast.
"""
from __future__ import annotations

import math
import os
import platform
import time
import traceback

import numpy as np

from core.data import datasets as data_lib
from core.data import splits
from core.ml.callbacks import (EpochScoring, ValidationScorer, _make_job_callback, early_stopping, epoch_tensorboard,
                               weight_averaging)
from core.ml.checkpoints import restore_best_model, restore_checkpoint, truncate_history
from core.ml.data_pipeline import choose_data_pipeline, load_data, predict_rows, split_batches, with_mixup
from core.ml.run_control import Cancelled, RunControl
from core.settings.architectures import fitted_by_scikit_learn, resolve_params
from core.settings.config import Augmentation, TrainConfig
from core.files import read_json
from core.store.run_folder import Run


def class_weight_map(labels: np.ndarray, num_classes: int, mode: str) -> dict | None:
    if mode != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    mapping = {int(c): 1.0 for c in range(num_classes)}
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


def build_augmentation(aug: Augmentation, seed: int):
    """A keras.Sequential of preprocessing layers (active in training only), or None."""
    if not aug.layers():
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
    if config.ema_momentum:
        common.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(**{"weight_decay": 1e-4, **common})
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov, **common)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=config.momentum, **common)
    return keras.optimizers.Adagrad(**common)


def make_loss(config: TrainConfig):
    """The training loss of the `loss` setting, with the run's label smoothing."""
    import keras
    if config.loss == "focal":
        # alpha 1: Keras' 0.25 only scales every term, which would shrink the loss curve, not reweight it.
        return keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=config.focal_gamma,
                                                         label_smoothing=config.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


def configure_devices(devices: int = 0, precision: str = "auto", xla: str = "auto"):
    """The `precision` policy (core.ml.precision: auto is mixed precision on GPUs), op determinism on
    CPU (unless XLA is asked for: Keras compiles nothing with XLA while determinism is on), and the
    distribution strategy for `devices` (core.ml.devices: MirroredStrategy over more than one)."""
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
    # Reproducible on CPU: the same config and seed give the same metrics.
    devices_lib.set_op_determinism(not gpus and xla != "on")
    return devices_lib.strategy_for(devices)


def resources_used(wall_s: float, images_per_sec: list[float], strategy=None, model=None) -> dict:
    """Peak memory of this process (and of its GPUs, summed), steady images/s, wall time (all the
    run's segments: Run.wall_seconds), device, the replicas training in sync (MirroredStrategy: one
    per GPU), the precision policy and whether the model's steps were XLA-compiled."""
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
            "precision": keras.mixed_precision.global_policy().name,
            "xla": bool(model.jit_compile) if model is not None else None}


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
    linear = fitted_by_scikit_learn(config.arch)  # no epochs: a solver run to convergence per C
    now = time.time()
    fields = {"state": "running", "epochs": 0 if linear else config.epochs, "finished": None, "error": None,
              "segment_started": now}
    if not resume:
        fields.update(started=now, epoch=0, trained_s=0.0)
    run.update_status(**fields)
    try:
        summary = train_linear(run, config, control) if linear else train(run, config, control, resume=resume)
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

    config.validate()
    devices.prepare(config.devices)  # first: TensorFlow's runtime must not have started
    started = time.perf_counter()
    if not resume:  # a resumed run's settings are already there
        hparams.write_settings(run.tensorboard_dir, config, trial_id=run.id)
    dataset, split, pipeline = load_run_data(run, config, control)
    num_classes = len(dataset.class_names)
    y_train = dataset.labels[split.train]
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    fine_tune_epochs = int(resolve_params(config.arch, config.arch_params).get("fine_tune_epochs", 0)) \
        if config.arch == "transfer" else 0
    total_epochs = config.epochs + fine_tune_epochs

    keras.utils.set_random_seed(config.seed)
    strategy = configure_devices(config.devices, config.precision, config.xla)
    train_ds = split_batches(dataset, split.train, num_classes, config.batch_size, True, config.seed, pipeline)
    if config.augmentation.mixup:
        train_ds = with_mixup(train_ds, config.augmentation.mixup, config.seed)
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
                  callbacks=weight_averaging(config, callbacks, resumed), class_weight=class_weight,
                  shuffle=False, verbose=0)  # tf.data shuffles
        epochs_done = len(run.history())
        if fine_tune_epochs and not job_callback.cancelled and not model.stop_training:
            job_callback.phase, job_callback.fine_tune_start = "fine_tune", epochs_done
            _prepare_fine_tune(model, config)
    else:  # resumed during fine-tuning
        job_callback.phase, job_callback.fine_tune_start = "fine_tune", resumed["fine_tune_start"]
    if job_callback.phase == "fine_tune":
        # A new optimizer, so new averaging callbacks; resumed only when the checkpoint is of this phase.
        averaged = weight_averaging(config, callbacks, resumed if resumed and resumed.get("phase") == "fine_tune"
                                    else None)
        model.fit(train_ds, initial_epoch=epochs_done, epochs=job_callback.fine_tune_start + fine_tune_epochs,
                  callbacks=averaged, class_weight=class_weight, shuffle=False, verbose=0)
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
               "dataset": data_lib.dataset_summary(dataset), "split": splits.split_report_dict(split.report)}
    summary.update(halving.summary_fields(halver))
    summary["overfitting"] = fit_at_epoch(run.history(), job_callback.best_epoch if restored else epochs_run)
    summary["warnings"] = notes
    if config.monitor != "val_loss":
        summary["best_val_loss"] = min((r.get("val_loss") for r in run.history() if r.get("val_loss") is not None),
                                       default=None)
    summary["data_pipeline"] = pipeline
    summary.update(evaluate_splits(run, model, dataset, split, config.batch_size, pipeline)[0])
    summary["seconds"] = round(time.perf_counter() - started, 2)
    wall_s = run.wall_seconds() or summary["seconds"]  # None when train() runs outside execute_run
    summary["resources"] = resources_used(wall_s, [r["images_per_sec"] for r in run.history()
                                                    if r.get("images_per_sec") and not r.get("partial")],
                                          strategy, model)
    run.write_summary(summary)
    hparams.write_final_metrics(run.tensorboard_dir, summary, step=epochs_run)
    return summary


def train_linear(run: Run, config: TrainConfig, control: RunControl) -> dict:
    """A logistic regression run (core.ml.classic): scikit-learn fits each C of the grid on the training
    rows' pixels and keeps the one of the lowest validation log-loss; its weights fill the perceptron's
    Keras graph, which is saved, predicts and is scored as every run's model. Raises on error."""
    import keras
    import sklearn

    from core.ml import classic, hparams, models
    config.validate()
    started = time.perf_counter()
    hparams.write_settings(run.tensorboard_dir, config, trial_id=run.id)
    dataset, split, pipeline = load_run_data(run, config, control, scikit_learn=sklearn.__version__)
    num_classes, params = len(dataset.class_names), resolve_params(config.arch, config.arch_params)
    rows = {name: split.indices(name) for name in ("train", "val")}
    pixels = {name: classic.pixel_features(dataset.images[idx]) for name, idx in rows.items()}
    labels = {name: dataset.labels[idx] for name, idx in rows.items()}
    control.progress.update(phase="fitting", epochs=0, batches=0)
    try:
        fitted = classic.fit_logistic_regression(
            pixels["train"], labels["train"], pixels["val"], labels["val"], num_classes, params["penalty"],
            params["c_grid"], config.seed, class_weight_map(labels["train"], num_classes, config.class_weights),
            progress=lambda done, total, text: control.progress.update(fit=done, fits=total, fit_label=text),
            cancel=control.should_stop)
    except classic.FitCancelled:
        raise Cancelled() from None
    keras.mixed_precision.set_global_policy("float32")  # the weights as fitted, not rounded to float16
    model = models.build_model(config.arch, config.image_size, config.channels, num_classes, config.arch_params)
    model.get_layer("logits").set_weights(list(classic.logit_weights(fitted.model, num_classes)))
    run.write_layer_table(models.layer_table(model))
    run.save_model(model)
    control.progress.update(phase="evaluating")
    train_probabilities = predict_rows(model, dataset, rows["train"], config.batch_size, pipeline)
    summary = {"best_epoch": None, "epochs_run": 0, "cancelled": False, "stopped_early": False,
               "model": models.model_stats(model), "class_names": dataset.class_names,
               "dataset": data_lib.dataset_summary(dataset), "split": splits.split_report_dict(split.report),
               "warnings": [] if fitted.converged else [
                   f"The solver did not converge for C = {fitted.c:g} within its iterations: the weights are "
                   f"close to, not at, the optimum."],
               "data_pipeline": pipeline,
               "logistic_regression": {"penalty": params["penalty"], "C": fitted.c, "grid": fitted.grid}}
    scores, predicted = evaluate_splits(run, model, dataset, split, config.batch_size, pipeline)
    summary.update(scores)
    summary["overfitting"] = fit_gaps(None, *argmax_fit(train_probabilities, labels["train"]),
                                      *argmax_fit(*predicted["val"]))
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["resources"] = resources_used(run.wall_seconds() or summary["seconds"], [])
    run.write_summary(summary)
    hparams.write_final_metrics(run.tensorboard_dir, summary, step=0)
    return summary


def load_run_data(run: Run, config: TrainConfig, control: RunControl, **versions) -> tuple:
    """The run's dataset, split and data pipeline, with the environment it was trained in (the
    libraries' `versions` added) written to the run."""
    control.progress.update(phase="loading data")
    try:
        dataset, split = load_data(config, control.progress, cancel=control.should_stop)
    except data_lib.LoadCancelled:
        raise Cancelled() from None
    pipeline = choose_data_pipeline(config, dataset)
    run.write_environment({**environment_versions(), **versions, "dataset_hash": dataset.content_hash,
                           "dataset_source": dataset.report.source, "dataset_images": len(dataset),
                           "data_pipeline": pipeline})
    if control.should_stop():
        raise Cancelled()
    return dataset, split, pipeline


def evaluate_splits(run: Run, model, dataset, split, batch_size: int, pipeline: str) -> tuple[dict, dict]:
    """Predict the validation and test rows, save the predictions, and score them at the threshold
    chosen on validation (as Evaluate, the model card and the CLI show them by default):
    ({threshold, val, test}, {split: (probabilities, labels)})."""
    from core.ml import metrics as metrics_lib
    predicted = {}
    for split_name in ("val", "test"):
        idx = split.indices(split_name)
        probabilities = predict_rows(model, dataset, idx, batch_size, pipeline)
        run.save_predictions(split_name, probabilities, dataset.labels[idx], dataset.patient_ids[idx],
                             dataset.files[idx], dataset.class_names)
        predicted[split_name] = (probabilities, dataset.labels[idx])
    threshold = metrics_lib.decision_threshold(*predicted["val"], dataset.class_names)
    return {"threshold": threshold, **{
        split_name: metrics_lib.classification_metrics(probabilities, labels, dataset.class_names, threshold)
        for split_name, (probabilities, labels) in predicted.items()}}, predicted


def argmax_fit(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy @ argmax and cross-entropy (mean log-loss) of predictions: how well they fit."""
    from sklearn.metrics import log_loss
    accuracy = float((probabilities.argmax(1) == labels).mean())
    return accuracy, float(log_loss(labels, probabilities, labels=np.arange(probabilities.shape[1])))


def fit_at_epoch(history: list[dict], epoch: int | None) -> dict:
    """How much better the evaluated model fit its training images than the validation ones, at its
    `epoch` (the best one when it was restored, else the last): train loss and accuracy as Keras logged
    them over that epoch (dropout and augmentation on), validation's, and the gaps (train - validation
    accuracy, validation - train loss; the larger, the more it overfits). Accuracies @ argmax, as the
    per-epoch curves. {} when that epoch has no row."""
    row = next((r for r in history if r.get("epoch") == epoch), None)
    if row is None:
        return {}
    return fit_gaps(epoch, row.get("accuracy"), row.get("loss"), row.get("val_accuracy"), row.get("val_loss"))


def fit_gaps(epoch: int | None, train_accuracy, train_loss, val_accuracy, val_loss) -> dict:
    """A run's `overfitting` record: the fit on training and validation images, and the gaps."""
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
                  loss=make_loss(config),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile={"auto": "auto", "on": True, "off": False}[config.xla])
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


def environment_versions() -> dict:
    import keras
    import tensorflow as tf
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}
