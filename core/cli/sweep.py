"""Run a sweep from the terminal and print its results table.

    python -m core sweep SWEEP.json [--runs-dir runs] [--metric test_auc]

SWEEP.json is described in core.store.sweeps.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.store.runs import RunStore
from core.store.sweeps import (
    RESULT_METRICS,
    Sweep,
    load_sweep,
    submit_sweep,
    sweep_results,
)


def format_table(rows: list[dict], axes: list[str], metric: str) -> str:
    lines = [" | ".join(axes + [f"{metric} mean ± std", "done/runs"])]
    for row in rows:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        shown = f"{mean:.4f} ± {std:.4f}" if mean is not None else "-"
        lines.append(" | ".join([str(row[a]) for a in axes] + [shown, f"{row['done']}/{row['runs']}"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--runs-dir", type=Path)
    parser.add_argument("--metric", default="test_accuracy", choices=RESULT_METRICS)
    args = parser.parse_args(argv)
    try:
        sweep = Sweep.from_dict(json.loads(args.sweep_file.read_text()))
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
    axes = [a.setting for a in sweep.axes]
    print(format_table(sweep_results(manager.store, sweep_id), axes, args.metric), file=sys.stderr)
    print(json.dumps({"sweep_id": sweep_id, "results": sweep_results(manager.store, sweep_id)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
