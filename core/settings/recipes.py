"""Recommended starting configurations: the recipes `bench/accuracy.py` measures.

Each trains in under 5 minutes on a 2-core CPU on the built-in set, and is scored on held-out
patients. The dashboard offers them as "load the recommended recipe".
"""
from __future__ import annotations

from core.settings.config import Augmentation, TrainConfig

# Mild geometry only: chest X-rays are roughly aligned, and flips would move the heart.
_AUGMENTATION = dict(rotation_degrees=7, zoom=0.1, shift=0.05)


def recipe(task: str = "binary") -> TrainConfig:
    """Deep BatchNorm CNN (width 0.75) at 96 px, 20 epochs of one-cycle (no early stop: one-cycle needs
    every epoch), label smoothing 0.1; balanced class weights for the 3-class task, whose viral class
    is the hardest."""
    return TrainConfig(
        name=f"recipe-{task}", task=task, arch="deep_bn_cnn", arch_params={"width": 0.75},
        image_size=96, batch_size=32, epochs=20,
        optimizer="adam", learning_rate=0.003, schedule="one_cycle", early_stopping=False,
        label_smoothing=0.1, class_weights="balanced" if task == "subtype" else "none",
        augmentation=Augmentation(**_AUGMENTATION))
