"""The devices a run trains on: one, or several in sync (tf.distribute.MirroredStrategy: each
replica takes its share of every batch, and their gradients are summed before each update).

GPUs when the machine has them. On a machine without, several devices are the CPU split into as
many logical devices: the same code path as on GPUs (what the tests check), not a speed-up.
"""


def prepare(devices: int) -> None:
    """Before anything starts TensorFlow's runtime: without GPUs, split the CPU into `devices`
    logical devices when there are to be several (it cannot be split once the runtime runs)."""
    import tensorflow as tf
    if devices > 1 and not tf.config.list_physical_devices("GPU"):
        split_cpu(devices)


def strategy_for(devices: int):
    """The distribution strategy for `devices` (TrainConfig.devices): 0 is every GPU there is
    (mirrored when more than one, as before the setting existed), 1 the default device, more a
    MirroredStrategy over that many. Raises ValueError when the machine has fewer GPUs."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if devices == 0:
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if devices == 1:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices=device_names(devices, len(gpus)))


def device_names(count: int, gpus: int) -> list[str]:
    if gpus:
        if gpus < count:
            raise ValueError(f"devices is {count}, but this machine has {gpus} GPU(s)")
        return [f"/gpu:{i}" for i in range(count)]
    split_cpu(count)
    return [f"/cpu:{i}" for i in range(count)]


def split_cpu(count: int) -> None:
    """Make the CPU `count` logical devices; only possible before TensorFlow starts its runtime
    (a training process does this first)."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise RuntimeError(f"cannot split the CPU into {count} devices in this process: TensorFlow's runtime "
                           f"has started already ({error}); train in a fresh process (the job manager's "
                           "training process or `python -m core train`)") from None


def set_op_determinism(enabled: bool) -> None:
    """TensorFlow's op determinism on or off for this process. Public TensorFlow only turns it on;
    the off switch (for an XLA run after a deterministic one in the same process, as in tests) lives
    in tensorflow.python.framework.config, kept behind this one function."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config
    if enabled:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
