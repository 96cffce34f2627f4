"""Scoring runs on one common test split (core.ml.common_split), with real tiny runs trained on the
built-in chest X-rays: binary at 32 px, binary at 40 px with another split seed, 3-class subtype."""
import numpy as np
import pytest

from core.ml import common_split
from core.ml import metrics as metrics_lib
from core.ml import intervals as intervals_lib
from core.ml.training import execute_run
from core.settings.config import TrainConfig
from core.store.runs import RunStore

TINY = dict(arch="seed_cnn", batch_size=128, epochs=1, arch_params={"dense_units": 8}, early_stopping=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three finished runs whose test sets differ (image size, split seed, task)."""
    root = tmp_path_factory.mktemp("common-split")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
        store = RunStore(root / "runs")
        configs = {"small": TrainConfig(name="small", image_size=32, seed=1, **TINY),
                   "larger": TrainConfig(name="larger", image_size=40, seed=1, split_seed=2, **TINY),
                   "subtype": TrainConfig(name="subtype", image_size=32, seed=1, task="subtype", **TINY)}
        runs = {}
        for label, config in configs.items():
            run = store.create(config.to_dict(), name=label)
            execute_run(run, config)
            assert run.state() == "done", run.status()
            runs[label] = run
        yield runs


def test_differences_name_every_setting_that_changes_the_test_set():
    a = TrainConfig(seed=1).to_dict()
    b = TrainConfig(seed=1, split_seed=1, image_size=64).to_dict()
    c = TrainConfig(seed=2, task="subtype", test_fraction=0.2).to_dict()
    differences = {d["key"]: d["values"] for d in common_split.test_set_differences({"a": a, "b": b, "c": c})}
    # b's explicit split seed equals a's seed, so only c's seed makes the split seed differ
    assert differences["split_seed"] == {"a": 1, "b": 1, "c": 2}
    assert set(differences) == {"split_seed", "image_size", "task", "test_fraction"}
    lines = common_split.describe_differences(common_split.test_set_differences({"a": a, "b": b}))
    assert lines == ["image size: a = 128, b = 64"]


def test_identical_test_settings_have_no_differences():
    a = TrainConfig(seed=3, dropout=0.2).to_dict()
    b = TrainConfig(seed=3, learning_rate=0.1, train_fraction=0.5).to_dict()
    assert common_split.test_set_differences({"a": a, "b": b}) == []


@pytest.mark.slow
def test_common_set_holds_only_patients_no_run_trained_or_validated_on(trained):
    configs = {label: run.config() for label, run in trained.items()}
    test_set = common_split.common_test_set(configs, "small")
    assert test_set.files and len(test_set.patients) > 0
    # Every run saved its own test and validation patients; with train_fraction 1 every other
    # patient was trained on, so a patient unseen by all runs is in every run's saved test split.
    for run in trained.values():
        saved_test = set(run.predictions("test")["patient_ids"].tolist())
        assert set(test_set.patients) <= saved_test
        assert not set(test_set.patients) & set(run.predictions("val")["patient_ids"].tolist())
    reference_files = trained["small"].predictions("test")["files"].tolist()
    assert set(test_set.files) <= set(reference_files)
    assert test_set.reference_images == len(reference_files)
    assert len(test_set.files) + test_set.removed_images + test_set.missing_images == test_set.reference_images
    assert test_set.removed_patients  # another split seed and another task: many patients were seen
    assert f"{len(test_set.files)} images of {len(test_set.patients)} patients" in test_set.describe()


@pytest.mark.slow
def test_runs_sharing_a_split_keep_the_whole_reference_test_set(trained):
    configs = {"small": trained["small"].config(), "again": dict(trained["small"].config(), image_size=40)}
    test_set = common_split.common_test_set(configs, "small")
    assert len(test_set.files) == test_set.reference_images and not test_set.removed_patients


@pytest.mark.slow
def test_scores_every_run_on_the_same_images_at_its_own_size(trained):
    messages = []
    result = common_split.score_runs(trained, "small", lambda done, total, text: messages.append((text, done / total)),
                                     n_resamples=50)
    files = result["test_set"].files
    scores = result["scores"]
    assert set(scores) == {"small", "larger", "subtype"}
    assert {s["images"] for s in scores.values()} == {len(files)}
    assert scores["subtype"]["class_names"] == ["normal", "bacterial", "viral"]
    assert scores["small"]["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert [share for _, share in messages] == sorted(share for _, share in messages)
    assert messages[-1] == ("Done", 1.0)
    # The reference's model reproduces its own saved test predictions on those images.
    saved = trained["small"].predictions("test")
    rows = [list(saved["files"]).index(f) for f in files]
    expected = metrics_lib.classification_metrics(saved["probabilities"][rows], saved["labels"][rows],
                                                  saved["class_names"])
    assert scores["small"]["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert scores["small"]["metrics"]["auc"] == pytest.approx(expected["auc"], abs=1e-4)
    for score in scores.values():
        low, high = score["ci"]["accuracy"]
        assert low <= score["metrics"]["accuracy"] <= high
    rows = common_split.scores_table(scores)
    assert [r["run"] for r in rows] == ["small", "larger", "subtype"]
    assert {"recall viral", "macro OvR AUC", "accuracy 95% CI", "patients"} <= set(rows[2])


@pytest.mark.slow
def test_unknown_reference_and_a_run_without_model_are_refused(trained, tmp_path):
    with pytest.raises(common_split.CommonSplitError, match="not among the runs"):
        common_split.common_test_set({"a": trained["small"].config()}, "b")
    store = RunStore(tmp_path / "runs")
    empty = store.create(TrainConfig(image_size=32).to_dict(), name="no-model")
    with pytest.raises(common_split.CommonSplitError, match="no saved model"):
        common_split.score_runs({"small": trained["small"], "no-model": empty}, "small")


@pytest.mark.slow
def test_nothing_left_is_a_clear_error(tmp_path_factory, monkeypatch):
    # Eight different split seeds leave no test patient unseen by all of them (splits need no model).
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
    configs = {f"seed{s}": TrainConfig(image_size=32, split_seed=s).to_dict() for s in range(8)}
    with pytest.raises(common_split.CommonSplitError, match="no image is left"):
        common_split.common_test_set(configs, "seed0")


def test_scoring_module_does_not_import_tensorflow():
    import subprocess
    import sys
    code = "import sys, core.ml.common_split; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bootstrap_interval_over_patients_contains_the_estimate_and_narrows_with_more_patients():
    rng = np.random.default_rng(0)
    def sample(n):
        labels = rng.integers(0, 2, n)
        probs = np.clip(0.5 + (labels - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0, 1)
        return np.stack([1 - probs, probs], axis=1), labels, np.array([f"p{i // 2}" for i in range(n)])
    small, large = sample(40), sample(800)
    ci_small = intervals_lib.patient_bootstrap_ci(*small[:2], ["NORMAL", "PNEUMONIA"], small[2], n_resamples=200)
    ci_large = intervals_lib.patient_bootstrap_ci(*large[:2], ["NORMAL", "PNEUMONIA"], large[2], n_resamples=200)
    point = metrics_lib.classification_metrics(*large[:2], ["NORMAL", "PNEUMONIA"])
    assert ci_large["auc"][0] <= point["auc"] <= ci_large["auc"][1]
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]  # noqa: E731
    assert width(ci_large) < width(ci_small)
    with pytest.raises(ValueError, match="patient_ids has 3 entries"):
        intervals_lib.patient_bootstrap_ci(*small[:2], ["NORMAL", "PNEUMONIA"], ["a", "b", "c"])


# ----------------------------------------------------------------------------- through app.py

@pytest.fixture
def trained_app(trained, monkeypatch, tmp_path_factory, tmp_path):
    """The dashboard's environment pointing at the trained runs."""
    monkeypatch.setenv("CXR_RUNS_DIR", str(trained["small"].path.parent))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(tmp_path / "uploads"))
    return trained


@pytest.mark.slow
def test_compare_page_warns_and_scores_on_one_common_split(trained_app):
    from tests.apptest_support import assert_clean, open_page, texts
    ids = [trained_app[label].id for label in ("small", "larger", "subtype")]
    at = open_page("pages/runs.py", {"runs_compare_ids": ids})
    assert_clean(at)
    warning = "\n".join(w.value for w in at.warning)
    assert "tested on different test sets" in warning
    assert "image size: small = 32, larger = 40, subtype = 32" in warning
    assert "task: small = binary, larger = binary, subtype = subtype" in warning
    at.button(key="runs_common_button").click().run()
    assert_clean(at)
    assert "Common test set:" in texts(at) and "minus" in texts(at)
    table = next(d.value for d in at.dataframe if "macro OvR AUC" in d.value.columns)
    assert list(table.index) == ["small", "larger", "subtype"]
    assert len(set(table["images"])) == 1 and int(table["images"].iloc[0]) > 0
    assert "recall viral" in table.columns
    # The result is kept for this selection: another script run shows it without rescoring.
    at.run()
    assert "Common test set:" in texts(at)


@pytest.mark.slow
def test_evaluate_gallery_captions_say_what_decided(trained_app):
    from tests.apptest_support import assert_clean, open_page
    at = open_page("pages/evaluate.py", {"eval_run": trained_app["small"].id})
    assert_clean(at)
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert captions, "the gallery shows misclassified images"
    assert all("disease score" in c and "threshold" in c for c in captions), captions[:3]
    at = open_page("pages/evaluate.py", {"eval_run": trained_app["subtype"].id})
    assert_clean(at)
    labels = [m.label for m in at.metric]
    assert "Macro one-vs-rest AUC" in labels and "AUC (disease vs normal)" in labels
    assert {"Recall: normal", "Recall: bacterial", "Recall: viral"} <= {label.split(" @ ")[0] for label in labels}
    run = trained_app["subtype"]
    saved = run.predictions("test")
    expected = metrics_lib.classification_metrics(saved["probabilities"], saved["labels"], saved["class_names"],
                                                  run.summary()["threshold"])
    shown = [w.value for w in at.warning]
    assert [n for n in shown if "never predicted" in n] == metrics_lib.never_predicted_notes(expected)
