"""A run's checkpoint after each epoch (weights and optimizer state) and restoring it to resume; the
best epoch's weights from model.keras; the metrics cut back to a resumed epoch."""
from __future__ import annotations

import json
import warnings

import numpy as np

from core.files import atomic_path
from core.files import read_json, write_json
from core.store.run_folder import Run


def save_checkpoint(run: Run, model, epoch: int, state: dict) -> None:
    """Weights and optimizer state after `epoch` completed epochs, to resume from.

    Files carry the epoch in their names and state.json is written last, so a crash at any moment
    leaves the previous checkpoint whole.
    """
    folder = run.checkpoint_dir
    with atomic_path(folder / f"epoch-{epoch}.weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(folder / f"epoch-{epoch}.optimizer.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, *[np.asarray(v) for v in model.optimizer.variables])
    write_json(folder / "state.json", {**state, "epoch": epoch})
    for old in folder.glob("epoch-*"):
        if not old.name.startswith(f"epoch-{epoch}."):
            old.unlink(missing_ok=True)


def restore_checkpoint(run: Run, model) -> dict:
    """Load the last checkpoint into a compiled `model` (weights and optimizer state); its state."""
    state = read_json(run.checkpoint_dir / "state.json", {})
    epoch = state["epoch"]
    model.load_weights(run.checkpoint_dir / f"epoch-{epoch}.weights.h5")
    optimizer = model.optimizer
    if not optimizer.built:  # _compile built it; building loss scaling again would add its variables twice
        optimizer.build(model.trainable_variables)
    with np.load(run.checkpoint_dir / f"epoch-{epoch}.optimizer.npz", allow_pickle=False) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"the checkpoint's optimizer state ({len(values)} variables) does not fit this "
                         f"model's optimizer ({len(optimizer.variables)})")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
    return state


def restore_best_model(run: Run, model) -> None:
    """Load the best epoch's weights from model.keras, which the callback writes at each improvement.

    The file, not a copy in memory, is the one record of the best epoch: it outlives a crash, a Stop
    and a resume in another process. Its optimizer state may not fit a model recompiled for
    fine-tuning; only the weights matter here, so Keras' warning that it skips them is muted.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(run.model_path)


def truncate_history(run: Run, epochs: int) -> None:
    """Keep the metrics of the first `epochs` epochs: a resumed run goes on from there."""
    rows = [row for row in run.history() if row.get("epoch", 0) <= epochs]
    with atomic_path(run.metrics_path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
