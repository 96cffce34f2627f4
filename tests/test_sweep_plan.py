"""The Sweeps page's form without Streamlit (core.present.sweep_plan): the base settings and where
they come from, the swept values with one message per problem, every run's config and the preview."""
import json

import pytest

from core.present import estimate, sweep_plan
from core.settings.config import TrainConfig
from core.settings.recipes import recipe
from core.store.sweeps import Sweep


def test_the_starting_points_on_offer():
    assert sweep_plan.base_sources(False, False) == ["recipe", "defaults"]
    assert sweep_plan.base_sources(True, True) == ["train", "recipe", "defaults", "run"]


def test_each_starting_point_gives_a_base_without_run_identity():
    train = TrainConfig(name="mine", dropout=0.3, epochs=4)
    assert sweep_plan.starting_base("train", train)["dropout"] == 0.3
    assert sweep_plan.starting_base("train", train.to_dict())["name"] == ""  # a dict from the Train page too
    run = sweep_plan.starting_base("run", run_config=TrainConfig(name="r", sweep_id="s", cv_folds=3).to_dict())
    assert (run["name"], run["sweep_id"], run["cv_folds"]) == ("", "", 0)
    assert sweep_plan.starting_base("defaults") == TrainConfig().to_dict()
    assert sweep_plan.starting_base("recipe") == recipe("binary").to_dict()
    chosen = {"data_source": "folder", "data_path": "/x", "task": "subtype", "image_size": 64}
    on_folder = sweep_plan.starting_base("recipe", dataset_settings=chosen)
    assert (on_folder["arch"], on_folder["task"], on_folder["image_size"]) == (recipe("subtype").arch, "subtype", 64)


@pytest.mark.parametrize("text, message", [
    ("{not json", "The base settings are not valid JSON: Expecting property name enclosed in double quotes "
                  "(line 1, column 2)."),
    ("[1, 2]", "The base settings are not valid: the base settings must be a JSON object ({...})"),
    ('{"colour": "red"}', "The base settings are not valid: unknown TrainConfig settings: colour"),
])
def test_an_unusable_base_says_why(text, message):
    with pytest.raises(ValueError) as raised:
        sweep_plan.parse_base(text)
    assert str(raised.value).startswith(message)


def test_a_usable_base_and_its_summary():
    base = sweep_plan.parse_base(json.dumps({"arch": "mlp", "epochs": 2, "learning_rate": 0.003}))
    assert base == {"arch": "mlp", "epochs": 2, "learning_rate": 0.003}
    summary = sweep_plan.base_summary(base)
    assert summary.startswith("**Base:** mlp · 2 epochs · batch ") and " lr 0.003 · " in summary


def test_swept_values_are_typed_and_every_problem_is_named():
    base = TrainConfig().to_dict()
    axes, problems = sweep_plan.parse_axes([("dropout", "0.2, 0.4"), ("image_size", "64.0, 96")], base)
    assert axes == [("dropout", [0.2, 0.4]), ("image_size", [64, 96])] and problems == []
    _, problems = sweep_plan.parse_axes([("", "1"), ("dropout", "0.2,,0.4")], base)
    assert problems[0] == "Setting 1 (?): name the setting to vary"
    assert problems[1].startswith("Setting 2 (dropout): an empty value in")
    _, problems = sweep_plan.parse_axes([("dropout", "0.2"), ("dropout", "0.4")], base)
    assert problems == ["The two swept settings must differ."]
    _, problems = sweep_plan.parse_axes([("no_such_setting", "1")], base)
    assert problems == [f"Setting 1 (no_such_setting): no_such_setting is not a setting of a {base['arch']} run"]


def test_every_run_of_the_plan_is_a_config():
    base = TrainConfig(epochs=1).to_dict()
    configs = sweep_plan.planned_configs(base, [("dropout", [0.2, 0.4])], "cv", 3)
    assert len(configs) == 6 and {c["cv_folds"] for c in configs} == {3}
    assert sorted({c["dropout"] for c in configs}) == [0.2, 0.4]
    assert len(sweep_plan.planned_configs(base, [("dropout", [0.2])], "seeds", 2)) == 2
    assert sweep_plan.model_cost_args({"arch": "mlp", "image_size": 64, "color_mode": "rgb", "task": "subtype",
                                       "arch_params": {"b": 1, "a": 2}}) == ("mlp", 64, 3, 3, '{"a": 2, "b": 1}')


def timed_run(config: dict, epoch_seconds: float, epochs: int = 3) -> estimate.PastRun:
    history = [{"epoch": i + 1, "seconds": epoch_seconds} for i in range(epochs)]
    return estimate.PastRun(config, history, duration_s=epoch_seconds * epochs + 5)


def test_the_preview_counts_runs_and_says_how_long_they_take():
    configs = sweep_plan.planned_configs(TrainConfig(epochs=2).to_dict(), [("dropout", [0.2, 0.4])], "seeds", 3)
    unknown = sweep_plan.preview(configs, "seeds", 3, past=[])
    assert (unknown.points, unknown.runs, unknown.runs_help) == (2, 6, "2 points × 3 seeds")
    assert unknown.time == "after the first epoch" and "no finished run on this machine" in unknown.time_note
    known = sweep_plan.preview(configs, "cv", 3, past=[timed_run(TrainConfig(epochs=3).to_dict(), 10.0)])
    assert known.runs_help == "2 points × 3 folds"
    assert known.time == "2 min 30 s"  # 6 runs x (2 epochs x 10 s + 5 s overhead), learned from the same model
    assert known.time_note.startswith("About 2 min 30 s for 6 runs, one after another, from finished runs")
    assert sweep_plan.queue_note(0) is None and sweep_plan.queue_note(2) == "2 run(s) already in the queue go first."


def test_a_grid_of_three_settings_is_planned_and_a_fourth_refused():
    base = TrainConfig(epochs=1).to_dict()
    axes, problems = sweep_plan.parse_axes([("optimizer", "adam, sgd"), ("learning_rate", "0.01, 0.001"),
                                            ("epochs", "2, 4")], base)
    assert problems == [] and axes[2] == ("epochs", [2, 4])
    configs = sweep_plan.planned_configs(base, axes, "seeds", 2)
    assert len(configs) == 16
    assert {(c["optimizer"], c["learning_rate"], c["epochs"]) for c in configs} == {
        (o, lr, e) for o in ("adam", "sgd") for lr in (0.01, 0.001) for e in (2, 4)}
    _, problems = sweep_plan.parse_axes([("epochs", "1"), ("dropout", "0.2"), ("epochs", "2")], base)
    assert problems == ["The three swept settings must differ."]
    four = [{"setting": s, "values": [v]} for s, v in (("dropout", 0.2), ("epochs", 1), ("optimizer", "sgd"),
                                                        ("batch_size", 8))]
    with pytest.raises(ValueError, match="a sweep varies one, two or three settings"):
        Sweep.from_dict({"base": base, "axes": four})
    assert len(Sweep.from_dict({"base": base, "axes": four[:3]}).configs()) == 1
