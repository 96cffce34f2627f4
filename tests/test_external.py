"""External validation (core.ml.external, `python -m core.evaluate RUN --data ...`) with a real model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from core.__main__ import main as core_main
from core.ml import metrics as metrics_lib
from core.ml.diagnosis import Diagnoser
from core.ml.external import ExternalDataError, evaluate_external
from core.files import write_json
from tests.conftest import PROJECT, copy_run
from tests.synthetic import make_chest_folder

pytestmark = pytest.mark.slow  # loads a Keras model and predicts; the session trains tiny_run

KEYS = {"name", "source", "evaluated", "n_images", "n_patients", "class_names", "metrics", "intervals",
        "ood_rate", "internal_test"}


@pytest.fixture
def run(tiny_run, runs_dir):
    return copy_run(tiny_run, runs_dir)


@pytest.fixture(scope="module")
def external_folder(tmp_path_factory):
    return make_chest_folder(tmp_path_factory.mktemp("external") / "hospital_b", n_patients=5)


def predictor_metrics(run, folder) -> dict:
    """Metrics of what `python -m core predict` (the Diagnoser) says about every file of the folder."""
    diagnoser = Diagnoser(run.path)
    files = sorted(folder.rglob("*.jpeg"))
    probabilities = np.array([list(diagnoser.diagnose(f.read_bytes(), f.name).probabilities.values())
                              for f in files])
    labels = np.array([diagnoser.class_names.index(f.parent.name) for f in files])
    return metrics_lib.classification_metrics(probabilities, labels, diagnoser.class_names, diagnoser.threshold)


def test_external_evaluation_agrees_with_the_predictor_and_is_saved(run, external_folder):
    steps = []
    result = evaluate_external(run, external_folder, progress=lambda done, total, message: steps.append(done / total))
    assert KEYS <= set(result)
    assert result["n_images"] == 20 and result["n_patients"] == 10
    expected = predictor_metrics(run, external_folder)
    assert result["metrics"]["accuracy"] == expected["accuracy"]
    assert result["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-4)
    assert result["metrics"]["confusion_matrix"] == expected["confusion_matrix"]
    for name, entry in result["intervals"]["intervals"].items():
        if entry["low"] is not None:
            assert entry["low"] <= entry["value"] <= entry["high"], name
    assert 0.0 <= result["ood_rate"] <= 1.0
    assert set(result["shift"]) == {"brightness", "contrast"} and result["shift_error"] is None
    assert all(0.0 <= v["outside_share"] <= 1.0 and 0.0 <= v["median_percentile"] <= 100.0
               for v in result["shift"].values())
    internal = run.predictions("test")
    assert result["internal_test"]["metrics"]["n"] == len(internal["labels"])
    assert steps[-1] == 1.0 and steps == sorted(steps)
    saved = run.external_results()
    assert len(saved) == 1 and saved[0]["metrics"] == result["metrics"] and saved[0]["name"] == "hospital_b"
    assert (run.external_dir / "hospital-b.json").exists()


def test_images_the_run_trained_on_are_found_in_an_external_set(run, tmp_path):
    """Four of the run's own training X-rays re-saved as PNG under new names, and two under their own
    names, among a synthetic folder: the result counts them, and the page's sentence warns."""
    import io
    import zipfile

    from PIL import Image

    from core.data.sources import BUILTIN_ZIP, patient_id
    from core.ml.external import run_data
    from core.present.evaluation import seen_sentence
    folder = make_chest_folder(tmp_path / "mixed", n_patients=2)
    dataset, split = run_data(run)
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        for k, row in enumerate(split.train[:6]):
            member = str(dataset.files[row])
            name = f"copy{k}.png" if k < 4 else member.split("/")[-1]
            target = folder / dataset.class_names[dataset.labels[row]] / name
            Image.open(io.BytesIO(archive.read(member))).save(target)
    result = evaluate_external(run, folder)
    seen = result["seen"]
    assert seen["compared_with"] == len(split.train) + len(split.val)
    assert seen["same_pictures"] == 6 and len(seen["examples"]) == 3
    seen_patients = set(dataset.patient_ids[split.train]) | set(dataset.patient_ids[split.val])
    named = sum(patient_id(f.name) in seen_patients for f in folder.rglob("*.*"))
    assert named >= 2 and seen["same_patient_ids"] == named
    assert seen["seen"] == len({f.name for f in folder.rglob("*.*")
                                if f.name.startswith("copy") or patient_id(f.name) in seen_patients})
    sentence, warn = seen_sentence(result)
    assert warn and sentence.startswith(f"The run has seen {seen['seen']} of these {result['n_images']} images: "
                                        "6 are the same picture as a training or validation image")


def test_a_csv_of_labels_and_an_npz_of_the_same_images_score_as_their_class_folders(run, external_folder, tmp_path):
    """The same 20 X-rays as class folders, as a CSV of lower-case labels listed pneumonia first, and as a
    Keras-layout .npz with its class names: each format told from the file, labels matched to the run's
    classes by name, the same metrics."""
    from core.data.datasets import load_dataset
    from core.settings.config import TrainConfig
    folder_result = evaluate_external(run, external_folder)
    files = sorted(external_folder.rglob("*.jpeg"), key=lambda f: f.parent.name, reverse=True)
    rows = ["filename,label,patient_id"] + [
        f"{f.relative_to(external_folder).as_posix()},{f.parent.name.lower()},{f.stem.split('-')[1] if f.stem.startswith('IM') else f.stem.split('_')[0]}"
        for f in files]
    (external_folder / "labels.csv").write_text("\n".join(rows) + "\n")
    csv_result = evaluate_external(run, external_folder / "labels.csv")
    assert csv_result["n_images"] == 20 and csv_result["metrics"] == folder_result["metrics"]
    (external_folder / "labels.csv").unlink()

    config = TrainConfig.from_dict(run.config())
    images = load_dataset("folder", external_folder, "binary", config.image_size, config.channels)
    np.savez(tmp_path / "hospital_c.npz", x_train=images.images[:0, ..., 0], y_train=images.labels[:0],
             x_test=np.asarray(images.images)[..., 0], y_test=images.labels.astype(np.uint8),
             class_names=np.array(["NORMAL", "PNEUMONIA"]))
    npz_result = evaluate_external(run, tmp_path / "hospital_c.npz")
    assert npz_result["n_images"] == 20 and npz_result["metrics"]["accuracy"] == folder_result["metrics"]["accuracy"]
    assert npz_result["metrics"]["confusion_matrix"] == folder_result["metrics"]["confusion_matrix"]
    assert {r["name"] for r in run.external_results()} == {"hospital_b", "labels", "hospital_c"}


def test_an_external_set_of_other_classes_in_another_format_is_refused_clearly(run, tmp_path):
    np.savez(tmp_path / "digits.npz", x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.arange(4, dtype=np.uint8),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.arange(2, dtype=np.uint8))
    with pytest.raises(ExternalDataError, match="has the classes 0, 1, 2, 3 but run tells apart NORMAL, PNEUMONIA"):
        evaluate_external(run, tmp_path / "digits.npz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ExternalDataError, match="notes.txt is not a dataset format CXR Lab reads"):
        evaluate_external(run, tmp_path / "notes.txt")
    assert not run.external_dir.exists()


def test_a_dataset_with_other_classes_is_refused_with_a_clear_message(run, tmp_path):
    # The same model, recorded as trained with task "classes" on NORMAL/PNEUMONIA folders.
    write_json(run.config_path, {**run.config(), "task": "classes"})
    folder = make_chest_folder(tmp_path / "three", n_patients=2)
    (folder / "COVID").mkdir()
    (folder / "COVID" / "a.jpeg").write_bytes((folder / "NORMAL").glob("*.jpeg").__next__().read_bytes())
    with pytest.raises(ExternalDataError, match="has the classes COVID, NORMAL, PNEUMONIA but run tells "
                                                "apart NORMAL, PNEUMONIA"):
        evaluate_external(run, folder)
    assert not run.external_dir.exists()


def test_a_missing_path_is_a_clear_error(run, tmp_path):
    with pytest.raises(ExternalDataError, match="does not exist"):
        evaluate_external(run, tmp_path / "nowhere")


def test_the_cli_prints_the_json_both_ways(run, external_folder, tmp_path, capsys):
    assert core_main(["evaluate", str(run.path), "--data", str(external_folder)]) == 0
    in_process = json.loads(capsys.readouterr().out)
    assert in_process["run_id"] == run.id and KEYS <= set(in_process)
    done = subprocess.run([sys.executable, "-m", "core.evaluate", str(run.path), "--data", str(external_folder)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["metrics"] == in_process["metrics"]
    assert printed["intervals"] == in_process["intervals"]


def test_the_cli_exits_2_with_the_message_on_a_bad_path(run, tmp_path, capsys):
    assert core_main(["evaluate", str(run.path), "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    not_a_dataset = tmp_path / "notes.txt"
    not_a_dataset.write_text("hello")
    assert core_main(["evaluate", str(run.path), "--data", str(not_a_dataset)]) == 2
    assert "notes.txt is not a dataset format CXR Lab reads" in capsys.readouterr().err
