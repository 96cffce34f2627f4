"""TrainConfig, schedules, and whole training jobs through the job manager (real Keras, small data)."""
import json
import time

import numpy as np
import pytest

from core.ml.inference import load_model
from core.ml.training import class_weight_map, learning_rate_schedule
from core.settings.config import Augmentation, TrainConfig
from core.store.runs import RunStore
from core.workers.manager import JobManager

TINY = dict(arch="seed_cnn", image_size=32, batch_size=64, epochs=2, arch_params={"dense_units": 16})


# ----------------------------------------------------------------------------- config

def test_config_round_trips_through_json():
    config = TrainConfig(name="ablation", task="subtype", image_size=96, arch="deep_bn_cnn",
                         arch_params={"width": 0.5, "dense_layers": [64, 32]}, dropout=0.4,
                         optimizer="sgd", nesterov=True, schedule="one_cycle", clipnorm=1.0,
                         augmentation=Augmentation(rotation_degrees=10, zoom=0.1, horizontal_flip=True))
    again = TrainConfig.from_json(config.to_json())
    assert again == config and isinstance(again.augmentation, Augmentation)
    assert json.loads(config.to_json())["augmentation"]["zoom"] == 0.1


def test_config_rejects_unknown_and_out_of_range_settings():
    with pytest.raises(ValueError, match="unknown TrainConfig settings: colour"):
        TrainConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="augmentation settings: spin"):
        TrainConfig.from_dict({"augmentation": {"spin": 1}})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adamax").validate()
    with pytest.raises(ValueError, match="image_size"):
        TrainConfig(image_size=16).validate()
    with pytest.raises(ValueError, match="width"):
        TrainConfig(arch="seed_cnn", arch_params={"width": 2}).validate()


def test_learning_rate_schedules():
    steps = 10
    step = learning_rate_schedule(TrainConfig(schedule="step", learning_rate=0.1, step_epochs=2), steps, 6)
    assert float(step(0)) == pytest.approx(0.1) and float(step(19)) == pytest.approx(0.1)
    assert float(step(20)) == pytest.approx(0.05)
    one_cycle = learning_rate_schedule(TrainConfig(schedule="one_cycle", learning_rate=0.01), steps, 10)
    rates = [float(one_cycle(i)) for i in range(100)]
    assert rates[0] == pytest.approx(0.01 / 25) and max(rates) == pytest.approx(0.01, rel=1e-3)
    assert int(np.argmax(rates)) == 30 and rates[-1] < 0.001
    cosine = learning_rate_schedule(TrainConfig(schedule="cosine", learning_rate=0.01), steps, 10)
    assert float(cosine(0)) == pytest.approx(0.01) and float(cosine(100)) == pytest.approx(1e-6, rel=1e-2)
    assert learning_rate_schedule(TrainConfig(schedule="plateau", learning_rate=0.02), steps, 10) == 0.02


def test_balanced_class_weights():
    weights = class_weight_map(np.array([0, 1, 1, 1]), 2, "balanced")
    assert weights == {0: pytest.approx(2.0), 1: pytest.approx(2 / 3)}
    assert class_weight_map(np.array([0, 1]), 2, "none") is None


# ----------------------------------------------------------------------------- jobs

@pytest.mark.slow
def test_short_job_on_the_builtin_set_reaches_done_and_writes_every_artifact(manager):
    run_id = manager.submit(TrainConfig(**TINY, name="tiny"))
    assert manager.wait(run_id, timeout=300) == "done", manager.store.get(run_id).status()
    run = manager.store.get(run_id)
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "status.json", "metrics.jsonl", "summary.json", "model.keras",
            "predictions_val.npz", "predictions_test.npz", "tensorboard"} <= names
    assert list(run.tensorboard_dir.rglob("events.out.tfevents.*"))
    history = run.history()
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_sec"} <= set(history[0])
    summary = run.summary()
    assert summary["test"]["n"] == len(run.predictions("test")["labels"]) > 500
    assert summary["test"]["auc"] > 0.8  # 2 epochs at 32 px already separate the classes
    assert summary["model"]["trainable_params"] > 0 and summary["model"]["macs"] > 0
    assert summary["split"]["overlap"] == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert 0 < summary["threshold"] < 1
    environment = run.environment()
    assert environment["keras"].startswith("3.") and environment["tensorflow"] and environment["python"]
    assert environment["dataset_hash"] == summary["dataset"]["content_hash"] and environment["dataset_images"] == 4488
    test_patients = set(run.predictions("test")["patient_ids"])
    assert not test_patients & set(run.predictions("val")["patient_ids"])
    progress = manager.progress(run_id)
    assert progress["phase"] == "done" and len(progress["history"]) == 2 and progress["images_per_sec"] > 0
    # The saved model reloads safely and reproduces the saved test predictions.
    model = load_model(run)
    assert model.layers[-1].name == "probabilities" and model.get_layer("logits") is not None


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_metrics(manager, chest_folder):
    config = TrainConfig(**{**TINY, "epochs": 2}, data_source="folder", data_path=str(chest_folder), seed=7,
                         augmentation=Augmentation(rotation_degrees=5, zoom=0.1))
    first, second = manager.submit(config), manager.submit(config)
    assert manager.wait(first, 120) == manager.wait(second, 120) == "done"
    a, b = (manager.store.get(r) for r in (first, second))
    assert [row["loss"] for row in a.history()] == [row["loss"] for row in b.history()]
    per_epoch_validation = ("val_loss", "val_accuracy", "val_auc", "val_macro_f1")
    assert [[row[k] for k in per_epoch_validation] for row in a.history()] == \
        [[row[k] for k in per_epoch_validation] for row in b.history()]
    assert a.first_epoch_batches() == b.first_epoch_batches() != []
    np.testing.assert_array_equal(a.predictions("test")["probabilities"], b.predictions("test")["probabilities"])


@pytest.mark.slow
def test_cancel_stops_at_the_next_batch_and_keeps_what_was_learned(manager):
    run_id = manager.submit(TrainConfig(**{**TINY, "epochs": 40, "batch_size": 16}))
    deadline = time.monotonic() + 120
    while manager.progress(run_id)["epoch"] < 1 or manager.progress(run_id)["batch"] < 5:
        assert time.monotonic() < deadline, manager.progress(run_id)
        time.sleep(0.05)
    asked = manager.progress(run_id)
    assert not manager.stop_requested(run_id)
    assert manager.cancel(run_id)
    assert manager.stop_requested(run_id)  # the live view shows "stopping" until the run ends
    assert manager.wait(run_id, 120) == "cancelled"
    run = manager.store.get(run_id)
    assert run.has_model() and run.predictions("test") is not None
    assert len(run.history()) >= 1 and run.summary()["cancelled"] is True
    # Stopped after a batch of the epoch it was in, not at the end of that epoch (~200 batches).
    last = run.history()[-1]
    assert last["epoch"] == asked["epoch"] + 1 and last["partial"] is True
    assert asked["batch"] <= last["batches_done"] < asked["batches"]


@pytest.mark.slow
def test_queue_runs_one_job_at_a_time_and_a_queued_job_can_be_cancelled(manager, chest_folder):
    config = TrainConfig(**TINY, data_source="folder", data_path=str(chest_folder))
    first, second, third = (manager.submit(config) for _ in range(3))
    assert manager.store.get(third).state() == "queued"
    manager.cancel(third)
    assert manager.store.get(third).state() == "cancelled"
    assert not manager.stop_requested(first)
    assert not manager.stop_requested("no-such-run")
    assert manager.wait(first, 120) == "done" and manager.wait(second, 120) == "done"
    a, b = manager.store.get(first).status(), manager.store.get(second).status()
    assert b["started"] >= a["finished"]  # one at a time
    assert manager.store.get(third).state() == "cancelled" and not manager.store.get(third).history()
    assert manager.active() == []


@pytest.mark.slow
def test_a_failing_job_is_marked_failed_and_the_manager_keeps_working(manager, chest_folder):
    missing = manager.submit(TrainConfig(**TINY, data_source="folder", data_path=str(chest_folder / "gone")))
    assert manager.wait(missing, 60) == "failed"
    status = manager.store.get(missing).status()
    assert "does not exist" in status["error"] and "Traceback" in status["traceback"]
    # A failure inside Keras: a weights file of the base that is not there.
    no_weights = manager.submit(TrainConfig(**{**TINY, "arch": "transfer",
                                               "arch_params": {"weights": "file", "weights_file": "/gone.h5"}}))
    assert manager.wait(no_weights, 120) == "failed"
    assert "'/gone.h5' could not be loaded into mobilenet_v2" in manager.store.get(no_weights).status()["error"]
    healthy = manager.submit(TrainConfig(**{**TINY, "epochs": 1}))
    assert manager.wait(healthy, 300) == "done"


def test_invalid_config_is_refused_at_submit(manager):
    with pytest.raises(ValueError, match="batch_size"):
        manager.submit(TrainConfig(batch_size=0))
    assert manager.store.list() == []


@pytest.mark.slow
def test_two_concurrent_jobs_when_configured(tmp_path, chest_folder, monkeypatch):
    monkeypatch.setenv("CXR_MAX_CONCURRENT_JOBS", "2")
    jobs = JobManager(RunStore(tmp_path / "parallel"))
    try:
        config = TrainConfig(**{**TINY, "epochs": 60}, data_source="folder", data_path=str(chest_folder))
        first, second = jobs.submit(config), jobs.submit(config)
        assert jobs.wait(first, 300) == "done" and jobs.wait(second, 300) == "done"
        a, b = (jobs.store.get(r).status() for r in (first, second))
        # With one worker the second would start only after the first finished.
        assert b["started"] < a["finished"] and a["started"] < b["finished"]
    finally:
        jobs.shutdown()


def test_stop_is_offered_only_while_stopping_still_helps():
    from core.workers.manager import stop_option
    assert stop_option("queued", "queued", False) == "stop"
    assert stop_option("running", "loading data", False) == "stop"
    assert stop_option("running", "training", False) == "stop"
    assert stop_option("running", "running", False) == "stop"  # a run of another process: phase unknown
    assert stop_option("running", "evaluating", False) == "finishing"
    assert stop_option("running", "training", True) == "stopping"
    assert stop_option("running", "evaluating", True) == "stopping"
    assert stop_option("cancelled", "cancelled", True) == "none"
    assert stop_option("done", "done", False) == "none"


def test_the_progress_file_catches_up_with_a_change_that_came_too_soon(tmp_path):
    """Short epochs: the batches after an epoch's start come within the write interval. The file
    must still show them once the interval is up, not the epoch's batch 0 until the next epoch."""
    from core.ml.run_control import Progress
    from core.files import read_json
    path = tmp_path / "progress.json"
    progress = Progress(epochs=300, path=path)
    progress.update(phase="training", epoch=4, batch=0, batches=3)  # a new phase: written at once
    assert read_json(path)["batch"] == 0
    for batch in (1, 2, 3):
        progress.update(batch=batch)
    assert read_json(path)["batch"] == 0  # throttled: at most twice a second
    time.sleep(Progress.WRITE_INTERVAL_S + 0.3)
    assert read_json(path)["batch"] == 3
    progress.update(phase="evaluating")
    time.sleep(Progress.WRITE_INTERVAL_S + 0.3)
    assert read_json(path)["phase"] == "evaluating"


@pytest.mark.slow
def test_restore_best_evaluates_and_saves_the_best_epoch_not_the_last(manager, chest_folder):
    # A high learning rate makes the validation loss jump about, so the best epoch is not the last.
    config = TrainConfig(**{**TINY, "epochs": 4}, data_source="folder", data_path=str(chest_folder),
                         learning_rate=0.05, restore_best=True)
    run_id = manager.submit(config)
    assert manager.wait(run_id, 120) == "done", manager.store.get(run_id).status()
    run = manager.store.get(run_id)
    losses, summary = [row["val_loss"] for row in run.history()], run.summary()
    assert summary["best_epoch"] == 1 + int(np.argmin(losses)) < len(losses)
    assert losses[-1] > min(losses) * 1.1
    # The evaluated (and saved) model is the best epoch's: its validation loss is the best one.
    assert summary["val"]["log_loss"] == pytest.approx(min(losses), rel=1e-4)


def test_focal_loss_down_weights_confident_right_images_and_trains_a_run(manager, chest_folder):
    """The focal loss is Keras' CategoricalFocalCrossentropy at alpha 1: gamma 0 is cross-entropy,
    gamma 2 shrinks a confident right image's loss far more than a wrong one's; a run trained with it
    is done and its model card names the loss it minimised."""
    from core.ml.model_card import loss_text
    from core.ml.training import make_loss
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype="float32")
    probabilities = np.array([[0.95, 0.03, 0.02], [0.6, 0.3, 0.1]], dtype="float32")

    def per_image(config):
        loss = make_loss(config)
        return np.array([float(loss(targets[i:i + 1], probabilities[i:i + 1])) for i in range(2)])
    crossentropy = per_image(TrainConfig(**TINY))
    np.testing.assert_allclose(per_image(TrainConfig(**TINY, loss="focal", focal_gamma=0.0)), crossentropy, rtol=1e-5)
    focal = per_image(TrainConfig(**TINY, loss="focal", focal_gamma=2.0))
    kept = focal / crossentropy  # (1 - p)^2: 0.0025 for the right image at 0.95, 0.49 for the wrong one
    np.testing.assert_allclose(kept, [0.05 ** 2, 0.7 ** 2], rtol=1e-4)

    config = TrainConfig(**TINY, data_source="folder", data_path=str(chest_folder), loss="focal", focal_gamma=1.5)
    run_id = manager.submit(config)
    assert manager.wait(run_id, 120) == "done", manager.store.get(run_id).status().get("error")
    assert loss_text(manager.store.get(run_id).config()) == "focal (gamma 1.5)"
    assert loss_text({}) == "cross-entropy"  # a run saved before the setting existed


def test_mixup_blends_images_and_labels_alike_anew_each_epoch_and_the_same_for_one_seed(manager, chest_folder):
    """Each mixed image is w * image + (1 - w) * a batch partner's, and its label the same blend of the
    two one-hot labels (so it sums to 1); another epoch draws anew, the same seed draws the same; a
    run with mixup (and no augmentation layer) trains to done."""
    from core.ml.data_pipeline import make_tf_dataset, with_mixup
    from core.ml.training import build_augmentation
    count = 16
    images = np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
    labels = np.arange(count) % 3

    def epochs(seed):
        batches = with_mixup(make_tf_dataset(images, labels, 3, 8, False, 0), 0.4, seed)
        return [[(x.numpy(), y.numpy()) for x, y in batches] for _ in range(2)]

    first, again = epochs(1), epochs(1)
    for (x, y), (x0, y0) in zip(first[0], again[0]):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)
    for x, y in first[0] + first[1]:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        pixel = x[:, 0, 0, 0]  # each image is one grey value: its own index blended with a partner's
        assert np.all((pixel >= 0) & (pixel <= count - 1)) and np.allclose(x, pixel[:, None, None, None])
    assert not np.array_equal(first[0][0][0], first[1][0][0])  # a new draw each epoch
    assert any(not np.allclose(y.max(axis=1), 1.0) for _, y in first[0])  # labels really are blended
    assert build_augmentation(Augmentation(mixup=0.2), 0) is None  # not a layer of the model

    config = TrainConfig(**TINY, data_source="folder", data_path=str(chest_folder),
                         augmentation=Augmentation(mixup=0.2))
    run_id = manager.submit(config)
    assert manager.wait(run_id, 120) == "done", manager.store.get(run_id).status().get("error")
    assert np.isfinite(manager.store.get(run_id).history()[-1]["loss"])


def _dense_problem(config: TrainConfig):
    """A tiny dense model compiled with the run's optimizer (its variables built, as training builds
    them), and 40 points to fit: (model, x, y), the same every call."""
    import keras

    from core.ml.training import make_optimizer
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=make_optimizer(config, 0.1), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model, x, y


def _trained_with_averaging(config: TrainConfig, stop_after_epoch: int | None):
    """The tiny dense model fitted 3 epochs with the run's averaging callbacks; the model's final weights,
    the weights the model held at each epoch's end, and the raw weights after every step."""
    import keras

    from core.ml.callbacks import weight_averaging
    model, x, y = _dense_problem(config)
    steps, at_epoch_end = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(self.model.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(self.model.get_weights())
            if epoch == stop_after_epoch:
                self.model.stop_training = True
    model.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0,
              callbacks=weight_averaging(config, [Record()], None))
    return model.get_weights(), at_epoch_end, steps


def _moving_average(steps: list, momentum: float) -> list:
    average = steps[0]  # Keras' first step takes the weights as they are
    for weights in steps[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


@pytest.mark.parametrize("stop_after_epoch", [None, 1])
def test_weight_averaging_validates_and_keeps_the_moving_average(stop_after_epoch):
    """ema_momentum: every epoch's end (what is validated and saved) and the end of training hold the
    exponential moving average of the step weights, also when a callback stops training early."""
    config = TrainConfig(**TINY, ema_momentum=0.8)
    final, at_epoch_end, steps = _trained_with_averaging(config, stop_after_epoch)
    per_epoch = len(steps) // len(at_epoch_end)
    for epoch, held in enumerate(at_epoch_end):
        expected = _moving_average(steps[:(epoch + 1) * per_epoch], 0.8)
        for got, want in zip(held, expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(final, _moving_average(steps, 0.8)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(final[0], steps[-1][0])  # the average, not the last step's weights
    plain_final, _, plain_steps = _trained_with_averaging(TrainConfig(**TINY), stop_after_epoch)
    np.testing.assert_allclose(plain_final[0], plain_steps[-1][0])  # off: the last step's weights


def test_a_fit_resumed_from_an_averaged_checkpoint_trains_on_the_step_weights():
    """An epoch's checkpoint holds the average in the model and the step weights in the optimizer: a
    resumed fit swaps them back first, so it takes the very steps of a fit that never stopped."""
    import keras

    from core.ml.callbacks import weight_averaging
    config = TrainConfig(**TINY, ema_momentum=0.8)
    checkpoint, steps = {}, {"whole": [], "resumed": []}

    class Record(keras.callbacks.Callback):  # after the swap, as the run's checkpointing callback is
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_train_batch_end(self, batch, logs=None):
            steps[self.name].append(self.model.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0 and self.name == "whole":
                checkpoint.update(weights=self.model.get_weights(),
                                  optimizer=[np.array(v) for v in self.model.optimizer.variables])

    def fit(model, name, resumed, initial_epoch):
        model.fit(x, y, batch_size=10, epochs=2, initial_epoch=initial_epoch, shuffle=False, verbose=0,
                  callbacks=weight_averaging(config, [Record(name)], resumed))
        return model.get_weights()
    model, x, y = _dense_problem(config)
    whole = fit(model, "whole", None, 0)
    model, _, _ = _dense_problem(config)
    model.set_weights(checkpoint["weights"])
    for variable, value in zip(model.optimizer.variables, checkpoint["optimizer"]):
        variable.assign(value)
    resumed = fit(model, "resumed", {"epoch": 1}, 1)
    assert len(steps["resumed"]) == 4
    for taken, expected in zip(steps["resumed"], steps["whole"][4:]):
        for got, want in zip(taken, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(resumed, whole):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_a_run_with_weight_averaging_tests_the_average_it_validated(manager, chest_folder):
    """Through the job manager: the kept (best) epoch's validation loss is what the saved model scores,
    so what was validated, saved and tested is one set of weights; the model card names the averaging."""
    from core.ml.model_card import averaging_text
    config = TrainConfig(**{**TINY, "epochs": 3}, data_source="folder", data_path=str(chest_folder),
                         ema_momentum=0.9, restore_best=True)
    run_id = manager.submit(config)
    assert manager.wait(run_id, 120) == "done", manager.store.get(run_id).status().get("error")
    run = manager.store.get(run_id)
    losses, summary = [row["val_loss"] for row in run.history()], run.summary()
    assert summary["val"]["log_loss"] == pytest.approx(min(losses), rel=1e-4)
    assert averaging_text(run.config()) == "exponential moving average, momentum 0.9"
    assert averaging_text({}) == "off"  # a run saved before the setting existed
