"""Logistic regression on the pixels (scikit-learn), the classic linear baseline, as JSON: an L1 or
L2 penalty, its strength C chosen on the validation patients from a grid, and its validation and
test figures at the threshold chosen on validation, on the data and split a run of the same
settings uses.

    python -m core baseline --image-size 64                      # L2, C from 0.001 to 10
    python -m core baseline --penalty l1 --c 0.01 0.1 1 --task subtype

Research tool, not for clinical use.
"""
from __future__ import annotations

import argparse

from core.cli import print_json
from core.cli.train import add_setting_flag
from core.ml import classic
from core.settings.config import SETTINGS, TrainConfig

# The TrainConfig settings that decide the data and split, which the baseline shares with runs.
DATA_SETTINGS = ("data_source", "data_path", "task", "image_size", "color_mode", "split", "val_fraction",
                 "test_fraction", "train_fraction", "cv_folds", "cv_fold", "seed", "split_seed")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalty", choices=classic.PENALTIES, default="l2", help="the weights' penalty")
    parser.add_argument("--c", type=float, nargs="+", default=list(classic.DEFAULT_C_GRID), metavar="C",
                        help="the inverse penalty strengths to try (default: %(default)s)")
    data = parser.add_argument_group("data and split (as a run's settings)")
    for name in DATA_SETTINGS:
        add_setting_flag(data, SETTINGS[name])
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    given = {name: getattr(args, name) for name in DATA_SETTINGS if getattr(args, name) is not None}
    return print_json(lambda: classic.logistic_baseline(TrainConfig.from_dict(given), args.penalty, args.c),
                      (ValueError, FileNotFoundError))
