"""Recommended starting configurations: the recipes `bench/accuracy.py` measures.

Each trains in under 5 minutes on a 2-core CPU on the built-in set, and is scored on held-out
patients. The dashboard offers them as "load the recommended recipe".
"""
from __future__ import annotations

from core.training import Augmentation, TrainConfig

# Mild geometry only: chest X-rays are roughly aligned, and flips would move the heart.
_AUGMENTATION = dict(rotation_degrees=7, zoom=0.1, shift=0.05)


def recipe(task: str = "binary") -> TrainConfig:
    """Deep BatchNorm CNN at 96 px, one-cycle schedule, no early stop (one-cycle needs all epochs)."""
    return TrainConfig(
        name=f"recipe-{task}", task=task, arch="deep_bn_cnn", image_size=96, batch_size=32, epochs=15,
        optimizer="adam", learning_rate=0.003, schedule="one_cycle", early_stopping=False,
        class_weights="balanced" if task == "subtype" else "none",
        augmentation=Augmentation(**_AUGMENTATION))
