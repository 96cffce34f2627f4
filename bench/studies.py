"""How long the quick studies of the Studies page take here, and what they answer.

Runs each named study's quick variant on the built-in set, as the Studies page launches it (one sweep
through a job manager with one training slot and the spare process), and prints per study: runs,
wall time against the 10-minute target, the answer sentence, and the mean ± std per value.

    .venv/bin/python bench/studies.py [--studies batch_size dropout] [--runs-dir /tmp/study-runs]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

TARGET_S = 600


def run_study(store_dir: Path, key: str) -> dict:
    from core.present import studies as studies_view
    from core.store.runs import RunStore
    from core.store.sweeps import load_sweep, submit_sweep
    from core.workers.manager import JobManager
    manager = JobManager(RunStore(store_dir), max_concurrent=1)
    try:
        started = time.monotonic()
        sweep_id = submit_sweep(manager, studies_view.variant_sweep(key, "quick"))
        record = load_sweep(manager.store, sweep_id)
        states = [manager.wait(entry["run_id"]) for entry in record["runs"]]
        seconds = time.monotonic() - started
    finally:
        manager.shutdown()
    frame = studies_view.results_for(manager.store, record)
    metric = studies_view.get_study(key).metric
    return {"key": key, "runs": len(states), "done": states.count("done"), "seconds": seconds,
            "answer": studies_view.answer(record, frame, metric),
            "failures": [studies_view.failure_reasons(manager.store, record)] if "failed" in states else [],
            "means": {label: (mean, std) for label, mean, std in
                      zip(frame["label"], frame[f"{metric}_mean"], frame[f"{metric}_std"])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", nargs="+", default=["batch_size", "dropout"])
    parser.add_argument("--runs-dir", type=Path)
    args = parser.parse_args()
    store_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="cxr-studies-"))
    for key in args.studies:
        result = run_study(store_dir / key, key)
        verdict = "within" if result["seconds"] <= TARGET_S else "OVER"
        print(f"{key}: {result['done']}/{result['runs']} runs done in {result['seconds'] / 60:.1f} min "
              f"({verdict} the {TARGET_S // 60}-minute target)")
        print(f"  {result['answer']}")
        for label, (mean, std) in result["means"].items():
            print(f"  {label}: " + ("no finished run" if mean != mean or mean is None else f"{mean:.3f} ± {std:.3f}"))
        for reason in result["failures"]:
            print(f"  failed: {reason}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
