"""Sweeps: a grid of one, two or three settings, each point repeated over seeds or cross-validation folds.

    python -m core sweep SWEEP.json [--runs-dir runs]

SWEEP.json:
    {"name": "dropout study", "base": {"arch": "seed_cnn", "epochs": 5},
     "axes": [{"setting": "dropout", "values": [0.2, 0.4, 0.6, 0.8]}],   # up to three settings
     "repeats": 3,          # seeds per point (seed, seed+1, ...); the split stays fixed
     "cv_folds": 0,         # or k >= 2: k-fold cross-validation grouped by patient per point
     "halving_rate": 0,     # or 2-8: successive halving stops the worst runs early (core.ml.halving)
     "halving_min_epochs": 1}   # epochs before the first rung (rungs at min_epochs x rate^k)

All runs of a sweep share the same test patients, so points are compared on the same data. With
successive halving, a run stopped at a rung ends `done` with the metrics of its shorter training;
its summary says where (`halted`).
"""
from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from core.settings.config import SETTINGS, TrainConfig, setting_for
from core.files import read_json, write_json
from core.store.run_folder import ACTIVE_STATES
from core.store.runs import RUN_ID, RunStore

RESULT_METRICS = ("test_accuracy", "test_macro_f1", "test_auc", "val_accuracy", "best_val_loss",
                  "train_accuracy", "accuracy_gap",
                  "peak_memory_mb", "peak_gpu_memory_mb", "images_per_sec", "wall_s")
# Settings swept as a whole group of sub-settings (each value a dict), e.g. augmentation off / mild / strong.
GROUP_AXES = ("augmentation",)
MAX_AXES = 3  # e.g. optimizer x learning rate x epochs: lines, colours and panels of one chart


SET_BY_THE_SWEEP = ("seed", "cv_fold", "cv_folds", "sweep_id", "name", "halving_rate", "halving_min_epochs")
# What to use instead of sweeping a setting the sweep sets itself.
INSTEAD = {"seed": "use repeats", "cv_fold": "use cv_folds", "cv_folds": "use cv_folds",
           "halving_rate": "use the sweep's successive halving option",
           "halving_min_epochs": "use the sweep's successive halving option"}
HALVING_KEYS = ("halving_rate", "halving_min_epochs")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass
class SweepAxis:
    setting: str   # a TrainConfig field, or dotted: "arch_params.activation", "augmentation.zoom"
    values: list
    labels: list[str] | None = None  # how to show each value (e.g. "mild" for an augmentation dict)

    def to_dict(self) -> dict:
        return {"setting": self.setting, "values": self.values, **({"labels": self.labels} if self.labels else {})}

    @classmethod
    def from_dict(cls, axis: dict) -> "SweepAxis":
        labels = axis.get("labels")
        return cls(axis["setting"], list(axis["values"]), [str(label) for label in labels] if labels else None)


@dataclass
class Sweep:
    base: TrainConfig
    axes: list[SweepAxis]
    repeats: int = 1
    cv_folds: int = 0
    name: str = ""
    halving_rate: int = 0        # successive halving (0 = off); every run of the sweep gets it
    halving_min_epochs: int = 1
    study: str = ""              # the Studies page's study this sweep runs (core.settings.studies)
    variant: str = ""            # "quick" or "full"

    @classmethod
    def from_dict(cls, values: dict) -> "Sweep":
        """A sweep from its JSON form; halving settings left out come from the base (default: off)."""
        known = {"base", "axes", "repeats", "cv_folds", "name", "study", "variant", *HALVING_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sweep settings: {', '.join(unknown)}")
        axes = [SweepAxis.from_dict(a) for a in values.get("axes", [])]
        base = TrainConfig.from_dict(values.get("base", {}))
        halving = {key: SETTINGS[key].check(values.get(key, getattr(base, key))) for key in HALVING_KEYS}
        sweep = cls(base=base, axes=axes, repeats=int(values.get("repeats", 1)),
                    cv_folds=int(values.get("cv_folds", 0)), name=values.get("name", ""),
                    study=str(values.get("study", "")), variant=str(values.get("variant", "")), **halving)
        sweep.validate()
        return sweep

    def to_dict(self) -> dict:
        return {"name": self.name, "base": self.base.to_dict(), "repeats": self.repeats,
                "cv_folds": self.cv_folds, "halving_rate": self.halving_rate,
                "halving_min_epochs": self.halving_min_epochs, "study": self.study, "variant": self.variant,
                "axes": [axis.to_dict() for axis in self.axes]}

    def validate(self) -> None:
        if not 1 <= len(self.axes) <= MAX_AXES:
            raise ValueError("a sweep varies one, two or three settings")
        if len({a.setting for a in self.axes}) != len(self.axes):
            raise ValueError(f"the {NUMBER_WORDS[len(self.axes)]} swept settings must differ")
        for axis in self.axes:
            if not axis.values:
                raise ValueError(f"no values given for {axis.setting}")
            check_sweepable(axis.setting)
            if axis.labels is not None and len(axis.labels) != len(axis.values):
                raise ValueError(f"{axis.setting}: {len(axis.labels)} labels for {len(axis.values)} values")
            if axis.setting in GROUP_AXES:
                check_group_values(axis)
            elif setting_for(axis.setting, self.base.arch) is None:
                raise ValueError(f"{axis.setting} is not a setting of a {self.base.arch} run")
        if not 1 <= self.repeats <= 20:
            raise ValueError("repeats must be between 1 and 20")
        SETTINGS["cv_folds"].check(self.cv_folds)
        configs = self.configs()
        for config in configs:
            config.validate()  # every point must be a valid run before anything is queued
        self.validate_halving(configs)

    def validate_halving(self, configs: list[TrainConfig]) -> None:
        """Halving needs a run longer than its first rung (min epochs), else it would stop nothing."""
        for key in HALVING_KEYS:
            SETTINGS[key].check(getattr(self, key))
        longest = max(config.epochs for config in configs)
        if self.halving_rate and longest <= self.halving_min_epochs:
            raise ValueError(f"successive halving decides after {self.halving_min_epochs} epoch(s), but the "
                             f"longest run trains {longest}: give the runs more epochs or halve sooner")

    def label(self, setting: str, value) -> str:
        """A value's label on its axis (its own text when the axis has no labels)."""
        axis = next(a for a in self.axes if a.setting == setting)
        return axis.labels[axis.values.index(value)] if axis.labels else str(value)

    def points(self) -> list[dict]:
        return grid_points(self.axes)

    def configs(self, sweep_id: str = "") -> list[TrainConfig]:
        """One TrainConfig per run: every point x (repeats seeds or cv folds)."""
        split_seed = self.base.effective_split_seed
        configs = []
        for point in self.points():
            for repeat in range(self.cv_folds or self.repeats):
                variation = ({"cv_folds": self.cv_folds, "cv_fold": repeat} if self.cv_folds
                             else {"seed": self.base.seed + repeat})
                name = " ".join(f"{k.split('.')[-1]}={self.label(k, v)}" for k, v in point.items())
                suffix = f"fold{repeat + 1}" if self.cv_folds else f"seed{self.base.seed + repeat}"
                configs.append(self.base.with_overrides({
                    **point, **variation, "split_seed": split_seed, "sweep_id": sweep_id,
                    "halving_rate": self.halving_rate, "halving_min_epochs": self.halving_min_epochs,
                    "name": f"{self.name or 'sweep'} {name} {suffix}".strip()}))
        return configs


def check_sweepable(setting: str) -> None:
    """ValueError, saying what to use instead, for a setting the sweep sets itself."""
    if setting in SET_BY_THE_SWEEP:
        instead = f": {INSTEAD[setting]}" if setting in INSTEAD else ""
        raise ValueError(f"{setting} is set by the sweep itself{instead}")


def check_group_values(axis: SweepAxis) -> None:
    """Each value of a group axis is a dict of its sub-settings (checked when the configs are built)."""
    for value in axis.values:
        if not isinstance(value, dict):
            raise ValueError(f"each value of {axis.setting} must be a set of its settings, e.g. "
                             f'{{"rotation_degrees": 10}}; got {value!r}')


def grid_points(axes: list[SweepAxis]) -> list[dict]:
    """Each grid point as {setting: value}, first axis outermost."""
    return [dict(zip([a.setting for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]


# ----------------------------------------------------------------------------- store

def sweeps_dir(store: RunStore) -> Path:
    return store.root / "_sweeps"


def submit_sweep(manager, sweep: Sweep) -> str:
    """Queue every run of the sweep under one sweep id; returns the id."""
    sweep.validate()
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    folder = sweeps_dir(manager.store)
    n = 1
    while (folder / f"{sweep_id}.json").exists():
        n += 1
        sweep_id = f"{time.strftime('sweep-%Y%m%d-%H%M%S')}-{n}"
    record = {"id": sweep_id, "created": time.time(), **sweep.to_dict(), "runs": []}
    write_json(folder / f"{sweep_id}.json", record)
    for config, point in zip(sweep.configs(sweep_id), _points_per_run(sweep)):
        run_id = manager.submit(config)
        record["runs"].append({"run_id": run_id, "point": point, "seed": config.seed, "fold": config.cv_fold})
        write_json(folder / f"{sweep_id}.json", record)
    return sweep_id


def _points_per_run(sweep: Sweep) -> list[dict]:
    return [point for point in sweep.points() for _ in range(sweep.cv_folds or sweep.repeats)]


def list_sweeps(store: RunStore) -> list[dict]:
    folder = sweeps_dir(store)
    records = [read_json(p) for p in folder.glob("sweep-*.json")] if folder.exists() else []
    return sorted((r for r in records if r), key=lambda r: r.get("created", 0), reverse=True)


def load_sweep(store: RunStore, sweep_id: str) -> dict:
    record = read_json(sweeps_dir(store) / f"{sweep_id}.json")
    if not record:
        raise KeyError(f"no sweep {sweep_id!r}")
    return record


# ----------------------------------------------------------------------------- results

def sweep_results(store: RunStore, sweep_id: str) -> list[dict]:
    """One row per point: the swept values, run states, and mean / std / n of every metric."""
    record = load_sweep(store, sweep_id)
    rows = []
    for point in grid_points([SweepAxis.from_dict(a) for a in record["axes"]]):
        members = [entry["run_id"] for entry in record["runs"] if entry["point"] == point]
        described = [_describe(store, run_id) for run_id in members]
        halted = [d["halted"] for d in described if d.get("state") == "done" and d.get("halted")]
        row = {**point, "runs": len(members),
               "done": sum(d.get("state") == "done" for d in described),
               "active": sum(d.get("state") in ("queued", "running") for d in described),
               "run_ids": members,
               # successive halving: runs it stopped, at which epochs; epochs trained and planned
               "halted": len(halted), "halted_epochs": sorted(h["epoch"] for h in halted),
               "epochs_trained": sum(d.get("epoch") or 0 for d in described),
               "epochs_planned": sum(d.get("epochs") or 0 for d in described),
               # the model's size (the same for every run of a point): wide against deep
               **model_size(described)}
        for metric in RESULT_METRICS:
            values = [d[metric] for d in described if d.get("state") == "done" and _is_number(d.get(metric))]
            row[f"{metric}_mean"] = statistics.fmean(values) if values else None
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
            row[f"{metric}_n"] = len(values)
        rows.append(row)
    return rows


def _describe(store: RunStore, run_id: str) -> dict:
    """Run.describe() and, when successive halving stopped the run, where (`halted`)."""
    try:
        run = store.get(run_id)
    except KeyError:
        return {"state": "deleted"}
    summary = run.summary()
    return {**run.describe(), "halted": summary.get("halted"), "model": summary.get("model") or {}}


def model_size(described: list[dict]) -> dict:
    """Trainable parameters and MACs per image of the first run that recorded them (None before)."""
    model = next((d["model"] for d in described if d.get("model")), {})
    return {"trainable_params": model.get("trainable_params"), "macs": model.get("macs")}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------- deleting

def sweep_run_ids(store: RunStore, sweep_id: str) -> list[str]:
    """The runs of a sweep still in the store: those its record lists and any whose config names it
    (e.g. imported without the record)."""
    if not RUN_ID.fullmatch(sweep_id or ""):
        raise KeyError(f"invalid sweep id {sweep_id!r}")
    record = read_json(sweeps_dir(store) / f"{sweep_id}.json") or {}
    listed = [entry.get("run_id") for entry in record.get("runs", []) if isinstance(entry, dict)]
    named = [run.id for run in store.list() if run.config().get("sweep_id") == sweep_id]
    return [run_id for run_id in dict.fromkeys(listed + named) if run_id and (store.root / run_id).is_dir()]


def delete_sweep(store: RunStore, sweep_id: str) -> list[str]:
    """Delete every run of the sweep and its record; returns the deleted run ids. Nothing is deleted
    while any of its runs is queued or running (RuntimeError naming them); KeyError for a sweep that
    is neither recorded nor named by any run."""
    record_path = sweeps_dir(store) / f"{sweep_id}.json"
    run_ids = sweep_run_ids(store, sweep_id)
    if not run_ids and not record_path.exists():
        raise KeyError(f"no sweep {sweep_id!r}")
    active = [run_id for run_id in run_ids if store.get(run_id).state() in ACTIVE_STATES]
    if active:
        raise RuntimeError(f"sweep {sweep_id} still has {len(active)} queued or running run(s) "
                           f"({', '.join(active)}): stop them before deleting the sweep")
    for run_id in run_ids:
        store.delete(run_id)
    record_path.unlink(missing_ok=True)
    return run_ids
