"""How long a run (or a sweep of runs) will take, learned from the finished runs of this machine.

One estimator for the Train page and the Sweeps page. A run's time is

    epochs x seconds per epoch  +  overhead

where an epoch's seconds are the whole epoch's wall time as recorded in metrics.jsonl (training
and validation), and the overhead is everything else a run spends: loading the images, building
the model, tracing the first epoch's graph and the final evaluation (its duration minus its
steady epochs). Both come from finished runs of the same architecture and image size when there
are some; otherwise from all finished runs, scaled by the model's cost (MACs per image x images)
and marked rough. A run of one epoch tells little: its only epoch includes tracing the graph,
which on small data is most of it, and scaled to a larger dataset it gave estimates of hours per
epoch. So runs with a steady epoch (a second one) are used whenever any can give an estimate, even
scaled from another model; runs of one epoch only when there is nothing else, and then the estimate
says so. With no finished run at all there is no estimate: the live view's ETA knows after the
first epoch.

Plain Python (no TensorFlow, no Streamlit); MACs are passed in by the caller.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

from core.store.runs import RunStore

# Settings that decide which images a run trains on (runs on the same data are the best guide).
DATASET_KEYS = ("data_source", "data_path", "task")
# A training step (forward and backward pass) costs about three forward passes (validation).
TRAIN_STEP_COST = 3.0

SAME_MODEL, SCALED, NO_BASIS = "same model", "scaled by model cost", "none"


@dataclass
class PastRun:
    """What the estimate needs of a finished run."""
    config: dict
    history: list[dict]
    duration_s: float | None = None
    macs: float | None = None                       # per image, from the run's summary
    images: dict = field(default_factory=dict)      # {"train": n, "val": n, "test": n}
    dataset_images: int | None = None               # the whole dataset (before any train fraction)
    decode_seconds: float = 0.0                     # first decoding of its images (later runs read the cache)


@dataclass
class RunEstimate:
    seconds: float | None                # the whole run; None when nothing can be said yet
    epoch_seconds: float | None = None
    overhead_seconds: float | None = None
    basis: str = NO_BASIS                # SAME_MODEL, SCALED or NO_BASIS
    rough: bool = False                  # learned from other models, other data or first epochs only
    first_epochs_only: bool = False      # every basis run had one epoch, tracing included: too long


@dataclass
class SweepEstimate:
    total_seconds: float | None          # None while some run cannot be estimated
    runs: list[RunEstimate] = field(default_factory=list)

    @property
    def rough(self) -> bool:
        return any(r.rough for r in self.runs)


# ----------------------------------------------------------------------------- finished runs

def past_runs(store: RunStore) -> list[PastRun]:
    """Every finished ('done') run of the store, with what its time is learned from."""
    found = []
    for run in store.list():
        if run.state() != "done":
            continue
        summary = run.summary()
        dataset = summary.get("dataset") or {}
        decoded = 0.0 if dataset.get("from_cache", True) else float(dataset.get("load_seconds") or 0.0)
        found.append(PastRun(run.config(), run.history(), run.describe().get("duration_s"),
                             (summary.get("model") or {}).get("macs"), split_images(summary),
                             dataset.get("images"), decoded))
    return found


def split_images(summary: dict) -> dict:
    """Images per split from a run summary's split report; {} when it has none."""
    counts = (summary.get("split") or {}).get("counts") or {}
    return {name: int(sum(per_class.values())) for name, per_class in counts.items()
            if isinstance(per_class, dict)}


def full_epochs(history: list[dict]) -> list[float]:
    """Wall seconds of the epochs that ran to the end (a stopped epoch is partial)."""
    return [float(row["seconds"]) for row in history if row.get("seconds") and not row.get("partial")]


def steady_epoch_seconds(history: list[dict]) -> float | None:
    """Median seconds of an epoch, leaving out the first when possible (it includes graph tracing)."""
    seconds = full_epochs(history)
    return float(statistics.median(seconds[1:] or seconds)) if seconds else None


def has_steady_epoch(past: PastRun) -> bool:
    """Whether the run finished a second epoch, whose time has no graph tracing in it."""
    return len(full_epochs(past.history)) >= 2


def overhead_seconds(past: PastRun) -> float | None:
    """The run's duration beyond its epochs at the steady speed: loading, building, tracing, evaluating
    (less a first decoding of the images, which the next runs find in the cache)."""
    steady, epochs = steady_epoch_seconds(past.history), full_epochs(past.history)
    if not past.duration_s or steady is None:
        return None
    return max(0.0, past.duration_s - steady * len(epochs) - past.decode_seconds)


# ----------------------------------------------------------------------------- images per split

def split_shares(config: dict) -> dict:
    """Roughly the share of the dataset in each split of a run with these settings."""
    test, val = float(config.get("test_fraction", 0.15)), float(config.get("val_fraction", 0.15))
    folds = int(config.get("cv_folds") or 0)
    if folds >= 2:  # the non-test patients are cut into k folds; one validates, the rest train
        train, val = (1 - test) * (folds - 1) / folds, (1 - test) / folds
    else:
        train = 1 - val - test
    return {"train": max(train, 0.01) * float(config.get("train_fraction") or 1.0), "val": val, "test": test}


def images_of(config: dict, dataset_images: int) -> dict:
    return {name: share * dataset_images for name, share in split_shares(config).items()}


def epoch_work(images: dict, macs: float | None = None) -> float:
    """An epoch's cost in forward passes (times MACs per image when known)."""
    passes = TRAIN_STEP_COST * images.get("train", 0) + images.get("val", 0)
    return passes * (macs if macs else 1.0)


def _dataset_size(past: PastRun) -> float:
    return past.dataset_images or sum(past.images.values())


# ----------------------------------------------------------------------------- one run

def same_model(config: dict, past: list[PastRun]) -> tuple[list[PastRun], bool]:
    """Timed finished runs of the same architecture, image size and colour: those on the same
    data when there are some (True), else those on other data (False: a rough guide)."""
    def key(c):
        return c.get("arch"), c.get("image_size"), c.get("color_mode", "grayscale")
    matching = [p for p in past if key(p.config) == key(config) and _is_timed(p)]
    same_data = [p for p in matching if all(p.config.get(k) == config.get(k) for k in DATASET_KEYS)]
    return (same_data, True) if same_data else (matching, False)


def _is_timed(past: PastRun) -> bool:
    return steady_epoch_seconds(past.history) is not None


def _images_pair(config: dict, images: dict | None, basis: list[PastRun]) -> tuple[dict, list[dict]]:
    """Images per split of the run and of each basis run. The run's come from the caller, else from
    the dataset size of basis runs on the same data; when a basis run does not record its images,
    all are taken as shares of one dataset (only their ratios matter then)."""
    if not all(p.images.get("train") for p in basis):
        return images_of(config, 1.0), [images_of(p.config, 1.0) for p in basis]
    if not images:
        same = [_dataset_size(p) for p in basis if all(p.config.get(k) == config.get(k) for k in DATASET_KEYS)]
        images = images_of(config, statistics.median(same or [_dataset_size(p) for p in basis]))
    return images, [p.images for p in basis]


def estimate_run(config: dict, past: list[PastRun], images: dict | None = None,
                 macs: float | None = None) -> RunEstimate:
    """Seconds for all of a run's epochs plus its overhead (early stopping may end it sooner).

    `images`: images per split when the caller knows them (else taken from runs on the same data);
    `macs`: the model's MACs per image (needed to learn from runs of other models). Runs with a
    steady epoch first; runs of one epoch only when those give nothing (see the module's note)."""
    steady = estimate_from(config, [p for p in past if has_steady_epoch(p)], images, macs)
    if steady.seconds is not None or all(has_steady_epoch(p) for p in past):
        return steady
    guess = estimate_from(config, past, images, macs)
    if guess.seconds is not None:
        guess.rough = guess.first_epochs_only = True
    return guess


def estimate_from(config: dict, past: list[PastRun], images: dict | None, macs: float | None) -> RunEstimate:
    basis, same_data = same_model(config, past)
    if basis:
        use_macs = macs is not None and all(p.macs for p in basis)
        return _from_basis(config, basis, images, macs if use_macs else None, use_macs,
                           SAME_MODEL, rough=not same_data)
    timed = [p for p in past if _is_timed(p) and p.macs]
    if macs and timed:
        return _from_basis(config, timed, images, macs, True, SCALED, rough=True)
    return RunEstimate(None)


def _from_basis(config, basis, images, macs, use_macs: bool, kind: str, rough: bool) -> RunEstimate:
    target, basis_images = _images_pair(config, images, basis)
    per_work = statistics.median(steady_epoch_seconds(p.history) / epoch_work(i, p.macs if use_macs else None)
                                 for p, i in zip(basis, basis_images))
    epoch = per_work * epoch_work(target, macs)
    overheads = [o for p in basis for o in [overhead_seconds(p)] if o is not None]
    overhead = statistics.median(overheads) if overheads else 0.0
    seconds = epoch * int(config.get("epochs") or 1) + overhead
    return RunEstimate(seconds, epoch, overhead, kind, rough)


# ----------------------------------------------------------------------------- a sweep

def estimate_sweep(configs: list[dict], past: list[PastRun],
                   macs_of: Callable[[dict], float | None] | None = None) -> SweepEstimate:
    """The sweep's runs one after another (the job queue trains one run at a time). `macs_of`
    gives a config's MACs per image; it is asked only for runs with no finished run of their model."""
    estimates = []
    for config in configs:
        estimate = estimate_run(config, past)
        if estimate.seconds is None and macs_of is not None:
            estimate = estimate_run(config, past, macs=macs_of(config))
        estimates.append(estimate)
    total = None if not estimates or any(e.seconds is None for e in estimates) else \
        float(sum(e.seconds for e in estimates))
    return SweepEstimate(total, estimates)


def hedge(estimates: list[RunEstimate]) -> str:
    """What goes before the time: '≤ ' when learned from first epochs only (likely too long), '≈ '
    when rough, nothing when learned from runs of the same model on the same data."""
    given = [e for e in estimates if e.seconds is not None]
    if any(e.first_epochs_only for e in given):
        return "≤ "
    return "≈ " if any(e.rough for e in given) else ""


def basis_text(estimates: list[RunEstimate]) -> str:
    """Where the estimate comes from, for a caption."""
    kinds = {e.basis for e in estimates if e.seconds is not None}
    if any(e.first_epochs_only for e in estimates if e.seconds is not None):
        return ("a rough guide, likely too long: the finished runs it is learned from trained one epoch "
                "each, and a first epoch includes tracing the model's graph")
    if SCALED in kinds:
        return ("a rough guide: no finished run of this model yet, so it is scaled by the model's cost "
                "(MACs per image x images) from other finished runs on this machine")
    if any(e.rough for e in estimates):
        return "a rough guide: from runs of the same model on another dataset"
    return "from finished runs of the same model and image size on this machine"


# ----------------------------------------------------------------------------- time left

def time_left(estimated_seconds: float | None, progress: dict, started: float | None, now: float) -> float | None:
    """Seconds until an active run ends: while it trains, its training process's own ETA (the batches
    left at its measured speed); before that, its estimated time less the time since it started;
    None when neither is known."""
    if progress.get("state") == "running" and progress.get("eta_s") is not None:
        return float(progress["eta_s"])
    if estimated_seconds is None:
        return None
    elapsed = now - started if started and progress.get("state") == "running" else 0.0
    return max(0.0, estimated_seconds - elapsed)


def finish_times(seconds_left: list[float | None], slots: int = 1) -> list[float | None]:
    """When each run of the queue ends, in seconds from now: the runs in queue order (running ones
    first), each on the first worker slot to come free. A run whose time is unknown, and every run
    after it, gets None: nothing honest can be said of them."""
    free = [0.0] * max(1, slots)
    ends: list[float | None] = []
    for seconds in seconds_left:
        if seconds is None or (ends and ends[-1] is None):
            ends.append(None)
            continue
        slot = free.index(min(free))
        free[slot] += seconds
        ends.append(free[slot])
    return ends
