"""Ensembles of runs (core.ml.ensemble): the averaged probabilities of runs that scored the same images,
their own validation-chosen threshold and their cost; runs of other images are refused; the Evaluate
page puts the ensemble beside the run at the page's threshold."""
import numpy as np
import pytest

from core.ml import ensemble as ensemble_lib
from core.ml import metrics as metrics_lib
from tests.apptest_support import assert_clean, open_page, texts
from tests.conftest import write_run


def test_an_ensemble_averages_its_members_probabilities_and_chooses_its_threshold_on_validation(store):
    first, second, third = (write_run(store, seed=seed) for seed in (1, 2, 3))
    for seconds, run in zip((30.0, 40.0, 50.0), (first, second, third)):
        run.update_status(trained_s=seconds)
    ensemble = ensemble_lib.average([first, second, third], "test")
    expected = np.mean([run.predictions("test")["probabilities"] for run in (first, second, third)], axis=0)
    np.testing.assert_allclose(ensemble.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(ensemble.probabilities.sum(axis=1), 1.0, atol=1e-5)
    val = [run.predictions("val") for run in (first, second, third)]
    averaged_val = np.mean([v["probabilities"] for v in val], axis=0)
    assert ensemble.threshold == metrics_lib.decision_threshold(averaged_val, val[0]["labels"],
                                                                list(val[0]["class_names"]))
    assert ensemble.passes == 3 and ensemble.run_ids == (first.id, second.id, third.id)
    assert ensemble.trained_seconds == 120.0
    at_half = ensemble.metrics(0.5)
    assert at_half["accuracy"] == metrics_lib.classification_metrics(
        expected, ensemble.labels, ensemble.class_names, 0.5)["accuracy"]


def test_partners_are_finished_runs_that_scored_the_same_images(store):
    run, same, other_seed_same_split = write_run(store, seed=1), write_run(store, seed=2), write_run(store, seed=5)
    write_run(store, seed=3, task="subtype", class_names=["normal", "bacterial", "viral"])  # other classes
    write_run(store, seed=4, state="running")
    write_run(store, seed=6, data_source="folder", data_path="/elsewhere")  # another dataset
    assert {p.id for p in ensemble_lib.partners(store, run, "test")} == {same.id, other_seed_same_split.id}


def test_runs_of_other_images_are_refused_with_the_reason(store):
    run = write_run(store, seed=1)
    other = write_run(store, seed=2)
    saved = other.predictions("test")
    other.save_predictions("test", saved["probabilities"], saved["labels"], saved["patient_ids"],
                           np.array([f"elsewhere/{name}" for name in saved["files"]]), saved["class_names"])
    with pytest.raises(ValueError, match=f"run {other.id} scored other test images than run {run.id}"):
        ensemble_lib.average([run, other], "test")
    with pytest.raises(ValueError, match="at least two runs"):
        ensemble_lib.average([run], "test")
    assert ensemble_lib.partners(store, run, "test") == []


def test_evaluate_puts_the_ensemble_beside_the_run_at_the_pages_threshold_with_its_cost(app_env, store):
    run, partner = write_run(store, seed=1, name="first"), write_run(store, seed=2, name="second")
    alone = write_run(store, seed=3, name="three-class", task="subtype", class_names=["normal", "bacterial", "viral"])
    threshold = run.summary()["threshold"]
    at = open_page("pages/evaluate.py", {"eval_run": run.id})
    assert_clean(at)
    chooser = at.multiselect(key=f"eval_ensemble_{run.id}_test")
    assert chooser.options == [f"second ({partner.id})"]
    chooser.set_value([partner.id]).run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "ensemble of 2" in d.value.columns)
    assert table.loc["Cost: forward passes per image"].tolist() == ["1", "2"]
    accuracy = f"Accuracy @ threshold {threshold:.2f}"
    ensemble = ensemble_lib.average([run, partner], "test")
    assert table.loc[accuracy, "this run"].split(" (")[0] == f"{run.summary()['test']['accuracy']:.3f}"
    assert table.loc[accuracy, "ensemble of 2"].split(" (")[0] == f"{ensemble.metrics(threshold)['accuracy']:.3f}"
    assert f"Both columns at threshold {threshold:.2f}" in texts(at)
    lonely = open_page("pages/evaluate.py", {"eval_run": alone.id})
    assert_clean(lonely)
    assert "No other finished run scored these test images" in texts(lonely)


# ----------------------------------------------------------------------------- Diagnose

def second_model(run, runs_dir):
    """Another run of the same classes with a different real model: `run` copied, its logits shifted."""
    import shutil

    import keras

    from core.store.runs import RunStore
    shutil.copytree(run.path, runs_dir / f"{run.id}-shifted")
    other = RunStore(runs_dir).get(f"{run.id}-shifted")
    model = keras.models.load_model(other.model_path)
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel, bias + np.array([1.5, -1.5], np.float32)])
    model.save(other.model_path)
    return other


def test_diagnose_averages_the_image_over_the_chosen_runs_models(tiny_run_copy, runs_dir):
    from core.ml.diagnosis import Diagnoser
    from tests.test_diagnose_page import xray_upload
    name, data, _ = xray_upload()
    first, second = Diagnoser(tiny_run_copy.path), Diagnoser(second_model(tiny_run_copy, runs_dir).path)
    result = first.diagnose(data, name)
    averaged = first.with_ensemble(result, [second], None)
    alone = [np.array(list(d.diagnose(data, name).probabilities.values())) for d in (first, second)]
    assert not np.allclose(*alone, atol=1e-3)  # two models that disagree
    np.testing.assert_allclose(list(averaged.probabilities.values()), np.mean(alone, axis=0), atol=1e-6)
    assert averaged.passes == 2 and averaged.run_ids == (first.run.id, second.run.id)
    result.ensemble = averaged
    assert {"ensemble_predicted", "ensemble_p_NORMAL", "ensemble_score"} <= set(result.row())


def test_the_diagnose_page_offers_the_other_run_and_shows_the_ensembles_prediction(tiny_run_copy, runs_dir):
    from tests.test_diagnose_page import xray_upload
    other = second_model(tiny_run_copy, runs_dir)
    at = open_page("pages/diagnose.py")
    assert_clean(at)
    [chooser] = [m for m in at.multiselect if m.key.startswith("diag_ensemble_")]
    shown = chooser.key.removeprefix("diag_ensemble_")
    partner = other.id if shown == tiny_run_copy.id else tiny_run_copy.id
    assert len(chooser.options) == 1 and partner in chooser.options[0]
    chooser.set_value([partner]).run()
    at.file_uploader(key="diag_upload").set_value([xray_upload()]).run()
    assert_clean(at)
    page = texts(at)
    assert "Ensemble of 2 runs" in page and "2 forward passes instead of 1" in page
    assert "Research tool, not for clinical use" in page
