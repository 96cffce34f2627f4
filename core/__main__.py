"""One command line for the engine: `python -m core COMMAND ...` (`python -m core COMMAND --help`).

    python -m core train ...      train a run (or queue it with --submit, resume it with --resume)
    python -m core worker ...     train queued runs without the dashboard
    python -m core sweep ...      run a sweep from a JSON spec
    python -m core evaluate ...   a finished run's metrics as JSON
    python -m core predict ...    predict images with a run, one JSON line each
    python -m core export ...     a run's model card, SavedModel and TFLite exports
    python -m core baseline ...   logistic regression on the pixels (L1/L2, C chosen on validation)
"""
import importlib
import sys

COMMANDS = ("train", "worker", "sweep", "evaluate", "predict", "export", "baseline")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    # each command imports only what it needs (`train --submit` stays free of TensorFlow)
    return importlib.import_module(f"core.cli.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
