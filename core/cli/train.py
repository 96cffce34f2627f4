"""Train one run from the terminal, into the same run store the dashboard reads.

    python -m core train --arch seed_cnn --task binary --image-size 64 --epochs 5
    python -m core train --config runs/<run_id>/config.json --epochs 20
    python -m core train --set augmentation.rotation_degrees=10 --set arch_params.width=0.5
    python -m core train --arch seed_cnn --submit      # queue it for the workers, print its id at once
    python -m core train --resume runs/<run_id>        # go on from the run's last completed epoch
    python -m core train --data-path ~/data/mnist.npz --split own   # the source is detected from the file

Without --submit the run trains here in the foreground (Ctrl-C stops it and keeps what it learned).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from core.ml.decisions import decision_rule
from core.present import runs as runs_view
from core.settings.config import SETTINGS, TrainConfig
from core.files import write_text
from core.store.run_folder import Run
from core.store.runs import RunStore, this_process

# Settings the sweep machinery sets; a run from the terminal leaves them alone.
NOT_FLAGS = ("sweep_id",)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a config.json (e.g. from a run folder) to start from")
    settings = parser.add_argument_group("run settings (default: the --config's, else the one shown)")
    for spec in SETTINGS.values():
        if spec.name not in NOT_FLAGS:
            add_setting_flag(settings, spec)
    parser.add_argument("--lr", dest="learning_rate", type=setting_type(SETTINGS["learning_rate"]),
                        help="alias of --learning-rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig setting; VALUE is JSON if it parses, dotted keys reach "
                             "into arch_params and augmentation")
    parser.add_argument("--runs-dir", type=Path, help="run store folder (default: $CXR_RUNS_DIR or runs/)")
    parser.add_argument("--submit", action="store_true",
                        help="queue the run for the dashboard's or `python -m core worker`'s workers and exit")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="resume an interrupted run from its last completed epoch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def add_setting_flag(parser, spec) -> None:
    """--image-size 64, --early-stopping / --no-early-stopping: one flag per declared setting."""
    flag = "--" + spec.name.replace("_", "-")
    text = f"{spec.help} ({spec.expected()}; default {spec.default!r})"
    if spec.kind is bool:
        parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, help=text)
    else:
        parser.add_argument(flag, dest=spec.name, type=setting_type(spec), metavar=spec.name.upper(), help=text)


def setting_type(spec):
    """An argparse type: the text as the setting's kind, checked against its declaration."""
    def parse(text: str):
        if spec.optional and text.lower() in ("none", ""):
            return None
        try:
            value = text if spec.kind is str else float(text)
        except ValueError:
            value = text  # refused below, with the setting's own message
        try:
            return spec.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = spec.name  # argparse names the type in its own messages
    return parse


def build_config(args: argparse.Namespace) -> TrainConfig:
    values = json.loads(args.config.read_text()) if args.config else {}
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None}
    values.update(given)
    values.update(detected_source(values))
    return TrainConfig.from_dict(values).with_overrides(parse_overrides(args.set)).validate()


def detected_source(values: dict) -> dict:
    """A --data-path without a source: the source (and the task a file's own classes need) detected
    from the file, said on stderr; {} when the source is given."""
    if not values.get("data_path") or values.get("data_source"):
        return {}
    from core.data.datasets import DataError
    from core.data.detection import detect
    try:
        found = detect(values["data_path"])
    except DataError as exc:
        raise ValueError(str(exc)) from None
    chosen = {"data_source": found.source}
    if found.task and not values.get("task"):
        chosen["task"] = found.task
    print(f"detected {found.kind}: data source {found.source!r}"
          + (f", task {chosen['task']!r}" if "task" in chosen else ""), file=sys.stderr)
    return chosen


def parse_overrides(items: list[str]) -> dict:
    """["dropout=0.4", "arch_params.width=0.5"] -> {"dropout": 0.4, "arch_params.width": 0.5}."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def render_progress(progress: dict) -> str:
    phase = progress.get("phase")
    if phase == "loading data":
        return f"loading data {progress.get('load_done', 0)}/{progress.get('load_total') or '?'}"
    if phase != "training":
        return str(phase)
    batch, batches = progress.get("batch") or 0, progress.get("batches") or 1
    filled = int(30 * batch / batches)
    rate, eta, loss = progress.get("images_per_sec"), progress.get("eta_s"), progress.get("batch_loss")
    return (f"epoch {progress['epoch'] + 1}/{progress['epochs']} [{'=' * filled}{'.' * (30 - filled)}] "
            f"{batch}/{batches}" + (f" loss {loss:.4f}" if loss is not None else "")
            + (f" {rate:.0f} img/s" if rate else "") + (f" ETA {eta:.0f}s" if eta is not None else ""))


def epoch_line(row: dict) -> str:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "val_macro_f1", "learning_rate")
    return f"epoch {row['epoch']}: " + " ".join(f"{k} {row[k]:.4g}" for k in keys if row.get(k) is not None)


def follow(run, quiet: bool) -> str:
    """Draw the run's progress until it ends; Ctrl-C stops it (and keeps what it learned)."""
    printed_epochs = 0
    try:
        while True:
            history = run.history()
            for row in history[printed_epochs:]:
                print("\r\033[K" + epoch_line(row), file=sys.stderr, flush=True)
            printed_epochs = len(history)
            state = run.state()
            if state not in ("queued", "running"):
                print("\r\033[K", end="", file=sys.stderr)
                return state
            if not quiet and sys.stderr.isatty():
                print("\r\033[K" + render_progress({"epochs": run.status().get("epochs"), **run.progress()}),
                      end="", file=sys.stderr, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping: ends after the current batch...", file=sys.stderr)
        write_text(run.stop_path, str(time.time()))
        while run.state() in ("queued", "running"):
            time.sleep(0.2)
        return run.state()


def train_here(run, config: TrainConfig, resume: bool, quiet: bool) -> str:
    """Train in this process (in a thread, so that this one can draw progress and catch Ctrl-C)."""
    from core.ml.run_control import RunControl
    from core.ml.training import execute_run
    run.update_status(state="running", trainer=this_process(), worker=None,
                      **({} if resume else {"started": time.time()}))
    thread = threading.Thread(target=execute_run, name="cxr-train",
                              args=(run, config, RunControl.for_run(run, config.epochs)), kwargs={"resume": resume})
    thread.start()
    state = follow(run, quiet)
    thread.join()
    return state


def report(run, state: str) -> int:
    status, summary = run.status(), run.summary()
    result = {"run_id": run.id, "run_dir": str(run.path), "state": state,
              "test": _headline(summary.get("test")), "val": _headline(summary.get("val")),
              "best_epoch": summary.get("best_epoch"), "seconds": summary.get("seconds"),
              "resources": summary.get("resources")}
    if status.get("resumed_at_epochs"):
        result["resumed_at_epochs"] = status["resumed_at_epochs"]
    if summary.get("logistic_regression"):  # the C chosen on validation, and its penalty
        result["logistic_regression"] = {key: summary["logistic_regression"][key] for key in ("penalty", "C")}
    if state == "failed":
        result["error"] = status.get("error")
        print(status.get("traceback", ""), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0 if state in ("done", "cancelled") else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resume:
        return resume(args)
    try:
        config = build_config(args)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = RunStore(args.runs_dir)
    config, renamed = runs_view.named_uniquely(config, store)  # two runs never go by one name
    if renamed:
        print(renamed, file=sys.stderr)
    run = store.create(config.to_dict(), name=config.name or config.arch, queued=args.submit)
    if args.submit:
        print(run.id)
        print(f"queued {run.path}: the dashboard or `python -m core worker` trains it", file=sys.stderr)
        return 0
    print(f"run {run.id}: {run.path}", file=sys.stderr)
    return report(run, train_here(run, config, resume=False, quiet=args.quiet))


def resume(args: argparse.Namespace) -> int:
    run = Run(args.resume)
    try:
        config = TrainConfig.from_dict(run.config()).validate()
    except (ValueError, TypeError) as exc:
        print(f"error: {run.path} has no usable config: {exc}", file=sys.stderr)
        return 2
    if not run.can_resume():
        print(f"error: run {run.id} is {run.state()} and has no completed epoch to resume from", file=sys.stderr)
        return 2
    if args.submit:
        RunStore(run.path.parent).requeue(run, resume=True)
        print(run.id)
        return 0
    run.clear_live_files()  # a Stop that ended the last attempt must not end this one
    print(f"resuming {run.id} from epoch {run.resume_epoch()} (epoch {run.checkpoint_epoch()} is done)",
          file=sys.stderr)
    return report(run, train_here(run, config, resume=True, quiet=args.quiet))


def _headline(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "auc", "average_precision")
    return {"decided_at": decision_rule(metrics.get("threshold"))} | {k: metrics.get(k) for k in keys} | {
        f"recall_{name}": values["recall"] for name, values in metrics.get("per_class", {}).items()}


if __name__ == "__main__":
    sys.exit(main())
