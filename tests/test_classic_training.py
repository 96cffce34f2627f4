"""Training settings of the classic chest X-ray reports (core.ml.training, core.ml.devices): more
augmentations, transfer learning's two phases, a run whose ImageNet weights are offline, and
training on two devices in sync."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from core.ml import models
from core.ml.training import _prepare_fine_tune, build_augmentation, execute_run
from core.settings.config import Augmentation, TrainConfig
from core.store.runs import RunStore
from tests.conftest import tiny_folder_config


def test_shear_and_gaussian_noise_augment_in_training_only():
    augmentation = build_augmentation(Augmentation(shear=0.3, gaussian_noise=20.0), seed=0)
    assert [type(layer).__name__ for layer in augmentation.layers] == ["RandomShear", "Rescaling", "GaussianNoise",
                                                                       "Rescaling"]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(augmentation(images, training=False)), images, atol=1e-4)
    noise_only = build_augmentation(Augmentation(gaussian_noise=20.0), seed=0)
    noise = np.asarray(noise_only(images, training=True)) - images
    assert noise.std() == pytest.approx(20.0, rel=0.1)  # in 0-255 pixel units, as declared
    assert np.abs(np.asarray(augmentation(images, training=True)) - images).mean() > 5


def test_a_model_with_shear_and_noise_saves_and_loads(tmp_path):
    augmentation = build_augmentation(Augmentation(shear=0.2, gaussian_noise=5.0), seed=0)
    model = models.build_model("seed_cnn", 32, 1, 2, {"dense_units": 8}, augmentation=augmentation)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    shears = [layer for layer in loaded.get_layer("augmentation").layers if type(layer).__name__ == "RandomShear"]
    factors = np.asarray(shears[0].get_random_transformation(np.zeros((256, 32, 32, 1)))["shear_factor"])
    # shears both ways, up to the setting, as a number (-0.2, 0.2) would draw them
    assert factors.min() < -0.1 and factors.max() > 0.1 and np.abs(factors).max() <= 0.2


def test_configs_saved_before_the_new_settings_load_with_them_off():
    saved = TrainConfig().to_dict()
    del saved["devices"], saved["augmentation"]["shear"], saved["augmentation"]["gaussian_noise"]
    loaded = TrainConfig.from_dict(saved).validate()
    assert loaded == TrainConfig() and loaded.devices == 0
    assert build_augmentation(loaded.augmentation, seed=0) is None
    assert TrainConfig.from_json(TrainConfig(devices=2, batch_size=4).to_json()).devices == 2
    with pytest.raises(ValueError, match="devices must be 0 \\(off\\) or a whole number between 1 and 16"):
        TrainConfig(devices=-1).validate()


def test_fine_tuning_unfreezes_the_top_of_a_pretrained_base_and_leaves_a_scratch_base_whole():
    keras.backend.clear_session(free_memory=False)
    config = TrainConfig(arch="transfer", arch_params={"weights": "none", "fine_tune_layers": 5})
    scratch = models.build_model("transfer", 32, 1, 2, config.arch_params)
    everything = len(scratch.trainable_weights)
    _prepare_fine_tune(scratch, config)
    assert len(scratch.trainable_weights) == everything  # nothing of a random base gets frozen
    pretrained = models.build_model("transfer", 32, 1, 2, config.arch_params)
    models.transfer_base(pretrained).trainable = False  # as ImageNet or file weights leave it
    _prepare_fine_tune(pretrained, config)
    base = models.transfer_base(pretrained)
    assert sum(layer.trainable for layer in base.layers) == 5
    assert pretrained.optimizer.learning_rate.numpy() == pytest.approx(config.learning_rate * 0.1)


@pytest.mark.slow
def test_a_run_without_imagenet_weights_trains_its_base_from_scratch_and_says_so(store, chest_folder):
    config = tiny_folder_config(chest_folder, arch="transfer", epochs=1,
                                arch_params={"weights": "imagenet", "dense_layers": [8]})
    run = store.create(config.to_dict(), name="offline")
    execute_run(run, config)
    if run.state() == "done" and not run.summary()["warnings"]:
        pytest.skip("this machine has the ImageNet weights of MobileNetV2")
    assert run.state() == "done", run.status().get("error")
    [warning] = run.status()["warnings"]
    assert "trained from scratch" in warning and run.summary()["warnings"] == [warning]
    assert f"| Warning | {warning}" in run.model_card_path.read_text()
    assert run.summary()["model"]["trainable_params"] == run.summary()["model"]["total_params"] - \
        sum(row["params"] for row in run.layer_table() if row["type"] == "BatchNormalization") // 2


@pytest.mark.slow
def test_two_devices_train_in_sync_with_a_mirrored_strategy(tmp_path, chest_folder):
    """The CPU split into two logical devices (in a fresh process, as a training process starts):
    MirroredStrategy trains the run, and the run records its two replicas."""
    runs_dir = tmp_path / "runs"
    command = [sys.executable, "-m", "core", "train", "--quiet", "--runs-dir", str(runs_dir),
               "--data-source", "folder", "--data-path", str(chest_folder), "--arch", "seed_cnn",
               "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--devices", "2",
               "--no-early-stopping", "--set", "arch_params.dense_units=8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = RunStore(runs_dir).list()
    assert run.state() == "done"
    assert json.loads(run.config_path.read_text())["devices"] == 2
    resources = run.summary()["resources"]
    assert resources["replicas"] == 2 and resources["device"].startswith("CPU")
    assert run.summary()["test"]["accuracy"] is not None
