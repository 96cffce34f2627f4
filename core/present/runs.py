"""What the pages say about runs, without Streamlit: names, the queue, why a run failed, resuming
several runs, which runs to compare, annotating runs, the run browser's filters and the TensorBoard
command."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from core.store.runs import ACTIVE_STATES, Run, RunStore

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
    from core.store.runs import check_tags
    add, remove = check_tags(list(add)), set(check_tags(list(remove)))
    for run in runs:
        kept = [tag for tag in run.annotations().get("tags", []) if tag not in remove]
        changes = {"tags": kept + [tag for tag in add if tag not in kept]}
        run.annotate(**changes, **({} if starred is None else {"starred": starred}))


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


def common_split_key(runs: list[Run], reference: Run) -> tuple:
    """What a common-split score depends on: the runs, their model files' times and the reference."""
    def model_time(run: Run) -> float:
        return run.model_path.stat().st_mtime if run.has_model() else 0.0
    return tuple(sorted((run.id, model_time(run)) for run in runs)), reference.id


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
