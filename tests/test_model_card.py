"""The model card (core.ml.model_card): its figures are the run's own (summary.json, the
intervals bootstrapped from its predictions, the temperature fitted on its validation split), older
runs get "not recorded", the HTML is escaped and self-contained, and `core export --card-only`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import export as export_cli
from core.ml import calibration as calibration_lib
from core.ml import intervals as intervals_lib
from core.ml import model_card as card
from core.store import run_folder
from tests.conftest import copy_run

ROOT = Path(__file__).resolve().parents[1]


def table_row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the card's table row that starts with `first_cell`."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in the card")


def bootstrapped(run, split):
    saved = run.predictions(split)
    return intervals_lib.bootstrap_intervals(saved["probabilities"], saved["labels"], saved["class_names"],
                                       saved["patient_ids"], threshold=run.summary()["threshold"],
                                       n_resamples=1000, confidence=0.95, seed=0)["intervals"]


def interval_text(entry) -> str:
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


@pytest.fixture(scope="module")
def tiny_card(tiny_run):
    return card.model_card(tiny_run)


def test_the_model_section_has_the_runs_size_and_shape(tiny_run, tiny_card):
    summary, config = tiny_run.summary(), tiny_run.config()
    assert table_row(tiny_card, "Run id")[1] == tiny_run.id
    assert table_row(tiny_card, "Architecture")[1] == "Seed CNN (3 conv layers) (seed_cnn)"
    assert table_row(tiny_card, "Trainable parameters")[1] == f"{summary['model']['trainable_params']:,}"
    assert table_row(tiny_card, "MACs per image")[1] == f"{summary['model']['macs']:,}"
    assert table_row(tiny_card, "Layers")[1] == str(len(tiny_run.layer_table()))
    assert table_row(tiny_card, "Input")[1].startswith(f"{config['image_size']} x {config['image_size']} px, 1 channel")
    assert table_row(tiny_card, "Epochs")[1] == f"{summary['epochs_run']} run of {config['epochs']}"
    assert table_row(tiny_card, "TensorFlow")[1] == tiny_run.environment()["tensorflow"]


def test_the_split_section_has_patients_images_and_the_leak_check(tiny_run, tiny_card):
    split = tiny_run.summary()["split"]
    for key, title in (("train", "Training"), ("val", "Validation"), ("test", "Test")):
        counts = split["counts"][key]
        assert table_row(tiny_card, title)[:5] == [
            title, f"{split['patients'][key]:,}", f"{sum(counts.values()):,}",
            f"{counts['NORMAL']:,}", f"{counts['PNEUMONIA']:,}"]
    assert not split["leaks"]
    assert "Leak check: passed, train/val 0, train/test 0, val/test 0 patients shared." in tiny_card


def test_metrics_carry_the_patient_bootstrap_intervals(tiny_run, tiny_card):
    val, test = bootstrapped(tiny_run, "val"), bootstrapped(tiny_run, "test")
    summary = tiny_run.summary()
    rule = f" @ threshold {summary['threshold']:.2f}"  # every number that depends on it names the threshold
    for key, label in (("accuracy", "Accuracy" + rule), ("auc", "AUC"), ("macro_f1", "Macro F1" + rule),
                       ("sensitivity", "Sensitivity (disease recall)" + rule),
                       ("specificity", "Specificity (normal recall)" + rule)):
        assert table_row(tiny_card, label) == [label, interval_text(val[key]), interval_text(test[key])]
    assert test["accuracy"]["value"] == summary["test"]["accuracy"]  # the summary's own number, as on Runs
    # threshold-free figures are summary.json's own
    assert test["auc"]["value"] == pytest.approx(summary["test"]["auc"])
    assert table_row(tiny_card, "Log loss") == ["Log loss", f"{summary['val']['log_loss']:.3f}",
                                                f"{summary['test']['log_loss']:.3f}"]
    assert f"Decisions use the threshold {summary['threshold']:.2f}" in tiny_card
    assert "1000 resamples" in tiny_card


def test_calibration_shows_the_temperature_fitted_on_validation(tiny_run, tiny_card):
    report = calibration_lib.temperature_report(tiny_run.predictions("val"), tiny_run.predictions("test"))
    assert f"T = {report['temperature']:.3f}" in tiny_card
    rows = [line for line in tiny_card.split("## Calibration")[1].splitlines() if line.startswith("| Validation")]
    assert rows == [f"| Validation | {report['val']['ece']['before']:.3f} | {report['val']['ece']['after']:.3f} | "
                    f"{report['val']['nll']['before']:.3f} | {report['val']['nll']['after']:.3f} |"]


def test_intended_use_says_not_for_clinical_use(tiny_card):
    use = tiny_card.split("## Intended use and limitations")[1]
    assert "NOT FOR CLINICAL USE" in use and "pediatric" in use and "32 x 32 px" in use
    assert "None yet" in tiny_card.split("## External validation")[1].split("##")[0]


@pytest.mark.slow
def test_external_results_enter_the_card(tiny_run, runs_dir, chest_folder):
    from core.ml.external import evaluate_external
    run = copy_run(tiny_run, runs_dir)
    result = evaluate_external(run, chest_folder)
    text = card.model_card(run)
    external = text.split("## External validation")[1].split("## Intended use")[0]
    assert f"### {result['name']}" in external
    assert f"{result['n_images']:,} images" in external
    assert f"out-of-distribution rate {result['ood_rate']:.1%}" in external
    contrast = result["shift"]["contrast"]
    assert (f"contrast median {contrast['external_median']:.0f} vs {contrast['training_median']:.0f} in training "
            f"(percentile {contrast['median_percentile']:.0f} of the training images)") in external
    accuracy = result["intervals"]["intervals"]["accuracy"]
    assert f"| Accuracy @ threshold {result['threshold']:.2f} | {interval_text(accuracy)} |" in external
    assert card.seen_text(result["seen"]) in external
    assert card.seen_text({"seen": 0}) == "none of its images seen in training or validation"


def test_an_older_run_reads_not_recorded_where_files_are_missing(make_run):
    run = make_run("done", name="old")  # a summary without dataset or split; no layers, environment
    text = card.model_card(run)
    assert table_row(text, "Layers")[1] == card.NOT_RECORDED
    assert "Split: not recorded." in text and "Environment: not recorded." in text
    assert table_row(text, "Images")[1] == card.NOT_RECORDED
    assert table_row(text, "Files")[1] == "no model saved"
    # its predictions are there: intervals all the same
    label = f"Accuracy @ threshold {run.summary()['threshold']:.2f}"
    assert interval_text(bootstrapped(run, "test")["accuracy"]) == table_row(text, label)[2]


def test_an_older_run_with_two_dropouts_on_record_shows_the_one_its_model_used(make_run):
    from tests.test_settings import OLD_CONFIG_WITH_TWO_DROPOUTS
    run = make_run("done", name="two-dropouts")
    run.config_path.write_text(json.dumps({**run.config(), **OLD_CONFIG_WITH_TWO_DROPOUTS}))
    text = card.model_card(run)
    assert table_row(text, "Dropout")[1] == "0.5"
    assert "dropout" not in table_row(text, "Architecture parameters")[1]
    assert table_row(text, "Architecture parameters")[1] == "activation = relu; dense_units = 16"


def test_a_card_names_the_architectures_default_dropout_as_such(make_run):
    assert table_row(card.model_card(make_run("done")), "Dropout")[1] == "0.25 (the architecture's default)"
    assert table_row(card.model_card(make_run("done", arch="logistic")), "Dropout")[1] == \
        "none (the architecture has no dropout)"


def test_a_run_without_results_still_gets_a_card(make_run):
    run = make_run("failed", name="broken", error="boom")
    text = card.model_card(run)
    assert "Predictions: not recorded" in text
    assert "Calibration: not recorded" in text
    assert table_row(text, "Trainable parameters")[1] == card.NOT_RECORDED
    assert table_row(text, "Accuracy")[1:] == [card.NOT_RECORDED, card.NOT_RECORDED]


HOSTILE_NAME = '<script>alert("x")</script> | a&b'


def test_the_html_is_escaped_and_has_no_links(make_run):
    run = make_run("done", name=HOSTILE_NAME)
    page = card.model_card_both(run)[1]
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; | a&amp;b" in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for outside in ("http:", "https:", "href=", "src=", "url(", "@import"):
        assert outside not in page.lower()
    # Markdown: the pipe in the name does not split its table cell, and no raw HTML is left (core/document.py)
    escaped = '&lt;script&gt;alert("x")&lt;/script&gt; \\| a&b'
    assert table_row(card.model_card(run), "Name") == ["Name", escaped]


def test_write_model_card_writes_the_card_into_the_run(tiny_run, runs_dir):
    run = copy_run(tiny_run, runs_dir)
    path = card.write_model_card(run)
    assert path == run.model_card_path
    written = path.read_text()
    body = lambda text: text.rsplit("Generated by CXR Lab", 1)[0]  # noqa: E731 - the stamp's minute may differ
    assert body(written) == body(card.model_card(run))
    temp = [p.name for p in run.path.iterdir() if p.name.startswith(".") and p.name != run_folder.STATUS_FILE_LOCK]
    assert temp == []  # no temp file left


def test_the_cache_key_changes_when_the_run_does(tiny_run, runs_dir):
    run = copy_run(tiny_run, runs_dir)
    before = card.card_sources(run)
    (run.external_dir).mkdir()
    (run.external_dir / "other.json").write_text(json.dumps({"name": "other"}))
    assert card.card_sources(run) != before


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        card.write_model_card(card.Run(tmp_path))
    assert export_cli.main([str(tmp_path), "--card-only"]) == 2


@pytest.mark.slow
def test_card_only_cli_writes_the_card_without_tensorflow(tiny_run, runs_dir):
    run = copy_run(tiny_run, runs_dir)
    script = ("import sys; from core.cli import export; code = export.main(sys.argv[1:]); "
              "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, str(run.path), "--card-only"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "False"
    output = json.loads(result.stdout)
    assert output == {"run_id": run.id, "model_card": str(run.model_card_path)}
    assert "## Evaluation" in run.model_card_path.read_text()
    assert not run.saved_model_dir.exists() and not run.tflite_path.exists()


# ----------------------------------------------------------------------------- the component

def component_script():
    """A page that shows the model card and export section of the run CARD_RUN names."""
    import os

    from core.store.run_folder import Run
    from ui.model_card_view import model_card_and_export
    model_card_and_export(Run(os.environ["CARD_RUN"]))


def component(run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.apptest_support import TIMEOUT, assert_clean
    monkeypatch.setenv("CARD_RUN", str(run.path))
    at = AppTest.from_function(component_script, default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    return at


def download_labels(at) -> list[str]:
    return [element.proto.label for element in at.get("download_button")]


@pytest.mark.slow
def test_the_component_shows_the_card_and_exports_on_request(tiny_run, runs_dir, monkeypatch):
    from tests.apptest_support import assert_clean, texts
    run = copy_run(tiny_run, runs_dir)
    at = component(run, monkeypatch)
    assert at.expander[0].label == "Model card"
    assert "NOT FOR CLINICAL USE" in texts(at)
    assert download_labels(at) == ["Model card (.md)", "Model card (.html)"]
    button = at.button(key=f"export-{run.id}")
    assert not button.disabled
    button.click().run()
    assert_clean(at)
    assert "Exported; model_card.md written beside them." in texts(at)
    assert download_labels(at) == ["Model card (.md)", "Model card (.html)", "SavedModel (.zip)", "TFLite model"]
    assert run.tflite_path.exists() and run.model_card_path.exists()
    assert str(run.tflite_path) in texts(at)


def test_the_component_says_why_a_run_cannot_be_exported(make_run, monkeypatch):
    run = make_run("done")
    at = component(run, monkeypatch)
    assert at.button(key=f"export-{run.id}").disabled
    assert any("has no model.keras" in caption.value for caption in at.caption)


def test_a_finished_training_leaves_its_card_saying_done(tiny_run):
    """execute_run writes the card before the run is marked done, so the card is there and says done."""
    assert tiny_run.state() == "done"
    written = tiny_run.model_card_path.read_text()
    assert "| State | done |" in written
    assert f"| Run id | {tiny_run.id} |" in written
