"""Successive halving in sweeps: the rule on values whose answer is known, the records each run keeps in
its own folder, the sweep spec, the budget estimate, the results view, the command line, and a real
sweep trained by a JobManager in which the hopeless point is stopped at its rung."""
import json
import math
import random

import numpy as np
import pytest

from core.cli.sweep import format_table
from core.ml import halving
from core.present import estimate, sweep_plan
from core.present import sweeps as sweep_view
from core.settings.config import TrainConfig
from core.files import write_json
from core.store.runs import RunStore
from core.store.sweeps import Sweep, load_sweep, submit_sweep, sweep_results, sweeps_dir
from tests import apptest_support

# ----------------------------------------------------------------------------- the rule


def test_rungs_are_min_epochs_times_powers_of_the_rate_below_the_last_epoch():
    assert halving.rungs(9, 3, 1) == [1, 3]
    assert halving.rungs(10, 2, 1) == [1, 2, 4, 8]
    assert halving.rungs(8, 2, 1) == [1, 2, 4]  # the last epoch is no rung: the run ends there anyway
    assert halving.rungs(20, 2, 2) == [2, 4, 8, 16]
    assert halving.rungs(30, 3, 2) == [2, 6, 18]
    assert halving.rungs(3, 2, 3) == [] and halving.rungs(10, 0, 1) == []
    with pytest.raises(ValueError, match="rate of at least 2"):
        halving.rungs(10, 1, 1)


def test_the_first_run_at_a_rung_goes_on():
    for monitor in ("val_loss", "val_accuracy"):
        assert halving.decide(123.0, [], 2, monitor) == halving.Decision(False, None)


def test_lower_loss_is_better_and_the_worse_half_stops_at_rate_2():
    recorded = [0.2, 0.4, 0.6, 0.8]  # the median of the losses is 0.5
    assert halving.decide(0.55, recorded, 2, "val_loss") == halving.Decision(True, pytest.approx(0.5))
    assert halving.decide(0.45, recorded, 2, "val_loss") == halving.Decision(False, pytest.approx(0.5))
    assert not halving.decide(0.5, recorded, 2, "val_loss").stop  # a tie goes on


def test_higher_accuracy_is_better_and_the_worse_half_stops_at_rate_2():
    recorded = [0.6, 0.7, 0.8, 0.9]
    assert halving.decide(0.74, recorded, 2, "val_accuracy") == halving.Decision(True, pytest.approx(0.75))
    assert not halving.decide(0.76, recorded, 2, "val_accuracy").stop
    assert not halving.decide(0.75, recorded, 2, "val_accuracy").stop  # a tie goes on


def test_at_rate_3_only_the_best_third_goes_on():
    recorded = [1.0, 2.0, 3.0, 4.0]
    # accuracies: the 2/3 quantile is 3.0; losses: the best third are at or below 2.0
    assert halving.decide(2.99, recorded, 3, "val_accuracy").stop
    assert not halving.decide(3.0, recorded, 3, "val_accuracy").stop
    assert halving.decide(2.01, recorded, 3, "val_loss") == halving.Decision(True, pytest.approx(2.0))
    assert not halving.decide(2.0, recorded, 3, "val_loss").stop
    assert not halving.decide(0.5, recorded, 3, "val_loss").stop
    # the same value goes on at rate 2 (the best half) and stops at rate 3 (the best third)
    assert not halving.decide(2.5, recorded, 2, "val_loss").stop and halving.decide(2.5, recorded, 3, "val_loss").stop


def test_a_diverged_run_is_worse_than_any_recorded_value_and_missing_values_are_left_out():
    assert halving.decide(float("nan"), [0.5], 2, "val_loss").stop
    assert halving.decide(None, [0.5], 2, "val_accuracy").stop
    assert not halving.decide(float("nan"), [], 2, "val_loss").stop  # nothing to compare with yet
    assert halving.decide(0.9, [None, 0.5], 2, "val_loss") == halving.Decision(True, pytest.approx(0.5))
    assert not halving.decide(np.float32(0.7), [0.4, 0.6], 2, "val_accuracy").stop  # numpy values too


def test_the_quantile_is_numpys_linear_one():
    rng = random.Random(3)
    for n in (1, 2, 5, 12):
        values = [rng.random() for _ in range(n)]
        for q in (0.5, 2 / 3, 0.75, 0.875):
            assert halving.quantile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def simulated_epochs(run_epochs: list[int], rate: int, min_epochs: int, trials: int = 1500) -> float:
    """Epochs the sweep trains, averaged over sweeps whose runs reach their rungs in queue order with
    random results, each rung decided by the real rule."""
    rng, total = random.Random(0), 0
    for _ in range(trials):
        recorded: dict[int, list] = {}
        for epochs in run_epochs:
            trained = epochs
            for rung in halving.rungs(epochs, rate, min_epochs):
                value = rng.random()
                stop = halving.decide(value, recorded.get(rung, []), rate, "val_accuracy").stop
                recorded.setdefault(rung, []).append(value)
                if stop:
                    trained = rung
                    break
            total += trained
    return total / trials


@pytest.mark.parametrize("run_epochs, rate, min_epochs", [([9] * 9, 3, 1), ([10] * 12, 2, 1), ([20] * 6, 2, 2),
                                                          ([4, 8] * 5, 2, 1), ([5, 10, 20] * 4, 2, 1)])
def test_the_budget_estimate_agrees_with_the_rule_played_out(run_epochs, rate, min_epochs):
    expected = halving.expected_epochs(run_epochs, rate, min_epochs)
    assert expected[0] == run_epochs[0]  # the first run always trains all its epochs
    assert all(e <= full for e, full in zip(expected, run_epochs))
    assert sum(expected) == pytest.approx(simulated_epochs(run_epochs, rate, min_epochs), rel=0.05)
    assert sum(expected) < 0.6 * sum(run_epochs)


# ----------------------------------------------------------------------------- records in the run folders

def sweep_run(store: RunStore, sweep_id: str, monitor: str = "val_loss"):
    config = TrainConfig(sweep_id=sweep_id, monitor=monitor, epochs=9, halving_rate=2)
    return store.create(config.to_dict(), queued=False)


def test_each_run_records_in_its_own_folder_and_reads_its_siblings_of_the_same_sweep(store):
    first, second, third = (sweep_run(store, "sweep-a") for _ in range(3))
    other_sweep, other_monitor = sweep_run(store, "sweep-b"), sweep_run(store, "sweep-a", "val_accuracy")
    assert halving.check_rung(first, "sweep-a", "val_loss", 2, 1, 0.3) is None  # the first at the rung
    assert halving.check_rung(other_sweep, "sweep-b", "val_loss", 2, 1, 0.9) is None  # another sweep's
    assert halving.check_rung(other_monitor, "sweep-a", "val_accuracy", 2, 1, 0.1) is None  # not comparable
    first_record = halving.record_path(first.path).read_bytes()
    assert json.loads(first_record) == {"sweep_id": "sweep-a", "monitor": "val_loss", "values": {"1": 0.3}}

    assert halving.sibling_values(second, "sweep-a", "val_loss", 1) == [0.3]
    halted = halving.check_rung(second, "sweep-a", "val_loss", 2, 1, 0.5)
    assert halted == {"epoch": 1, "value": 0.5, "cutoff": 0.3, "rung": 1, "rate": 2, "monitor": "val_loss",
                      "compared_with": 1}
    assert second.status()["halted"] == halted and halving.read_record(second.path)["halted"] == halted
    assert halving.record_path(first.path).read_bytes() == first_record  # never writes a sibling's folder
    assert halving.check_rung(second, "sweep-a", "val_loss", 2, 1, 0.5) is None  # decided once per rung

    # the third compares with both (stopped runs count): the median of 0.3 and 0.5 is 0.4
    assert sorted(halving.sibling_values(third, "sweep-a", "val_loss", 1)) == [0.3, 0.5]
    assert halving.check_rung(third, "sweep-a", "val_loss", 2, 1, 0.41)["cutoff"] == pytest.approx(0.4)
    assert halving.sibling_values(third, "sweep-a", "val_loss", 2) == []  # nobody reached epoch 2 yet


def test_a_non_finite_value_is_recorded_as_missing(store):
    run = sweep_run(store, "sweep-n")
    assert halving.check_rung(run, "sweep-n", "val_loss", 2, 1, float("inf")) is None
    assert halving.read_record(run.path)["values"] == {"1": None}


def test_no_callback_outside_a_sweep_with_halving_on(store):
    run = store.create(TrainConfig().to_dict(), queued=False)
    assert halving.halving_callback(run, TrainConfig(halving_rate=2, epochs=5)) is None  # not in a sweep
    assert halving.halving_callback(run, TrainConfig(sweep_id="s", epochs=5)) is None  # halving off
    assert halving.halving_callback(run, TrainConfig(sweep_id="s", halving_rate=2, halving_min_epochs=5,
                                                     epochs=5)) is None  # no rung before the end
    assert halving.summary_fields(None) == {}


# ----------------------------------------------------------------------------- the sweep spec

BASE = {"arch": "seed_cnn", "image_size": 32, "epochs": 9}
AXES = [{"setting": "learning_rate", "values": [0.01, 0.001, 1e-6]}]


def test_halving_is_a_sweep_setting_given_to_every_run_and_never_an_axis():
    sweep = Sweep.from_dict({"base": BASE, "axes": AXES, "halving_rate": 3, "halving_min_epochs": 1})
    assert {(c.halving_rate, c.halving_min_epochs) for c in sweep.configs("s")} == {(3, 1)}
    assert Sweep.from_dict(sweep.to_dict()).halving_rate == 3
    from_base = Sweep.from_dict({"base": {**BASE, "halving_rate": 2}, "axes": AXES})
    assert from_base.halving_rate == 2  # left out at the top: the base's
    assert Sweep.from_dict({"base": BASE, "axes": AXES}).halving_rate == 0
    for name in ("halving_rate", "halving_min_epochs"):
        with pytest.raises(ValueError, match=f"{name} is set by the sweep itself: use the sweep's successive"):
            Sweep.from_dict({"base": BASE, "axes": [{"setting": name, "values": [2, 3]}]})
    with pytest.raises(ValueError, match="halving_rate must be 0 \\(off\\) or a whole number between 2 and 8"):
        Sweep.from_dict({"base": BASE, "axes": AXES, "halving_rate": 1})
    with pytest.raises(ValueError, match="decides after 9 epoch\\(s\\), but the longest run trains 9"):
        Sweep.from_dict({"base": BASE, "axes": AXES, "halving_rate": 2, "halving_min_epochs": 9})


def test_the_plan_says_the_budget_with_halving_is_at_most_the_full_grid():
    base = TrainConfig(epochs=9).to_dict()
    configs = sweep_plan.planned_configs(base, [("dropout", [0.1, 0.2, 0.3])], "seeds", 3, 3, 1)
    assert len(configs) == 9 and {c["halving_rate"] for c in configs} == {3}
    budget = sweep_plan.halving_budget(configs)
    assert budget.full_epochs == 81 and budget.expected_epochs == pytest.approx(32.22, abs=0.01)
    past = [estimate.PastRun(TrainConfig(epochs=3).to_dict(), [{"epoch": i, "seconds": 10.0} for i in (1, 2, 3)],
                             duration_s=35.0)]  # 10 s an epoch, 5 s of overhead a run
    shown = sweep_plan.preview(configs, "seeds", 3, past)
    assert shown.time == "14 min 15 s"  # the full grid: 9 runs x (9 x 10 s + 5 s)
    assert shown.halving_note.startswith("Successive halving: at most the full grid (81 epochs), about 40% of it "
                                         "(≈ 32 epochs, ≈ 6 min 7 s)")  # 9 x 5 s + 32.22 x 10 s
    assert sweep_plan.preview(sweep_plan.planned_configs(base, [("dropout", [0.1])], "seeds", 1),
                              "seeds", 1, past).halving_note is None
    with pytest.raises(ValueError, match="successive halving decides after 9"):
        sweep_plan.planned_configs(base, [("dropout", [0.1])], "seeds", 1, 2, 9)
    _, problems = sweep_plan.parse_axes([("halving_rate", "2, 3")], base)
    assert problems == ["Setting 1 (halving_rate): halving_rate is set by the sweep itself: use the sweep's "
                        "successive halving option"]
    assert sweep_plan.halving_label(0).startswith("off")
    assert sweep_plan.halving_label(2) == "rate 2: the best half go on at each rung"


# ----------------------------------------------------------------------------- the results

def halving_sweep(store, make_run) -> dict:
    """A finished sweep of three points (written, not trained); the last two stopped at rungs 1 and 3."""
    points = AXES[0]["values"]
    runs = [make_run("done", epochs=9, learning_rate=lr, sweep_id="sweep-h", halving_rate=3) for lr in points]
    for run, epoch in zip(runs[1:], (1, 3)):
        run.update_status(epoch=epoch)
        run.write_summary({**run.summary(), "halted": {"epoch": epoch, "rung": epoch, "value": 0.9, "cutoff": 0.5}})
    record = {"id": "sweep-h", "created": 0, "name": "h", "base": BASE, "axes": AXES, "repeats": 1, "cv_folds": 0,
              "halving_rate": 3, "halving_min_epochs": 1,
              "runs": [{"run_id": r.id, "point": {"learning_rate": lr}, "seed": 42, "fold": 0}
                       for r, lr in zip(runs, points)]}
    write_json(sweeps_dir(store) / "sweep-h.json", record)
    return record


def test_the_results_say_which_points_were_stopped_and_at_which_epoch(store, make_run):
    record = halving_sweep(store, make_run)
    rows = sweep_results(store, "sweep-h")
    assert [(r["halted"], r["halted_epochs"], r["epochs_trained"]) for r in rows] == [(0, [], 9), (1, [1], 1),
                                                                                       (1, [3], 3)]
    frame = sweep_view.results_frame(rows, ["learning_rate"])
    shown = sweep_view.display_frame(frame, ["learning_rate"], halving=True)
    assert list(shown[sweep_view.HALTED_COLUMN]) == ["—", "1 of 1, at epoch 1", "1 of 1, at epoch 3"]
    assert sweep_view.HALTED_COLUMN not in sweep_view.display_frame(frame, ["learning_rate"])
    summary = sweep_view.halving_summary(record, frame)
    assert summary.startswith("2 of 3 points stopped early by successive halving (rate 3: the best third go on "
                              "at epochs 1, 3), at epochs 1, 3: 13 of 27 epochs trained.")
    assert "metrics are those of its shorter training" in summary
    assert "successive halving (rate 3" in sweep_view.sweep_caption(record)
    assert sweep_view.halving_summary({**record, "halving_rate": 0}, frame) is None
    members = sweep_view.member_table(store, record)
    assert [None if math.isnan(e) else e for e in members["halted at epoch"]] == [None, 1, 3]
    table = format_table(rows, ["learning_rate"], "test_accuracy", halving=True)
    assert table.splitlines()[2].endswith("| 1/1 | 1 of 1, at epoch 1")


def test_the_sweeps_page_offers_halving_and_shows_the_stopped_points(app_env, store, make_run):
    halving_sweep(store, make_run)
    at = apptest_support.open_page("pages/sweeps.py", timeout=120)
    apptest_support.assert_clean(at)
    rate = at.selectbox(key="sweep_halving_rate")
    assert rate.value == 0 and list(rate.options) == [sweep_plan.halving_label(r) for r in (0, 2, 3, 4)]
    assert not [n for n in at.number_input if n.key == "sweep_halving_min_epochs"]
    at.text_area(key="sweep_base_json").set_value(json.dumps({**BASE, "epochs": 4}))
    rate.set_value(2).run()
    apptest_support.assert_clean(at)
    assert at.number_input(key="sweep_halving_min_epochs").value == 1
    assert "Successive halving: at most the full grid (48 epochs)" in apptest_support.texts(at)  # 4 x 3 seeds x 4
    at.number_input(key="sweep_halving_min_epochs").set_value(4).run()
    assert any("successive halving decides after 4 epoch(s)" in e.value for e in at.error)
    table = next(d.value for d in at.dataframe if "runs done" in d.value.columns)
    assert list(table[sweep_view.HALTED_COLUMN]) == ["—", "1 of 1, at epoch 1", "1 of 1, at epoch 3"]
    assert "2 of 3 points stopped early by successive halving" in apptest_support.texts(at)


# ----------------------------------------------------------------------------- a real sweep

@pytest.mark.slow  # two tiny runs in training processes, and the page
def test_a_hopeless_point_is_stopped_at_its_rung_by_a_real_sweep(manager, chest_folder):
    base = {"arch": "seed_cnn", "image_size": 32, "epochs": 3, "batch_size": 16, "data_source": "folder",
            "data_path": str(chest_folder), "arch_params": {"dense_units": 8}}
    sweep = Sweep.from_dict({"name": "halving", "base": base, "halving_rate": 2, "halving_min_epochs": 1,
                             "axes": [{"setting": "learning_rate", "values": [0.01, 1e-6]}]})
    sweep_id = submit_sweep(manager, sweep)
    record = load_sweep(manager.store, sweep_id)
    for entry in record["runs"]:  # the manager trains one run at a time, in queue order
        assert manager.wait(entry["run_id"], 300) == "done"
    good, hopeless = (manager.store.get(entry["run_id"]) for entry in record["runs"])
    assert len(good.history()) == 3 and "halted" not in good.summary()
    halted = hopeless.summary()["halted"]
    assert (halted["epoch"], halted["rung"], halted["compared_with"]) == (1, 1, 1)
    assert halted["value"] > halted["cutoff"] == pytest.approx(good.history()[0]["val_loss"])
    assert len(hopeless.history()) == 1 and hopeless.summary()["stopped_early"]
    assert hopeless.summary()["test"] is not None  # evaluated, as an early-stopped run is
    frame = sweep_view.results_frame(sweep_results(manager.store, sweep_id), ["learning_rate"])
    assert int(frame["epochs_trained"].sum()) == 4 < int(frame["epochs_planned"].sum()) == 6
    assert sweep_view.halving_summary(record, frame).startswith(
        "1 of 2 points stopped early by successive halving (rate 2: the best half go on at epochs 1, 2), "
        "at epoch 1: 4 of 6 epochs trained.")

    at = apptest_support.open_page("pages/sweeps.py", timeout=120)
    apptest_support.assert_clean(at)
    table = next(d.value for d in at.dataframe if "runs done" in d.value.columns)
    assert list(table[sweep_view.HALTED_COLUMN]) == ["—", "1 of 1, at epoch 1"]
    assert "1 of 2 points stopped early by successive halving" in apptest_support.texts(at)


def test_the_sweep_command_takes_the_halving_flags_with_the_settings_messages(tmp_path, capsys):
    from core.cli.sweep import main
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"base": {**BASE, "epochs": 3}, "axes": AXES}))
    with pytest.raises(SystemExit):
        main([str(spec), "--halving-rate", "1"])
    assert "halving_rate must be 0 (off) or a whole number between 2 and 8; got" in capsys.readouterr().err
    # the flags reach the sweep: a first rung at the last epoch is refused before anything is queued
    assert main([str(spec), "--runs-dir", str(tmp_path / "runs"), "--halving-rate", "2",
                 "--halving-min-epochs", "3"]) == 2
    assert "successive halving decides after 3 epoch(s), but the longest run trains 3" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
