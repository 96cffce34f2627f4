"""A run in TensorBoard's HParams dashboard: its settings at the start, its final metrics at the end.

Both go to the run's tensorboard/ folder (a TensorBoard "session" named <run id>/tensorboard under
`tensorboard --logdir <runs folder>`); Keras' epoch curves sit below it in train/ and validation/,
so the dashboard also offers them as metrics. No experiment summary (hp.hparams_config) is written:
the dashboard would take one run's at random and hide the settings other architectures have; without
it, it gathers every run's settings and metrics itself.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager

from core.settings.architectures import built_params
from core.settings.config import TrainConfig, flatten_settings

# The final metrics, as "hparams/<split>_<name>" scalars: name -> key in classification_metrics.
FINAL_METRICS = {"accuracy": "accuracy", "auc": "auc", "macro_f1": "macro_f1", "loss": "log_loss"}
METRIC_PREFIX = "hparams/"


def flat_settings(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The run's settings as HParams values: nested ones as "augmentation.zoom" and
    "arch_params.width" (the architecture's defaults included), lists as JSON text; one "dropout",
    the rate the model was built with; unset (None) settings are left out."""
    params = built_params(config.arch, config.arch_params, config.dropout)
    dropout = params.pop("dropout", None)
    flat = flatten_settings({**config.to_dict(), "arch_params": params, "dropout": dropout})
    return {name: hparam_value(value) for name, value in sorted(flat.items()) if value is not None}


def hparam_value(value) -> bool | int | float | str:
    """bool, int, float and str as they are (numpy numbers made plain); anything else as JSON text."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        plain = value.item() if hasattr(value, "item") else value
        if isinstance(plain, (bool, int, float)):
            return plain
    return json.dumps(value, default=str)


def final_metric_values(summary: dict) -> dict[str, float]:
    """{"hparams/test_auc": 0.97, ...}: accuracy, AUC, macro-F1 and log loss of the val and test
    splits, as far as the summary has them (finite numbers only), and the decision threshold the
    accuracies and macro-F1 were computed at ("hparams/decision_threshold"; absent: argmax)."""
    values = {}
    threshold = (summary.get("test") or summary.get("val") or {}).get("threshold")
    if isinstance(threshold, (int, float)):
        values[f"{METRIC_PREFIX}decision_threshold"] = float(threshold)
    for split in ("val", "test"):
        scores = summary.get(split) or {}
        for name, key in FINAL_METRICS.items():
            value = scores.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                values[f"{METRIC_PREFIX}{split}_{name}"] = float(value)
    return values


def write_settings(log_dir, config: TrainConfig, trial_id: str) -> None:
    """The session start of this run: its flattened settings (hp.hparams)."""
    from tensorboard.plugins.hparams import api as hp
    with _writer(log_dir) as writer, writer.as_default():
        hp.hparams(flat_settings(config), trial_id=trial_id)


def write_final_metrics(log_dir, summary: dict, step: int) -> None:
    """The final metrics as scalars the dashboard finds in the session's own folder."""
    import tensorflow as tf
    values = final_metric_values(summary)
    if not values:
        return
    with _writer(log_dir) as writer, writer.as_default():
        for tag, value in values.items():
            tf.summary.scalar(tag, value, step=step)


@contextmanager
def _writer(log_dir):
    """A summary writer on `log_dir`, closed (so its events are on disk) when the block ends."""
    import tensorflow as tf
    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        yield writer
    finally:
        writer.close()
