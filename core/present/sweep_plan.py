"""The Sweeps page's form without Streamlit: where the base settings come from, the base JSON and the
swept values read with one message per problem, every run's config, and the preview's numbers and text.

Plain Python on core.settings and core.store.sweeps; the time estimate is core.present.estimate's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from core.ml import halving
from core.present import compare, estimate, forms
from core.present.sweeps import (
    base_from_run,
    base_with_dataset,
    coerce_values,
    halving_share,
    parse_values,
    sweep_spec,
)
from core.settings.config import TrainConfig
from core.settings.recipes import recipe
from core.store.sweeps import NUMBER_WORDS, Sweep, SweepAxis, check_sweepable

BASE_SOURCES = {"train": "The Train page's current settings", "recipe": "The recommended recipe",
                "defaults": "Default settings", "run": "An existing run's settings"}
REPEAT_MODES = {"seeds": "Seeds (same split, different initialisation)",
                "cv": "k-fold cross-validation (grouped by patient)"}
DEFAULT_AXES = {1: "dropout", 2: "arch_params.activation", 3: "learning_rate"}
HALVING_CHOICES = (0, 2, 3, 4)  # the form's offer; the JSON and the CLI take any rate the setting allows


# ----------------------------------------------------------------------------- the base config

def base_sources(has_train_config: bool, has_runs: bool) -> list[str]:
    """The starting points on offer: the Train form only once it published a config, a run only if any."""
    return (["train"] if has_train_config else []) + ["recipe", "defaults"] + (["run"] if has_runs else [])


def starting_base(source: str, train_config=None, dataset_settings: dict | None = None,
                  run_config: dict | None = None) -> dict:
    """The base config for a source: the Train form's config, a run's own config, or the recipe or the
    defaults on the dataset chosen on the Dataset page (when one was chosen)."""
    if source == "train":
        return base_from_run(train_config.to_dict() if hasattr(train_config, "to_dict") else train_config)
    if source == "run":
        return base_from_run(run_config)
    task = (dataset_settings or {}).get("task", "binary")
    start = recipe(task) if source == "recipe" else TrainConfig()
    return base_with_dataset(start, dataset_settings) if dataset_settings else start.to_dict()


def parse_base(text: str) -> dict:
    """The edited base JSON as a config dict; ValueError with the message to show when it is unusable."""
    try:
        base = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The base settings are not valid JSON: {exc.msg} "
                         f"(line {exc.lineno}, column {exc.colno}).") from None
    if not isinstance(base, dict):
        raise ValueError("The base settings are not valid: the base settings must be a JSON object ({...})")
    try:
        TrainConfig.from_dict(base)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The base settings are not valid: {exc}") from None
    return base


def base_summary(base: dict) -> str:
    """'**Base:** seed_cnn · 10 epochs · batch 32 · adam lr 0.001 · <dataset>' for a caption."""
    config = TrainConfig.from_dict(base)
    return (f"**Base:** {config.arch} · {config.epochs} epochs · batch {config.batch_size} · "
            f"{config.optimizer} lr {config.learning_rate:g} · "
            f"{forms.dataset_label(forms.dataset_settings_from_config(base))}")


# ----------------------------------------------------------------------------- axes and runs

def parse_axes(raw: list[tuple[str, str]], base: dict) -> tuple[list[tuple[str, list]], list[str]]:
    """(setting, typed values) per swept setting from (setting, values text), and one message per problem."""
    axes, problems = [], []
    for index, (setting, text) in enumerate(raw, 1):
        try:
            if not setting:
                raise ValueError("name the setting to vary")
            check_sweepable(setting)
            axes.append((setting, coerce_values(base, setting, parse_values(text))))
        except ValueError as exc:
            problems.append(f"Setting {index} ({setting or '?'}): {exc}")
    settings = [setting for setting, _ in axes]
    if not problems and len(set(settings)) < len(settings):
        problems.append(f"The {NUMBER_WORDS[len(settings)]} swept settings must differ.")
    return axes, problems


def planned_configs(base: dict, axes: list[tuple[str, list]], mode: str, count: int,
                    halving_rate: int = 0, halving_min_epochs: int = 1) -> list[dict]:
    """Every run's config (cheap: no model is built); TypeError or ValueError when a point is invalid
    or successive halving could stop nothing (no run is longer than its first rung)."""
    spec = sweep_spec("", base, axes, mode, count)
    sweep = Sweep(TrainConfig.from_dict(base), [SweepAxis(s, v) for s, v in axes],
                  repeats=spec["repeats"], cv_folds=spec["cv_folds"],
                  halving_rate=halving_rate, halving_min_epochs=halving_min_epochs)
    configs = sweep.configs()
    sweep.validate_halving(configs)
    return [config.to_dict() for config in configs]


def halving_label(rate: int) -> str:
    """The form's words for a halving rate: 'off' or 'rate 3: the best third go on at each rung'."""
    if not rate:
        return "off: every run trains all its epochs"
    return f"rate {rate}: the best {halving_share(rate)} go on at each rung"


def model_cost_args(config: dict) -> tuple:
    """(arch, image size, channels, classes, params JSON) to size a config's model by; the class count
    is a guess (2, or 3 for subtypes) because the last layer barely changes the cost."""
    channels = 1 if config.get("color_mode", "grayscale") == "grayscale" else 3
    classes = 3 if config.get("task") == "subtype" else 2
    return (config["arch"], int(config["image_size"]), channels, classes,
            json.dumps(config.get("arch_params") or {}, sort_keys=True))


# ----------------------------------------------------------------------------- the preview

@dataclass
class Preview:
    points: int
    runs: int
    runs_help: str     # '4 points × 3 seeds'
    time: str          # the 'Estimated time' metric
    time_note: str     # the caption under it
    halving_note: str | None = None  # with successive halving: its budget against the full grid's


def preview(configs: list[dict], mode: str, count: int, past: list[estimate.PastRun],
            macs_of: Callable[[dict], float | None] | None = None) -> Preview:
    """What launching would do: points, runs and their time, one run after another (estimate_sweep),
    and with successive halving, the share of that budget it should take."""
    points = len(configs) // count
    guess = estimate.estimate_sweep(configs, past, macs_of=macs_of)
    help_text = f"{points} points × {count} {'seeds' if mode == 'seeds' else 'folds'}"
    note = halving_note(configs, guess)
    if guess.total_seconds is None:
        return Preview(points, len(configs), help_text, "after the first epoch",
                       "Time: no finished run on this machine to learn from yet; the first run's live view "
                       "(Train page) shows the time left after its first epoch.", note)
    total = compare.format_seconds(guess.total_seconds)
    return Preview(points, len(configs), help_text, estimate.hedge(guess.runs) + total,
                   f"About {total} for {len(configs)} runs, one after another, "
                   f"{estimate.basis_text(guess.runs)} (less if early stopping ends runs sooner).", note)


@dataclass
class HalvingBudget:
    full_epochs: int        # the whole grid: every run all its epochs
    expected_epochs: float  # roughly, with successive halving
    full_seconds: float | None = None
    expected_seconds: float | None = None

    @property
    def share(self) -> float:
        return self.expected_epochs / self.full_epochs if self.full_epochs else 1.0


def halving_budget(configs: list[dict], guess: estimate.SweepEstimate | None = None) -> HalvingBudget | None:
    """The grid's epochs (and seconds, when estimated) in full and roughly with successive halving
    (core.ml.halving.expected_epochs: runs in queue order, results in no particular order); None
    when halving is off."""
    if not configs or not configs[0].get("halving_rate"):
        return None
    rate, first = configs[0]["halving_rate"], configs[0].get("halving_min_epochs", 1)
    epochs = [int(c["epochs"]) for c in configs]
    expected = halving.expected_epochs(epochs, rate, first)
    budget = HalvingBudget(sum(epochs), sum(expected))
    if guess is not None and guess.total_seconds is not None:
        budget.full_seconds = guess.total_seconds
        budget.expected_seconds = sum(run.overhead_seconds + run.epoch_seconds * trained
                                      for run, trained in zip(guess.runs, expected))
    return budget


def halving_note(configs: list[dict], guess: estimate.SweepEstimate | None = None) -> str | None:
    """'Successive halving: at most the full grid (90 epochs), about 36% of it (≈ 32 epochs, ≈ 4 min)...'"""
    budget = halving_budget(configs, guess)
    if budget is None:
        return None
    time = (f", ≈ {compare.format_seconds(budget.expected_seconds)}" if budget.expected_seconds is not None
            else "")
    return (f"Successive halving: at most the full grid ({budget.full_epochs} epochs), about "
            f"{budget.share:.0%} of it (≈ {budget.expected_epochs:.0f} epochs{time}) when the runs' results come "
            "in no particular order; the first runs to reach a rung always go on, so a small sweep saves less.")


def queue_note(queued: int) -> str | None:
    return f"{queued} run(s) already in the queue go first." if queued else None
