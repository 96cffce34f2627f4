"""Logistic regression on the pixels (scikit-learn), the classic linear baseline, as a run: an L1 or
L2 penalty, its strength C chosen on the validation patients from a grid, and its validation and
test figures at the threshold chosen on validation. The same as

    python -m core train --arch logistic_regression --set arch_params.penalty=l1 \\
        --set 'arch_params.c_grid=[0.01, 0.1, 1]' ...

so it lands in the run store (Runs, Compare, Evaluate) and prints the run's result as JSON. Every other
flag is `python -m core train`'s (--data-path, --image-size, --task, --runs-dir, --submit, ...).

    python -m core baseline --image-size 64                      # L2, C from 0.001 to 10
    python -m core baseline --penalty l1 --c 0.01 0.1 1 --task subtype

Research tool, not for clinical use.
"""
from __future__ import annotations

import argparse
import json

from core.cli import train
from core.settings.architectures import C_GRID, LOGISTIC_PENALTIES


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """The baseline's own flags, and the rest for `python -m core train`."""
    parser = argparse.ArgumentParser(prog="python -m core baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalty", choices=LOGISTIC_PENALTIES, default="l2", help="the weights' penalty")
    parser.add_argument("--c", type=float, nargs="+", default=list(C_GRID), metavar="C",
                        help="the inverse penalty strengths to try (default: %(default)s)")
    return parser.parse_known_args(argv)


def train_argv(args: argparse.Namespace, rest: list[str]) -> list[str]:
    return ["--arch", "logistic_regression", "--set", f"arch_params.penalty={args.penalty}",
            "--set", f"arch_params.c_grid={json.dumps(args.c)}", *rest]


def main(argv=None) -> int:
    return train.main(train_argv(*parse_args(argv)))
