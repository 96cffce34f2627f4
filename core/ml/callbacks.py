"""What runs inside Keras' fit for a run: the job callback (progress and Stop per batch; per epoch the
validation scores, metrics.jsonl, the best model and a checkpoint; the first epoch batch by batch),
the validation scorer it calls, resumable early stopping, an epoch-only TensorBoard and weight averaging."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from core.data import datasets as data_lib
from core.ml.checkpoints import save_checkpoint
from core.ml.data_pipeline import predict_rows
from core.ml.run_control import RunControl
from core.settings.config import TrainConfig
from core.files import write_json
from core.store.run_folder import Run


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


def weight_averaging(config: TrainConfig, callbacks: list, resumed: dict | None) -> list:
    """A fit's callbacks, with `ema_momentum` between two for the weight average. Keras' SwapEMAWeights
    goes first, so that from each epoch's end to the next one's start the model holds the averaged
    weights: what is validated, kept as the best model and checkpointed."""
    if not config.ema_momentum:
        return list(callbacks)
    import keras
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    # A checkpoint holds the average in the model and the last step's weights in the optimizer:
    # the first epoch of a resumed run swaps them back before it trains.
    swap._ema_weights_in_model = bool(resumed)

    class KeepAverageWhenStopped(keras.callbacks.Callback):
        """SwapEMAWeights keeps the average at the end of fit only after the last planned epoch
        (checked against Keras 3.15); a run stopped earlier (early stopping, halving, Stop) would end
        with the last step's weights. Last in the list, this sees every callback's decision to stop."""

        def on_epoch_end(self, epoch, logs=None):
            if self.model.stop_training and epoch != self.params["epochs"] - 1:
                swap._finalize_ema_values()

    return [swap, *callbacks, KeepAverageWhenStopped()]


def current_learning_rate(optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


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
