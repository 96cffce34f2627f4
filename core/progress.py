"""The one way a long operation of core/ says how far it is: it calls `progress(done, total, message)`.

`done` of `total` units (images decoded, steps of an evaluation: any unit, a share of 1.0 too), with a
`total` of 0 while it is not known yet (files still being listed), and `message`, what is being done
in words a page can show ("Decoding images: 1,200 of 4,488"). Every long operation takes such a
callback as `progress=None`: loading a dataset, scoring runs on a common test set, an external
evaluation, an export. The dashboard draws one with `ui.common.progress_bar`; a part of a longer
operation reports through `within`.

A training run's live state (core/ml/run_control.Progress: phase, epoch, batch, ETA, written to
progress.json for other processes to read) is a record, not this callback: its data loading feeds
it through one. Imports nothing of ours.
"""
from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[float, float, str], None]


def fraction(done: float, total: float) -> float:
    """The share done, 0 to 1 (0 while the total is unknown)."""
    return min(1.0, max(0.0, done / total)) if total else 0.0


def within(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """A callback for one part of a longer operation: its own 0-100% is reported as `start` to `end`
    of the whole (shares of 1); None when there is nobody to tell."""
    if progress is None:
        return None
    return lambda done, total, message: progress(start + (end - start) * fraction(done, total), 1.0, message)
