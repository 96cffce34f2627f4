"""The one time estimator of the Train and Sweeps pages: whole-epoch wall time plus per-run
overhead, learned from finished runs; scaled by model cost when the model has never run."""
import pytest

from core.present import estimate
from core.settings.config import TrainConfig
from core.store.sweeps import Sweep, SweepAxis

IMAGES = {"train": 700, "val": 150, "test": 150}


def past(epoch_seconds, duration=None, macs=None, images=IMAGES, **config):
    settings = {**TrainConfig(arch="seed_cnn", image_size=64).to_dict(), **config}
    history = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(epoch_seconds)]
    return estimate.PastRun(settings, history, duration, macs, dict(images), sum(images.values()))


def config(**values):
    return TrainConfig(**{"arch": "seed_cnn", "image_size": 64, **values}).to_dict()


def test_a_run_is_its_epochs_at_the_steady_epoch_time_plus_the_overhead():
    # 2 s per steady epoch (validation included); the rest of the 20 s is the run's overhead:
    # loading, building, the first epoch's tracing and the final evaluation.
    runs = [past([5.0, 2.0, 2.0], duration=20.0)]
    guess = estimate.estimate_run(config(epochs=10), runs)
    assert guess.epoch_seconds == pytest.approx(2.0) and guess.overhead_seconds == pytest.approx(14.0)
    assert guess.seconds == pytest.approx(2.0 * 10 + 14) and guess.basis == estimate.SAME_MODEL
    assert not guess.rough


def test_a_first_decoding_of_the_images_is_not_counted_as_overhead():
    # The basis run spent 8 s decoding the images; the next run reads them from the cache.
    decoding = past([5.0, 2.0, 2.0], duration=20.0)
    decoding.decode_seconds = 8.0
    guess = estimate.estimate_run(config(epochs=10), [decoding])
    assert guess.overhead_seconds == pytest.approx(6.0)


def test_past_runs_know_whether_they_decoded_their_images(store, make_run):
    run = make_run("done", image_size=64)
    summary = run.summary()
    run.write_summary({**summary, "dataset": {"images": 1000, "load_seconds": 7.5, "from_cache": False}})
    assert estimate.past_runs(store)[0].decode_seconds == 7.5
    run.write_summary({**summary, "dataset": {"images": 1000, "load_seconds": 0.3, "from_cache": True}})
    assert estimate.past_runs(store)[0].decode_seconds == 0.0


def test_less_training_data_shortens_only_the_training_part_of_an_epoch():
    runs = [past([2.0, 2.0], duration=10.0)]
    full = estimate.estimate_run(config(epochs=4), runs)
    half = estimate.estimate_run(config(epochs=4, train_fraction=0.5), runs)
    # An epoch is 3 x 700 train + 150 val forward passes; half the training images: 3 x 350 + 150.
    assert half.epoch_seconds == pytest.approx(2.0 * (3 * 350 + 150) / (3 * 700 + 150))
    assert half.seconds < full.seconds


def test_known_split_sizes_from_the_page_are_used():
    runs = [past([2.0, 2.0], duration=6.0)]
    doubled = {"train": 1400, "val": 300, "test": 300}
    assert estimate.estimate_run(config(epochs=1), runs, images=doubled).epoch_seconds == pytest.approx(4.0)


def test_runs_on_the_same_dataset_are_preferred_and_others_are_rough():
    runs = [past([9.0, 9.0], duration=18.0, data_source="folder", data_path="/big"),
            past([1.0, 1.0], duration=2.0, data_source="builtin")]
    same = estimate.estimate_run(config(epochs=2, data_source="folder", data_path="/big"), runs)
    assert same.seconds == pytest.approx(18.0) and not same.rough
    elsewhere = estimate.estimate_run(config(epochs=2, data_source="folder", data_path="/other"), runs)
    assert elsewhere.rough and elsewhere.basis == estimate.SAME_MODEL


def test_an_unseen_model_is_scaled_by_its_cost_from_other_runs_and_marked_rough():
    runs = [past([4.0, 2.0], duration=10.0, macs=1_000_000)]
    bigger = config(arch="deep_bn_cnn", epochs=3)
    assert estimate.estimate_run(bigger, runs).seconds is None  # without its MACs nothing can be said
    guess = estimate.estimate_run(bigger, runs, macs=3_000_000)
    assert guess.basis == estimate.SCALED and guess.rough
    assert guess.epoch_seconds == pytest.approx(6.0) and guess.seconds == pytest.approx(6.0 * 3 + 6.0)


TINY = {"train": 28, "val": 6, "test": 6}


def test_one_epoch_runs_are_passed_over_while_a_run_with_a_steady_epoch_can_tell():
    # What a user met after the test suite's tiny runs: one epoch of 40 images, 5 s of it tracing.
    # Scaled to the 1,000 images of the planned run, that read as 120 s per epoch.
    tiny = [past([5.0], duration=9.0, images=TINY, macs=1_000, data_source="folder", data_path="/tiny")
            for _ in range(10)]
    guess = estimate.estimate_run(config(epochs=10), tiny, images=IMAGES, macs=1_000)
    assert guess.epoch_seconds == pytest.approx(5.0 * 1000 / 40) and guess.first_epochs_only
    # With a steady run of another model on the same data, that run is the guide, scaled by cost.
    steady = past([4.0, 1.0, 1.0], duration=12.0, macs=500, arch="mlp")
    guess = estimate.estimate_run(config(epochs=10), tiny + [steady], images=IMAGES, macs=1_000)
    assert guess.basis == estimate.SCALED and guess.epoch_seconds == pytest.approx(2.0)
    assert not guess.first_epochs_only
    # And a steady run of the same model beats any number of one-epoch runs of it on the same data.
    same = [past([5.0], duration=9.0, images=IMAGES) for _ in range(5)] + [past([4.0, 2.0, 2.0], duration=14.0)]
    assert estimate.estimate_run(config(epochs=10), same).epoch_seconds == pytest.approx(2.0)


def test_with_only_one_epoch_runs_the_estimate_says_it_is_likely_too_long():
    runs = [past([5.0], duration=9.0)]
    guess = estimate.estimate_run(config(epochs=3), runs)
    assert guess.seconds == pytest.approx(3 * 5.0 + 4.0) and guess.rough and guess.first_epochs_only
    assert "likely too long" in estimate.basis_text([guess]) and estimate.hedge([guess]) == "≤ "
    assert "likely too long" not in estimate.basis_text([estimate.estimate_run(config(), [past([5.0, 2.0], 9.0)])])


def test_no_finished_run_means_no_estimate():
    assert estimate.estimate_run(config(), [], macs=1e6).seconds is None
    assert estimate.estimate_sweep([config(), config()], []).total_seconds is None


def test_a_sweep_adds_its_runs_and_asks_for_costs_only_when_needed():
    runs = [past([2.0, 2.0], duration=8.0, macs=1_000)]
    asked = []

    def macs_of(cfg):
        asked.append(cfg["arch"])
        return 2_000

    sweep = estimate.estimate_sweep([config(epochs=2), config(arch="deep_bn_cnn", epochs=2)], runs, macs_of)
    assert asked == ["deep_bn_cnn"]
    assert sweep.runs[0].seconds == pytest.approx(2 * 2.0 + 4.0)
    assert sweep.runs[1].seconds == pytest.approx(2 * 4.0 + 4.0)
    assert sweep.total_seconds == pytest.approx(8.0 + 12.0) and sweep.rough
    assert "MACs" in estimate.basis_text(sweep.runs)


def test_past_runs_read_from_the_store(store, make_run):
    make_run("done", image_size=32, epochs=3)  # 3 epochs of 2 s, 30 s in all
    make_run("failed", image_size=32, epochs=3, error="boom")  # not learned from
    found = estimate.past_runs(store)
    assert len(found) == 1 and found[0].macs == 5000 and found[0].duration_s == pytest.approx(30.0, abs=1.0)
    configs = [c.to_dict() for c in Sweep(TrainConfig(image_size=32, epochs=5), [
        SweepAxis("dropout", [0.2, 0.4])], repeats=2).configs()]
    sweep = estimate.estimate_sweep(configs, found)
    # No split sizes in these summaries: only ratios of shares count, and all runs share the split.
    assert sweep.total_seconds == pytest.approx(4 * (2.0 * 5 + 24.0), abs=1.0)


def test_split_images_come_from_the_summary_split_report():
    summary = {"split": {"counts": {"train": {"A": 3, "B": 4}, "val": {"A": 1, "B": 1}, "test": {"A": 2, "B": 0}}}}
    assert estimate.split_images(summary) == {"train": 7, "val": 2, "test": 2}
    assert estimate.split_images({}) == {}


# ----------------------------------------------------------------------------- time left

def test_a_running_run_has_its_own_eta_and_a_queued_one_its_estimate():
    assert estimate.time_left(300.0, {"state": "running", "eta_s": 42.0}, started=1000.0, now=1100.0) == 42.0
    # Before its first batches the training process has no ETA: the estimate less the time it has run.
    assert estimate.time_left(300.0, {"state": "running", "eta_s": None}, started=1000.0, now=1100.0) == 200.0
    assert estimate.time_left(300.0, {"state": "running"}, started=1000.0, now=2000.0) == 0.0  # overran
    assert estimate.time_left(300.0, {"state": "queued"}, started=None, now=1100.0) == 300.0
    assert estimate.time_left(None, {"state": "queued"}, started=None, now=1100.0) is None


def test_the_queue_ends_one_run_after_another_on_each_free_slot():
    assert estimate.finish_times([60.0, 30.0, 10.0]) == [60.0, 90.0, 100.0]
    assert estimate.finish_times([60.0, 30.0, 10.0, 50.0], slots=2) == [60.0, 30.0, 40.0, 90.0]
    # A run of unknown length: neither it nor any run after it can be given a time.
    assert estimate.finish_times([60.0, None, 10.0]) == [60.0, None, None]
    assert estimate.finish_times([]) == []
