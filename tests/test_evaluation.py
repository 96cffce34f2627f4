"""Evaluation beyond the plain metrics: the view helpers (core.present.evaluation, core.present.review)
and the Evaluate page through app.py (intervals, confusion cells, referral, calibration, external)."""
import numpy as np
import pytest

from core.ml import metrics as metrics_lib
from core.ml import intervals as intervals_lib
from core.present import evaluation as view
from core.present import review
from tests.apptest_support import assert_clean, open_page, texts
from tests.conftest import fake_predictions
from tests.synthetic import make_chest_folder

NAMES = ["NORMAL", "PNEUMONIA"]


def predictions_dict(n=60, seed=0, skill=1.5):
    probabilities, labels, patients, files = fake_predictions(n, NAMES, seed, skill)
    return {"probabilities": probabilities, "labels": labels, "patient_ids": patients, "files": files,
            "class_names": NAMES}


# ----------------------------------------------------------------------------- view helpers

def test_referral_sentence_reads_the_curve():
    curve = {"coverage": [0.8, 0.9, 1.0], "accuracy": [0.99, 0.96, 0.91]}
    assert view.referral_sentence(curve) == "Referring the 10% least sure cases raises accuracy from 0.91 to 0.96."
    assert view.referral_sentence({"coverage": [0.9, 1.0], "accuracy": [0.8, 0.9]}) == (
        "Referring the 10% least sure cases lowers accuracy from 0.90 to 0.80.")
    assert view.referral_sentence({"coverage": [0.9, 1.0], "accuracy": [0.9, 0.9]}) == (
        "Referring the 10% least sure cases leaves accuracy at 0.90.")


def test_confusion_cells_list_mistakes_first_and_a_click_names_its_cell():
    choices = view.cell_choices([[5, 2], [0, 7]], NAMES)
    assert list(choices) == ["true NORMAL → predicted PNEUMONIA (2 images)", "true NORMAL → predicted NORMAL (5 images)",
                             "true PNEUMONIA → predicted PNEUMONIA (7 images)"]
    assert view.clicked_cell({"cell": [{"true": "NORMAL", "predicted": "PNEUMONIA"}]}) == ("NORMAL", "PNEUMONIA")
    assert view.clicked_cell({"cell": []}) is None and view.clicked_cell(None) is None
    spec = view.confusion_selection_chart([[5, 2], [0, 7]], NAMES).to_dict()
    assert [p["name"] for p in spec["params"]] == ["cell"]


def test_cell_cases_are_exactly_the_images_of_that_cell():
    p = predictions_dict()
    decided = metrics_lib.predict_with_threshold(p["probabilities"], NAMES, 0.5)
    cases = review.cell_cases(p, "PNEUMONIA", "NORMAL", threshold=0.5, limit=1000)
    expected = {str(p["files"][i]) for i in np.flatnonzero((p["labels"] == 1) & (decided == 0))}
    assert {c["file"] for c in cases} == expected and expected
    assert [c["confidence"] for c in cases] == sorted((c["confidence"] for c in cases), reverse=True)
    with pytest.raises(ValueError, match="no cell"):
        review.cell_cases(p, "COVID", "NORMAL")


def test_headline_rows_name_the_threshold_on_every_number_that_needs_one():
    rows = view.headline_rows(["normal", "bacterial", "viral"], True, 0.43)
    assert [label for label, _ in rows[0]] == ["Accuracy @ threshold 0.43", "Balanced accuracy @ threshold 0.43",
                                               "Macro-F1 @ threshold 0.43", "Sensitivity @ threshold 0.43"]
    assert all(len(row) <= 4 for row in rows) and sum(len(row) for row in rows) == 11
    assert all(label.endswith("@ threshold 0.43") for row in rows[:-1] for label, _ in row)
    assert [key for _, key in rows[-1]] == ["auc", "macro_ovr_auc", "average_precision"]  # no threshold needed
    assert rows[-1][0][0] == "AUC (disease vs normal)"


def test_side_by_side_puts_external_beside_internal_with_intervals():
    p = predictions_dict()
    scored = {"metrics": metrics_lib.classification_metrics(p["probabilities"], p["labels"], NAMES),
              "intervals": intervals_lib.bootstrap_intervals(p["probabilities"], p["labels"], NAMES, p["patient_ids"],
                                                           n_resamples=50)}
    result = {"name": "hospital_b", "class_names": NAMES, "n_images": 60, "n_patients": 30, "ood_rate": 0.25,
              **scored, "internal_test": scored}
    rows = {row["metric"]: row for row in view.side_by_side(result)}
    accuracy = scored["intervals"]["intervals"]["accuracy"]
    expected = f"{accuracy['value']:.3f} ({accuracy['low']:.3f}–{accuracy['high']:.3f})"
    # scored without a threshold: every thresholded row says argmax decided
    assert rows["Accuracy @ argmax"] == {"metric": "Accuracy @ argmax", "external: hospital_b": expected,
                                         "internal test": expected}
    assert rows["Flagged out-of-distribution"]["external: hospital_b"] == "25%"
    assert "Recall: PNEUMONIA @ argmax" in rows and "Sensitivity @ argmax" in rows and "AUC" in rows
    assert view.external_sentence(result).startswith(
        f"Accuracy @ argmax: {scored['metrics']['accuracy']:.3f} on hospital_b, equal to")


def scanner_shifted(images: np.ndarray) -> np.ndarray:
    """The images as another scanner might give them: flatter contrast, then brighter (the bench's
    simulated shift, on the decoded pixels)."""
    from PIL import Image, ImageEnhance
    shifted = [ImageEnhance.Brightness(ImageEnhance.Contrast(Image.fromarray(image[..., 0])).enhance(0.6)).enhance(1.25)
               for image in images]
    return np.stack([np.asarray(image)[..., None] for image in shifted])


def test_a_scanner_shift_moves_brightness_and_contrast_and_the_same_source_does_not():
    from core.data.datasets import load_dataset
    from core.data.splits import make_split
    from core.ml.external import acquisition_shift
    dataset = load_dataset("builtin", image_size=32)
    split = make_split(dataset, 0.15, 0.15, seed=42)
    train, test = dataset.images[split.train], dataset.images[split.test]
    same = acquisition_shift(test, train)  # other patients, same hospital
    assert all(30 <= v["median_percentile"] <= 70 and v["outside_share"] < 0.05 for v in same.values()), same
    other = acquisition_shift(scanner_shifted(test), train)
    assert other["brightness"]["median_percentile"] > 90 and other["contrast"]["median_percentile"] < 10, other
    assert view.shift_sentences({"shift": same})[1] is False
    sentence, shifted = view.shift_sentences({"shift": other})
    assert shifted and sentence.startswith(f"- Brightness: median {other['brightness']['external_median']:.0f} here, "
                                           f"the training images' "
                                           f"{view.ordinal(round(other['brightness']['median_percentile']))} percentile")
    assert view.shift_sentences({"name": "saved before the check"}) == (None, False)


def real_xrays(count: int, size: int = 64) -> tuple[list, np.ndarray]:
    """`count` X-rays of different patients from the built-in zip, as PIL images and (N, size, size, 1)."""
    import io
    import zipfile

    from PIL import Image

    from core.data.sources import BUILTIN_ZIP, patient_id
    pictures, patients = [], set()
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        for name in sorted(archive.namelist())[::7]:
            if name.endswith(".jpeg") and patient_id(name) not in patients and len(pictures) < count:
                patients.add(patient_id(name))
                pictures.append(Image.open(io.BytesIO(archive.read(name))).convert("L"))
    return pictures, np.stack([np.asarray(p.resize((size, size), Image.BILINEAR))[..., None] for p in pictures])


def test_the_same_picture_is_found_through_resaving_resizing_and_exposure_and_other_xrays_are_not():
    import io

    from PIL import Image, ImageEnhance

    from core.ml.external import same_pictures, thumbnails
    pictures, originals = real_xrays(160)
    def resaved(picture, how):
        if how == "jpeg":  # recompressed hard
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=50)
            return Image.open(buffer)
        if how == "upscaled":
            return picture.resize((300, 300), Image.BICUBIC)
        return ImageEnhance.Brightness(ImageEnhance.Contrast(picture).enhance(1.2)).enhance(1.1)  # re-exposed
    ways = ("jpeg", "upscaled", "exposure")
    copies = np.stack([np.asarray(resaved(pictures[i], ways[i % 3]).convert("L").resize((64, 64), Image.BILINEAR))[..., None]
                       for i in range(30)])
    reference = thumbnails(originals[:100], chunk=16)  # in chunks, as a memory-mapped set is read
    assert same_pictures(thumbnails(copies), reference).tolist() == list(range(30))
    assert (same_pictures(thumbnails(originals[100:]), reference) == -1).all()  # 60 other patients' X-rays
    assert same_pictures(thumbnails(copies), reference[:0]).tolist() == [-1] * 30


def test_the_seen_sentence_warns_of_images_the_run_has_seen():
    result = {"name": "hospital_b", "n_images": 60}
    seen = {"compared_with": 3816, "same_pictures": 0, "same_patient_ids": 0, "seen": 0, "examples": []}
    sentence, warn = view.seen_sentence({**result, "seen": seen})
    assert not warn and sentence.startswith("None of these images is one of the run's 3,816 training and validation")
    seen = {**seen, "same_pictures": 2, "same_patient_ids": 3, "seen": 4, "examples": ["a.png = NORMAL/b.jpeg"]}
    sentence, warn = view.seen_sentence({**result, "seen": seen})
    assert warn and sentence.startswith("The run has seen 4 of these 60 images: 2 are the same picture as a training "
                                        "or validation image (e.g. `a.png = NORMAL/b.jpeg`), and 3 are named as one "
                                        "of their patients")
    assert view.seen_sentence(result) == (None, False)  # saved before the check existed
    rows = {row["metric"]: row for row in view.side_by_side({**result, "seen": seen, **scored_pair()})}
    assert rows["Seen in training or validation"]["external: hospital_b"] == "4 of 60"


def scored_pair() -> dict:
    p = predictions_dict()
    scored = {"metrics": metrics_lib.classification_metrics(p["probabilities"], p["labels"], NAMES),
              "intervals": intervals_lib.bootstrap_intervals(p["probabilities"], p["labels"], NAMES, p["patient_ids"],
                                                           n_resamples=20)}
    return {"class_names": NAMES, "n_patients": 30, "ood_rate": None, **scored, "internal_test": scored}


def test_ordinals():
    assert [view.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 50, 93, 99)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "50th", "93rd", "99th"]


# ----------------------------------------------------------------------------- the page

def test_evaluate_page_shows_intervals_referral_and_calibration(make_run):
    run = make_run(name="fake")
    at = open_page("pages/evaluate.py")
    assert_clean(at)
    page = texts(at)
    assert "Research tool, not for clinical use" in page
    assert "bootstrap resamples of the 20 patients (40 images)" in page
    assert "95% CI" in page
    assert "Referring the 10% least sure cases" in page
    assert "Temperature T = " in page
    calibration = next(frame.value for frame in at.dataframe if list(frame.value.columns) == ["NLL", "ECE", "Brier"])
    assert list(calibration.index) == ["validation before", "validation after", "test before", "test after"]
    assert calibration.loc["validation after", "NLL"] <= calibration.loc["validation before", "NLL"]
    assert run.external_results() == []  # no model: external validation is offered only with one
    assert "no saved model" in page


def card_row(markdown: str, label: str) -> list[str]:
    """The cells of the model card's table row labelled `label`."""
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in markdown.splitlines()
            if line.startswith("|")]
    return next(cells for cells in rows if cells[0] == label)


def test_one_run_shows_one_accuracy_under_one_label_on_runs_evaluate_and_its_card(app_env, make_run):
    run, other = make_run("done", name="a", seed=1), make_run("done", name="b", seed=2)
    threshold = run.summary()["threshold"]
    label = f"Accuracy @ threshold {threshold:.2f}"  # the run's own threshold, chosen on validation
    runs_page = open_page("pages/runs.py")
    assert_clean(runs_page)
    row = runs_page.dataframe(key="runs_table").value.set_index("name").loc["a"]
    assert row["decision"] == f"threshold {threshold:.2f}"
    compared = next(d.value for d in runs_page.dataframe if "decided at" in d.value.index)
    assert compared.loc["decided at", "a"] == f"threshold {threshold:.2f}"
    assert float(compared.loc["accuracy", "a"]) == pytest.approx(row["test_accuracy"], abs=5e-5)

    evaluate = open_page("pages/evaluate.py", {"eval_run": run.id})
    assert_clean(evaluate)
    shown = {m.label: m.value for m in evaluate.metric}
    assert f"Decisions at threshold {threshold:.2f} on the disease score: the run's own" in texts(evaluate)
    assert shown[label] == f"{row['test_accuracy']:.3f}"  # the Runs table's number, under the named label
    assert "Accuracy" not in shown and "AUC" in shown  # no unnamed accuracy; AUC needs no threshold
    card = next(m.value for m in evaluate.markdown if m.value.startswith("# Model card"))
    assert card_row(card, label)[2].startswith(f"{row['test_accuracy']:.3f} (")  # the test column
    assert f"Decisions use the threshold {threshold:.2f} on the disease score" in card


def test_a_small_external_set_gets_honest_intervals_and_names_its_threshold(app_env, tiny_run_copy):
    from core.ml.external import internal_test, scored
    from core.files import json_ready
    from core.files import write_json
    run, threshold = tiny_run_copy, tiny_run_copy.summary()["threshold"]
    # 24 images of 24 patients the model gets all right, scored at the run's threshold as evaluate_external does
    scores = np.r_[np.full(12, 0.02), np.full(12, 0.98)]
    labels = np.r_[np.zeros(12, int), np.ones(12, int)]
    perfect = scored(np.c_[1 - scores, scores], labels, NAMES, [f"p{i}" for i in range(24)], threshold)
    write_json(run.external_dir / "small-site.json", json_ready({
        "name": "small_site", "source": "/data/small_site", "evaluated": 1.0, "n_images": 24, "n_patients": 24,
        "class_names": NAMES, "threshold": threshold, **perfect, "ood_rate": None,
        "internal_test": internal_test(run, threshold)}))
    at = open_page("pages/evaluate.py", {"eval_run": run.id})
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "external: small_site" in d.value.columns)
    rule = f"threshold {threshold:.2f}"
    assert table.loc[f"Accuracy @ {rule}", "external: small_site"] == "1.000 (0.858–1.000)"  # not 1.000-1.000
    assert table.loc["AUC", "external: small_site"].startswith("1.000 (no interval: the same on every resample")
    assert not any("(1.000–1.000)" in cell for cell in table["external: small_site"])
    page = texts(at)
    assert "Only 24 images of 24 patients" in page
    assert f"Both columns at {rule}, the run's own threshold when this result was saved" in page
    at.slider(key=f"eval_threshold_{run.id}_test").set_value(0.9).run()
    assert "the threshold slider above (threshold 0.90) does not change them" in texts(at)


@pytest.mark.slow
def test_a_cell_opens_its_images_and_external_validation_fills_the_table(tiny_run_copy, tmp_path):
    folder = make_chest_folder(tmp_path / "hospital_b", n_patients=3)
    at = open_page("pages/evaluate.py")
    assert_clean(at)
    choices = at.selectbox(key="eval_cell").options
    mistake = next(c for c in choices if "NORMAL → predicted PNEUMONIA" in c or "PNEUMONIA → predicted NORMAL" in c)
    images_before = len(at.get("image"))
    at.selectbox(key="eval_cell").set_value(mistake).run()
    assert_clean(at)
    assert len(at.get("image")) > images_before
    at.text_input(key="eval_ext_path").set_value(str(folder)).run()
    at.button(key="eval_ext_button").click().run()
    assert_clean(at)
    assert tiny_run_copy.external_results()[0]["n_images"] == 12
    table = at.dataframe[-1].value
    assert list(table.columns) == ["external: hospital_b", "internal test"]
    accuracy = next(label for label in table.index if label.startswith("Accuracy @ threshold "))  # the run's own
    assert "(" in table.loc[accuracy, "external: hospital_b"]
    assert "Only 12 images of 6 patients" in texts(at)  # a small set says so
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in folder.rglob("*.jpeg"):  # CLASS__name.jpeg in one folder: the layout is explained
        (flat / f"{image.parent.name}__{image.name}").write_bytes(image.read_bytes())
    at.text_input(key="eval_ext_path").set_value(str(flat)).run()
    at.button(key="eval_ext_button").click().run()
    assert any("none inside a class folder" in e.value and "CLASS__" in e.value for e in at.error)
    at.text_input(key="eval_ext_path").set_value(str(tmp_path / "nowhere")).run()
    at.button(key="eval_ext_button").click().run()
    assert any("does not exist" in e.value for e in at.error)
