"""A run's start-up: the first training step is traced once (the optimizer's variables exist before
it, bench/startup.py measures what that saves), and a checkpoint still restores into the compiled
model with every optimizer."""
from __future__ import annotations

import numpy as np
import pytest

from core.settings.config import TrainConfig


def counting_model(traces: list):
    """A small real model whose Lambda layer counts the times Keras traces it (Python runs only then)."""
    import keras

    def counted(x):
        traces.append(1)
        return x

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(counted)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Activation("softmax")(keras.layers.Dense(2)(x))
    return keras.Model(inputs, outputs)


def test_the_first_training_step_is_traced_once():
    from core.ml.data_pipeline import make_tf_dataset
    from core.ml.training import _compile
    traces = []
    model = counting_model(traces)
    built = len(traces)  # the functional model ran it once to know its shapes
    _compile(model, TrainConfig(), 0.001)
    rng = np.random.default_rng(0)
    data = make_tf_dataset(rng.integers(0, 255, (8, 8, 8, 1), dtype=np.uint8), np.arange(8) % 2, 2, 8, True, 0)
    model.fit(data, epochs=1, shuffle=False, verbose=0)  # tf.data shuffles, as in training
    assert len(traces) - built == 1  # twice when the optimizer made its variables inside the trace


@pytest.fixture
def policy(request):
    """The global dtype policy for one test, float32 again after it."""
    import keras
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("optimizer, policy", [("adam", "float32"), ("sgd", "float32"), ("rmsprop", "float32"),
                                               ("adam", "mixed_float16")],  # Keras adds loss scaling
                         indirect=["policy"])
def test_a_checkpoint_restores_into_a_compiled_model(optimizer, policy, tmp_path):
    from core.ml.checkpoints import restore_checkpoint, save_checkpoint
    from core.ml.training import _compile
    from core.store.runs import RunStore
    config = TrainConfig(optimizer=optimizer, momentum=0.9 if optimizer != "adam" else 0.0)
    first = counting_model([])
    _compile(first, config, 0.01)
    for variable in first.optimizer.variables:  # a state that is not the zeros of a fresh optimizer
        variable.assign(np.asarray(variable) + 1)
    run = RunStore(tmp_path).create(config.to_dict(), queued=False)
    save_checkpoint(run, first, 1, {"best_value": None})
    second = counting_model([])
    _compile(second, config, 0.01)
    restore_checkpoint(run, second)  # ValueError if a second build had added variables
    assert len(second.optimizer.variables) == len(first.optimizer.variables)
    for restored, saved in zip(second.optimizer.variables, first.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved))
