"""The precision setting (core.ml.precision): auto resolves per machine, a model builds, trains a step
and predicts float32 probabilities under every policy, and a run records the policy it computed in."""
from __future__ import annotations

import numpy as np
import pytest

from core.ml import precision
from core.settings.config import PRECISIONS, TrainConfig

POLICIES = [name for name in PRECISIONS if name != "auto"]


@pytest.fixture
def restore_policy():
    """The policy is global to the process: put back float32 (what every other test builds in)."""
    import keras
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_auto_is_mixed_float16_on_a_gpu_and_the_measured_choice_on_a_cpu():
    assert precision.policy_name("auto", has_gpu=True) == "mixed_float16"
    assert precision.policy_name("auto", has_gpu=False) == precision.CPU_AUTO == "float32"
    for name in POLICIES:
        assert precision.policy_name(name, has_gpu=False) == precision.policy_name(name, has_gpu=True) == name
    assert TrainConfig().precision == "auto"
    assert TrainConfig.from_json(TrainConfig(precision="mixed_bfloat16").to_json()).precision == "mixed_bfloat16"
    with pytest.raises(ValueError):
        TrainConfig(precision="float8").validate()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_model_trains_a_step_and_predicts_float32_probabilities_under_each_policy(policy, restore_policy):
    import keras

    from core.ml import models
    from core.ml.training import build_augmentation
    from core.settings.config import Augmentation
    keras.mixed_precision.set_global_policy(policy)
    augmentation = build_augmentation(Augmentation(rotation_degrees=7, zoom=0.1, shift=0.05), seed=0)  # the recipe's
    model = models.build_model("deep_bn_cnn", 32, 1, 2, params={"width": 0.25}, augmentation=augmentation)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == keras.DTypePolicy(policy).compute_dtype
    assert conv.variable_dtype == "float32"  # weights stay float32
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1)).astype(np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)  # no tracing: fast
    assert np.isfinite(model.train_on_batch(images, np.arange(8) % 2))
    probabilities = model.predict_on_batch(images)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("setting, recorded", [("mixed_bfloat16", "mixed_bfloat16"), ("auto", None)])
def test_a_run_records_the_policy_its_setting_chose(setting, recorded, restore_policy):
    import tensorflow as tf

    from core.ml.training import configure_devices, resources_used
    configure_devices(0, setting)  # what train() does with the run's config
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert resources_used(1.0, [])["precision"] == (recorded or precision.policy_name("auto", has_gpu))


@pytest.mark.slow  # trains for real (one epoch at 32 px)
def test_a_bfloat16_run_trains_saves_and_its_model_predicts_float32(chest_folder, tmp_path, restore_policy):
    from core.ml.inference import Predictor
    from core.ml.training import execute_run
    from core.store.runs import RunStore
    from tests.conftest import tiny_folder_config
    config = tiny_folder_config(chest_folder, epochs=1, precision="mixed_bfloat16")
    run = RunStore(tmp_path / "runs").create(config.to_dict(), queued=False)
    execute_run(run, config)
    assert run.state() == "done", run.status().get("error")
    assert run.summary()["resources"]["precision"] == "mixed_bfloat16"
    assert run.config()["precision"] == "mixed_bfloat16"
    model = Predictor(run.path).model
    probabilities = model.predict(np.full((2, 32, 32, 1), 120.0, np.float32), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
