"""The GPU path: mixed precision, MirroredStrategy across devices, and what a run records of them.

On a machine with GPUs, `configure_devices` switches to mixed_float16 and, with several GPUs, to
MirroredStrategy. These tests run that code on CPU too: the mixed policy set by hand, and
MirroredStrategy over two logical CPU devices (in a process of its own, since logical devices
must be declared before TensorFlow starts).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.settings.config import TrainConfig
from core.settings.paths import PROJECT_ROOT


def visible_gpus() -> int:
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU"))


def test_a_run_records_its_device_replicas_and_precision(tiny_run):
    resources = tiny_run.summary()["resources"]
    gpus = visible_gpus()
    assert resources["precision"] == ("mixed_float16" if gpus else "float32")
    assert resources["replicas"] == (gpus if gpus > 1 else 1)
    assert resources["device"].startswith(f"{gpus} GPU" if gpus else "CPU")
    assert (resources["peak_gpu_memory_mb"] is not None) == bool(gpus)
    assert resources["xla"] is (gpus == 1)  # xla auto: Keras compiles with XLA on one GPU, not on a CPU


def test_under_mixed_precision_the_logits_and_probabilities_stay_float32():
    import keras

    from core.ml import models
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_model("seed_cnn", 32, 1, 2, params={"dense_units": 8})
        assert model.get_layer("logits").compute_dtype == "float32"
        probabilities = np.asarray(model(np.full((3, 32, 32, 1), 128.0, np.float32)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


MIRRORED_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from core.ml import data_pipeline, models, training
from core.settings.config import TrainConfig
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (48, 32, 32, 1), dtype=np.uint8)
labels = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int64)
data = data_pipeline.make_tf_dataset(images, labels, 2, config.batch_size, True, config.seed)
with strategy.scope():
    model = models.build_model(config.arch, 32, 1, 2, params=config.arch_params, dropout=config.dropout)
    training._compile(model, config, training.learning_rate_schedule(config, 6, config.epochs))
history = model.fit(data, epochs=config.epochs, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                  "predictions": data_pipeline.predict_probabilities(model, images[:4], 4).tolist()}))
"""


@pytest.mark.slow
def test_a_model_trains_under_mirrored_strategy_across_two_devices():
    config = TrainConfig(arch="seed_cnn", image_size=32, batch_size=8, epochs=2, schedule="cosine",
                         arch_params={"dense_units": 8}).validate()
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, config.to_json()], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert len(result["loss"]) == 2 and all(np.isfinite(result["loss"]))
    np.testing.assert_allclose(np.sum(result["predictions"], axis=1), 1.0, rtol=1e-5)


def test_xla_on_compiles_the_training_step_and_refuses_layers_it_cannot_compile(store, chest_folder):
    """xla "on" trains through XLA on the CPU too (giving up op determinism for that run), records
    it, and a run after it in the same process is deterministic again; zoom and shift augmentation,
    which Keras cannot compile, are refused with the reason rather than silently run without XLA."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    from core.ml.training import execute_run
    base = dict(arch="seed_cnn", image_size=32, epochs=1, batch_size=16, data_source="folder",
                data_path=str(chest_folder), arch_params={"dense_units": 8})
    compiled = {}
    for xla in ("on", "auto"):
        config = TrainConfig(**base, xla=xla).validate()
        run = store.create(config.to_dict(), name=xla)
        summary = execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
        compiled[xla] = summary["resources"]["xla"]
        assert np.isfinite(run.history()[-1]["loss"])
    assert compiled == {"on": True, "auto": visible_gpus() == 1}
    assert is_op_determinism_enabled() == (visible_gpus() == 0)
    for augmentation in ({"zoom": 0.1}, {"shift": 0.1}):
        with pytest.raises(ValueError, match="XLA cannot compile the zoom and shift augmentation layers"):
            TrainConfig.from_dict({**base, "xla": "on", "augmentation": augmentation}).validate()
    TrainConfig.from_dict({**base, "xla": "on", "augmentation": {"rotation_degrees": 10}}).validate()
