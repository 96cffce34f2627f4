"""Run a sweep from the terminal and print its results table.

    python -m core sweep SWEEP.json [--runs-dir runs] [--metric test_auc]
                                    [--halving-rate 3] [--halving-min-epochs 1]
    python -m core sweep --study dropout [--variant quick|full]   # a study of the Studies page
    python -m core sweep --list-studies

SWEEP.json is described in core.store.sweeps (one, two or three swept settings). --halving-rate turns on successive halving (or
overrides the file's): at each rung the worst runs stop early; the table says which, at which epoch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.train import add_setting_flag
from core.present.sweeps import halted_text, halving_summary, results_frame
from core.settings.config import SETTINGS
from core.settings.studies import STUDIES, VARIANTS, study_spec
from core.store.runs import RunStore
from core.store.sweeps import (
    HALVING_KEYS,
    RESULT_METRICS,
    Sweep,
    load_sweep,
    submit_sweep,
    sweep_results,
)


def format_table(rows: list[dict], axes: list[str], metric: str, halving: bool = False) -> str:
    """One line per point: the swept values, mean ± std of `metric`, done/runs and, with `halving`,
    the runs successive halving stopped and at which epochs."""
    lines = [" | ".join(axes + [f"{metric} mean ± std", "done/runs"] + (["stopped early"] if halving else []))]
    for row in rows:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        shown = f"{mean:.4f} ± {std:.4f}" if mean is not None else "-"
        halted = [halted_text(row["halted"], row["halted_epochs"], row["runs"])] if halving else []
        lines.append(" | ".join([str(row[a]) for a in axes] + [shown, f"{row['done']}/{row['runs']}"] + halted))
    return "\n".join(lines)


def read_spec(args) -> dict:
    """The sweep in its JSON form: from the file, or the study's (ValueError when neither or both)."""
    if (args.sweep_file is None) == (args.study is None):
        raise ValueError("give a sweep file or --study KEY (one of them)")
    if args.study:
        return study_spec(args.study, args.variant)
    spec = json.loads(args.sweep_file.read_text())
    if not isinstance(spec, dict):
        raise ValueError("the sweep file must hold a JSON object ({...})")
    return spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", type=Path, nargs="?", help="the sweep (JSON); or use --study")
    parser.add_argument("--study", help="run a study of the Studies page instead (see --list-studies)")
    parser.add_argument("--variant", default="quick", choices=VARIANTS,
                        help="quick: about 10 minutes on a 2-core CPU; full: for a GPU")
    parser.add_argument("--list-studies", action="store_true", help="list the studies and exit")
    parser.add_argument("--runs-dir", type=Path)
    parser.add_argument("--metric", default="test_accuracy", choices=RESULT_METRICS)
    for name in HALVING_KEYS:  # checked with the setting's own message, as `python -m core train` does
        add_setting_flag(parser, SETTINGS[name])
    args = parser.parse_args(argv)
    if args.list_studies:
        print("\n".join(f"{key}: {study.question}" for key, study in STUDIES.items()))
        return 0
    try:
        spec = read_spec(args)
        spec.update({name: getattr(args, name) for name in HALVING_KEYS if getattr(args, name) is not None})
        sweep = Sweep.from_dict(spec)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from core.workers.manager import JobManager
    manager = JobManager(RunStore(args.runs_dir))
    sweep_id = submit_sweep(manager, sweep)
    record = load_sweep(manager.store, sweep_id)
    total = len(record["runs"])
    print(f"sweep {sweep_id}: {total} runs queued", file=sys.stderr)
    try:
        for i, entry in enumerate(record["runs"], 1):
            state = manager.wait(entry["run_id"])
            print(f"[{i}/{total}] {entry['run_id']} {entry['point']} -> {state}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("cancelling the sweep...", file=sys.stderr)
        for entry in record["runs"]:
            manager.cancel(entry["run_id"])
        return 130
    finally:  # let the slots finish their last run's bookkeeping (on Ray: before the driver disconnects)
        manager.shutdown()
    axes, rows = [a.setting for a in sweep.axes], sweep_results(manager.store, sweep_id)
    print(format_table(rows, axes, args.metric, halving=bool(sweep.halving_rate)), file=sys.stderr)
    summary = halving_summary(record, results_frame(rows, axes))
    if summary:
        print(summary, file=sys.stderr)
    if sweep.study:  # the study's question, answered from the numbers
        from core.present.studies import answer, results_for
        print(answer(record, results_for(manager.store, record), args.metric), file=sys.stderr)
    print(json.dumps({"sweep_id": sweep_id, "results": sweep_results(manager.store, sweep_id)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
