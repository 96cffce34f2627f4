"""Successive halving for the runs of a sweep: stop the worst runs early, asynchronously, in the manner
of ASHA (Li et al. 2018; Ray Tune's AsyncHyperBandScheduler).

Rungs are at `min_epochs * rate**k` epochs, below the run's epochs. At the end of a rung epoch a run
compares its monitored value with the values the sweep's other runs recorded at that rung: it goes
on only if it is not worse than their (1 - 1/rate) quantile, so about the best 1/rate go on; the
first run to reach a rung always goes on, and a tie goes on.

Every run records its own rung values in its own folder (`halving.json`) and reads its siblings'
(the runs of the same sweep in the same runs folder), so the decision needs nothing but the shared
runs folder, whichever process or machine trains each run. The rule and the records are plain
Python; only `halving_callback` imports Keras.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.files import read_json, write_json
from core.store.run_folder import Run

HALVING_FILE = "halving.json"


# ----------------------------------------------------------------------------- the rule

def rungs(epochs: int, rate: int, min_epochs: int) -> list[int]:
    """The rung epochs of a run of `epochs` epochs: min_epochs * rate**k below `epochs`; [] when off."""
    if not rate:
        return []
    if rate < 2 or min_epochs < 1:
        raise ValueError(f"successive halving needs a rate of at least 2 and at least 1 epoch before "
                         f"the first rung; got rate {rate}, {min_epochs} epochs")
    found, rung = [], int(min_epochs)
    while rung < epochs:
        found.append(rung)
        rung *= rate
    return found


def lower_is_better(monitor: str) -> bool:
    """val_loss: lower is better; val_accuracy: higher (as the trainer's best epoch reads them)."""
    return monitor.endswith("loss")


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between the sorted values (numpy.percentile's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Decision:
    stop: bool
    cutoff: float | None   # in the monitor's units; None when nothing was recorded to compare with


def decide(value, recorded: list, rate: int, monitor: str) -> Decision:
    """Whether a run with `value` at a rung stops, given the values the sweep's other runs recorded
    there. It goes on unless worse than the (1 - 1/rate) quantile of the recorded values (ranked best
    last). A missing or non-finite value (a diverged run) is worse than any recorded one."""
    sign = -1.0 if lower_is_better(monitor) else 1.0  # as scores: higher is better
    scores = [sign * v for v in recorded if _finite(v)]
    if not scores:
        return Decision(False, None)
    cutoff = quantile(scores, 1 - 1 / rate)
    stop = not _finite(value) or sign * float(value) < cutoff
    return Decision(stop, sign * cutoff)


def continue_chance(recorded: float, rate: int) -> float:
    """The chance that a run goes on at a rung where `recorded` runs came before it, when values come
    in no particular order: 1 for the first; else its rank beats the quantile's interpolated rank.
    An expected (fractional) count mixes the two whole counts around it."""
    def chance(m: int) -> float:
        return 1.0 if m <= 0 else (m - (1 - 1 / rate) * (m - 1)) / (m + 1)
    low = math.floor(recorded)
    return chance(low) + (chance(low + 1) - chance(low)) * (recorded - low)


def expected_epochs(run_epochs: list[int], rate: int, min_epochs: int) -> list[float]:
    """Roughly the epochs each run trains under successive halving, runs reaching their rungs in
    queue order with results in no particular order (expected counts, not a simulation)."""
    arrived: dict[int, float] = defaultdict(float)  # rung -> expected runs that recorded a value there
    trained = []
    for epochs in run_epochs:
        reach, total, last = 1.0, 0.0, 0
        for rung in rungs(epochs, rate, min_epochs):
            total += reach * (rung - last)
            chance = continue_chance(arrived[rung], rate)
            arrived[rung] += reach
            reach, last = reach * chance, rung
        trained.append(total + reach * (epochs - last))
    return trained


# ----------------------------------------------------------------------------- records in the run folders

def record_path(run_path: Path) -> Path:
    return Path(run_path) / HALVING_FILE


def read_record(run_path: Path) -> dict:
    """A run's halving record: {"sweep_id", "monitor", "values": {epoch: value}, "halted"?}; {} if none."""
    return read_json(record_path(run_path), {}) or {}


def record_value(run: Run, sweep_id: str, monitor: str, epoch: int, value) -> dict:
    """Add this run's value at a rung to its own record (None for a non-finite value); the record."""
    record = {"sweep_id": sweep_id, "monitor": monitor, "values": {}, **read_record(run.path)}
    record["values"] = {**record["values"], str(epoch): float(value) if _finite(value) else None}
    write_json(record_path(run.path), record)
    return record


def sibling_values(run: Run, sweep_id: str, monitor: str, epoch: int) -> list:
    """The values the sweep's other runs (same runs folder, same monitor) recorded at rung `epoch`."""
    found = []
    for path in run.path.parent.glob(f"*/{HALVING_FILE}"):
        if path.parent == run.path:
            continue
        record = read_json(path, {}) or {}
        values = record.get("values") or {}
        if record.get("sweep_id") == sweep_id and record.get("monitor") == monitor and str(epoch) in values:
            found.append(values[str(epoch)])
    return found


def check_rung(run: Run, sweep_id: str, monitor: str, rate: int, epoch: int, value) -> dict | None:
    """At the end of rung `epoch`: record this run's value and apply the rule. The halted record
    ({"epoch", "value", "cutoff", "rung", "rate", "compared_with"}) when the run stops, else None. A
    rung this run already recorded (it was resumed after it) is not decided again."""
    if str(epoch) in (read_record(run.path).get("values") or {}):
        return None
    others = sibling_values(run, sweep_id, monitor, epoch)
    decision = decide(value, others, rate, monitor)
    record = record_value(run, sweep_id, monitor, epoch, value)
    if not decision.stop:
        return None
    halted = {"epoch": epoch, "value": record["values"][str(epoch)], "cutoff": decision.cutoff,
              "rung": epoch, "rate": rate, "monitor": monitor, "compared_with": len(others)}
    write_json(record_path(run.path), {**record, "halted": halted})
    run.update_status(halted=halted)
    return halted


# ----------------------------------------------------------------------------- the Keras callback

def halving_callback(run: Run, config):
    """The callback that applies the rule at the rungs of a sweep run with halving on; None otherwise
    (halving off, not a sweep's run, or no rung before its last epoch)."""
    if not config.halving_rate or not config.sweep_id:
        return None
    schedule = rungs(config.epochs, config.halving_rate, config.halving_min_epochs)
    if not schedule:
        return None
    import keras

    class SuccessiveHalving(keras.callbacks.Callback):
        """Stops training at a rung where the run is among the worst; `halted` says where and why."""

        def __init__(self):
            super().__init__()
            self.halted = None

        def on_epoch_end(self, epoch, logs=None):
            # Stopping already means a Stop mid-epoch: its value is of a partial epoch, not a rung's.
            if epoch + 1 not in schedule or self.halted or self.model.stop_training:
                return
            self.halted = check_rung(run, config.sweep_id, config.monitor, config.halving_rate, epoch + 1,
                                     (logs or {}).get(config.monitor))
            if self.halted:
                self.model.stop_training = True

    return SuccessiveHalving()


def summary_fields(callback) -> dict:
    """{"halted": ...} for the run summary when the callback stopped the run, else {}."""
    halted = getattr(callback, "halted", None)
    return {"halted": halted} if halted else {}
