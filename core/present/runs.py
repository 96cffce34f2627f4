"""What the pages say about runs, without Streamlit: names, the queue, why a run failed, resuming
several runs, which runs to compare, annotating runs, the run browser's filters and the TensorBoard
command."""
from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from core.present import estimate
from core.present.compare import format_seconds
from core.store.run_folder import ACTIVE_STATES, Run
from core.store.runs import RunStore

MAX_COMPARE = 6
STOPPED_STATES = ("failed", "interrupted")


# ----------------------------------------------------------------------------- the run browser

TENSORBOARD_PORT = 6006


def sweep_names(records: list[dict]) -> dict[str, str]:
    """Sweep id -> how the runs table names it: 'name (id)', or the id of an unnamed sweep."""
    return {r["id"]: f"{r['name']} ({r['id']})" if r.get("name") else r["id"] for r in records if r.get("id")}


def retag(runs: list[Run], add=(), remove=(), starred: bool | None = None) -> None:
    """Add and remove tags (and star or unstar, when `starred` is given) on every run; each run's
    other annotations stay. ValueError (e.g. a bad tag) before any run is changed."""
    from core.store.annotations import check_tags
    add, remove = check_tags(list(add)), set(check_tags(list(remove)))
    for run in runs:
        changes = {} if starred is None else {"starred": starred}
        if add or remove:
            kept = [tag for tag in run.annotations().get("tags", []) if tag not in remove]
            changes["tags"] = kept + [tag for tag in add if tag not in kept]
        run.annotate(**changes)


def star_target(runs: list[Run]) -> bool:
    """What the star button does to the runs: star them (True) unless every one is starred already."""
    return not all(run.annotations().get("starred") for run in runs)


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or the first of 'name-2', 'name-3'... (counting on from a number it already ends in)
    that no run goes by; an empty name stays empty (such a run is named by its unique id)."""
    if not name or name not in taken:
        return name
    numbered = re.fullmatch(r"(?P<base>.+)-(?P<n>\d+)", name)
    base, n = (numbered["base"], int(numbered["n"]) + 1) if numbered else (name, 2)
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def named_uniquely(config, store: RunStore):
    """(the config to launch, what to tell or None): renamed with unique_name when a run of the store
    already goes by its name, so two runs never share one name in the tables."""
    name = unique_name(config.name, {run.display_name() for run in store.list()})
    if name == config.name:
        return config, None
    return dataclasses.replace(config, name=name), f"A run named {config.name} exists: this one is named {name}."


def can_evaluate(run: Run) -> bool:
    """Whether the Evaluate page offers the run: it saved predictions."""
    return run.predictions_path("test").exists() or run.predictions_path("val").exists()


def can_diagnose(run: Run) -> bool:
    """Whether the Diagnose page offers the run: a saved model, no longer queued or running."""
    return run.has_model() and run.state() not in ACTIVE_STATES


def known_choices(chosen, options) -> list:
    """The remembered choices still offered (a filter saved before runs were deleted)."""
    return [value for value in chosen or [] if value in options]


def tensorboard_command(runs_root: str | Path, python: str | Path = sys.executable) -> str:
    """The command that opens TensorBoard on the run store (this machine only, port 6006): the
    `tensorboard` script beside `python` when there is one, else `python -m tensorboard.main`."""
    script = Path(python).parent / "tensorboard"
    program = shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(str(python))} -m tensorboard.main"
    return f"{program} --logdir {shlex.quote(str(Path(runs_root).resolve()))} --port {TENSORBOARD_PORT}"


def active_runs(store: RunStore) -> list[Run]:
    """Queued and running runs of the store, oldest first (the order they will run in)."""
    return sorted((r for r in store.list() if r.state() in ACTIVE_STATES),
                  key=lambda r: r.status().get("created") or 0)


def failure(label: str, status: dict) -> str | None:
    """'**name** failed: why' for a failed or interrupted run; None for any other state."""
    if status.get("state") not in STOPPED_STATES:
        return None
    return f"**{label}** {status['state']}: {status.get('error') or 'no reason recorded'}"


def resume_runs(run_ids: list[str], resume: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Queue runs again with `resume` (JobManager.resume) to go on from their last completed epoch:
    (resumed ids, one problem per run that could not be resumed)."""
    resumed, problems = [], []
    for run_id in run_ids:
        try:
            resume(run_id)
            resumed.append(run_id)
        except (KeyError, ValueError) as exc:  # deleted, or resumed elsewhere meanwhile
            problems.append(str(exc))
    return resumed, problems


def resume_report(resumed: list[str], problems: list[str]) -> dict:
    """{'failed': bool, 'text': what to tell} after resuming."""
    text = f"Queued {len(resumed)} run(s) to resume: follow them on the Train page." if resumed else ""
    return {"failed": bool(problems), "text": " ".join([text, *problems]).strip()}


def compare_choice(current: list[str] | None, selected: list[str], last_selection: list[str] | None,
                   table: pd.DataFrame, limit: int = MAX_COMPARE) -> list[str]:
    """The runs to compare: a new table selection when there is one, else the current choice (at
    first the two latest finished runs); runs no longer in the table are dropped."""
    known = set(table["run_id"])
    if selected and selected != last_selection:
        current = [r for r in selected if r in known][:limit]
    if current is None:
        current = table[table["state"] == "done"]["run_id"].tolist()[:2]
    return [r for r in current if r in known]


def rows_of(run_ids: list[str], shown: list[str]) -> list[int]:
    """The positions in `shown` (a table's run ids, in order) of the runs `run_ids` still there."""
    wanted = set(run_ids)
    return [i for i, run_id in enumerate(shown) if run_id in wanted]


def common_split_key(runs: list[Run], reference: Run) -> tuple:
    """What a common-split score depends on: the runs, their model files' times and the reference."""
    def model_time(run: Run) -> float:
        return run.model_path.stat().st_mtime if run.has_model() else 0.0
    return tuple(sorted((run.id, model_time(run)) for run in runs)), reference.id


def queue_times(active: list[Run], progress: dict[str, dict], past: list, slots: int = 1,
                now: float | None = None) -> dict[str, float | None]:
    """Seconds until each active run ends (None: not known yet), the running runs first, then the
    queue oldest first on `slots` worker slots (core.present.estimate.finish_times). `progress`: each
    run's JobManager.progress; `past`: estimate.past_runs of the store."""
    now = time.time() if now is None else now
    ordered = sorted(active, key=lambda r: (progress[r.id].get("state") != "running",
                                            r.status().get("created") or 0))
    left = [estimate.time_left(estimate.estimate_run(r.config(), past).seconds, progress[r.id],
                               r.status().get("started"), now) for r in ordered]
    running = sum(progress[r.id].get("state") == "running" for r in ordered)
    return dict(zip([r.id for r in ordered], estimate.finish_times(left, max(slots, running))))


def last_end(ends: dict[str, float | None], run_ids) -> float | None:
    """When the last active run of `run_ids` (e.g. a study's) should end, from queue_times' `ends`
    (every run queued ahead counts); None when one of them has no time yet, or none is active."""
    mine = [ends[run_id] for run_id in run_ids if run_id in ends]
    return None if not mine or None in mine else max(mine)


def time_left_text(seconds: float | None) -> str:
    """'about 3 min 5 s left', or when it will be known."""
    if seconds is None:
        return "time left known once it trains"
    return f"about {format_seconds(seconds)} left"


def queue_summary(ends: dict[str, float | None]) -> str:
    """Home's line under the queue: when the last of its runs should end."""
    count = f"{len(ends)} run{'s' if len(ends) != 1 else ''}"
    if not ends or any(seconds is None for seconds in ends.values()):
        return (f"{count} queued or running; the time left is known once each trains, or once a run of "
                "the same model has finished on this machine.")
    return (f"{count} queued or running: the last should end in about {format_seconds(max(ends.values()))} "
            "(estimated from the runs finished on this machine).")


def queue_entry(run: Run, progress: dict, stopping: bool) -> tuple[str, float | None]:
    """Home's line for an active run: ('**name** — running, epoch 2 of 4', share done) while it trains
    epochs, else ('**name** — queued (to resume from epoch 1)', None). `progress`: JobManager.progress."""
    state = progress.get("state") or run.state()
    if stopping:
        detail = " (stopping after the current batch)"
    elif state == "queued" and run.status().get("resume"):
        detail = f" (to resume from epoch {run.resume_epoch()})"
    else:
        detail = ""
    label = f"**{run.display_name()}** — {state}{detail}"
    epoch, epochs = progress.get("epoch") or 0, progress.get("epochs") or 0
    if state == "running" and epochs:
        return f"{label}, epoch {epoch + 1} of {epochs}", min(1.0, (epoch + 1) / epochs)
    return label, None
