"""The data formats of the classic reports, from tiny files built in their exact layouts: Keras'
mnist.npz (and Fashion-MNIST), CIFAR-10/100 python tarballs (pickled dicts, read without running
anything), CSVs of labels (plain, NIH ChestX-ray14, CheXpert) and DICOM class folders; the source
detected from the file on the command line and on the Dataset page."""
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import train as train_cli
from core.data import archives, cifar, detection, formats, label_csv
from core.data.datasets import DataError, load_dataset
from core.data.splits import make_split
from core.data.dicom import decode_upload
from core.data.formats import FormatOptions
from core.data.imaging import resize_to_model
from tests.apptest_support import assert_clean, open_page, texts
from tests.test_bad_inputs import dicom_bytes

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- tiny files, exact layouts

def keras_npz(path: Path, n_train: int = 40, n_test: int = 10, first_labels=None) -> Path:
    """keras.datasets.mnist's mnist.npz: x_train uint8 (N, 28, 28), y_train uint8 (N,), x_test, y_test;
    each class a different brightness, so a model has something to learn."""
    def part(n, offset):
        labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
        if first_labels is not None and offset == 0:
            labels[:len(first_labels)] = first_labels
        images = (labels[:, None, None] * 25 + RNG.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        return images, labels
    x_train, y_train = part(n_train, 0)
    x_test, y_test = part(n_test, 3)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def as_cifar_pickle(content: dict) -> bytes:
    """A member as CIFAR's files are: a pickled dict naming numpy.core.multiarray._reconstruct,
    numpy.ndarray and numpy.dtype (numpy 2 writes numpy._core; the files predate it)."""
    return pickle.dumps(content, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batch(n: int, label_keys=(b"labels",), n_classes: int = 10) -> dict:
    batch = {b"batch_label": b"training batch 1 of 5",
             b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),  # (N, 3072): R, G, B planes of 32x32
             b"filenames": [f"img_{i:04d}.png".encode() for i in range(n)]}
    for key in label_keys:
        batch[key] = [int(i % n_classes) for i in range(n)]
    return batch


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def cifar10_tarball(path: Path, per_batch: int = 4, replace: dict | None = None) -> tuple[Path, dict]:
    members = {f"cifar-10-batches-py/data_batch_{i}": cifar_batch(per_batch) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(per_batch)
    meta = {b"label_names": [name.encode() for name in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                         "frog", "horse", "ship", "truck")],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    raw = {name: as_cifar_pickle(content) for name, content in members.items()}
    raw["cifar-10-batches-py/batches.meta"] = as_cifar_pickle(meta)
    raw["cifar-10-batches-py/readme.html"] = b"<html></html>"
    raw.update(replace or {})
    return write_tar(path, raw), members


def cifar100_tarball(path: Path) -> Path:
    keys = (b"fine_labels", b"coarse_labels")
    train, test = cifar_batch(30, keys, 20), cifar_batch(10, keys, 20)
    for batch in (train, test):  # fine label f belongs to the coarse superclass f // 5
        batch[b"fine_labels"] = [(c * 5 + i % 5) for i, c in enumerate(batch[b"coarse_labels"])]
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    return write_tar(path, {"cifar-100-python/train": as_cifar_pickle(train),
                            "cifar-100-python/test": as_cifar_pickle(test),
                            "cifar-100-python/meta": as_cifar_pickle(meta)})


def png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40), value, np.uint8)).save(path)


# ----------------------------------------------------------------------------- Keras .npz

def test_keras_npz_is_detected_and_its_own_train_test_split_is_kept(tmp_path):
    path = keras_npz(tmp_path / "mnist.npz")
    found = detection.detect(path)
    assert (found.source, found.task) == ("npz", "classes") and "Keras" in found.kind and "digits" in found.kind
    ds = load_dataset("npz", path, "classes", 32, 1)
    assert ds.class_names == [str(d) for d in range(10)] and ds.images.shape == (50, 32, 32, 1)
    assert (ds.own_split == "train").sum() == 40 and (ds.own_split == "test").sum() == 10
    split = make_split(ds, use_own_split=True)
    assert sorted(split.test) == list(range(40, 50))  # exactly x_test
    assert ds.patients_per_image and split.report.per_image
    assert "split is per image" in split.report.warnings[0] and "no patient grouping" in split.report.warnings[0]
    with np.load(path) as raw:  # 28x28 grayscale goes through the same resizing as every source
        expected = resize_to_model(Image.fromarray(raw["x_test"][0]), 32, 3)
    assert np.array_equal(load_dataset("npz", path, "classes", 32, 3).images[40], expected)


def test_fashion_mnist_names_by_file_name_by_its_labels_or_when_chosen(tmp_path):
    fashion = list(formats.FASHION_MNIST)
    by_name = keras_npz(tmp_path / "fashion-mnist.npz")
    by_labels = keras_npz(tmp_path / "a1b2c3.npz", first_labels=formats.FASHION_MNIST_FIRST_LABELS)
    plain = keras_npz(tmp_path / "mnist.npz")
    assert load_dataset("npz", by_name, "classes", 32, 1).class_names == fashion
    assert load_dataset("npz", by_labels, "classes", 32, 1).class_names == fashion
    assert "Fashion-MNIST" in detection.detect(by_labels).kind
    assert load_dataset("npz", plain, "classes", 32, 1,
                        options=FormatOptions(npz_classes="fashion")).class_names == fashion
    assert load_dataset("npz", by_name, "classes", 32, 1,
                        options=FormatOptions(npz_classes="digits")).class_names[:2] == ["0", "1"]


def test_a_keras_npz_without_labels_is_refused_clearly(tmp_path):
    np.savez(tmp_path / "half.npz", x_train=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match="half.npz has x_train but no y_train"):
        load_dataset("npz", tmp_path / "half.npz", "classes", 32, 1)


def test_an_npz_with_an_empty_part_loads_and_one_with_miscounted_labels_is_refused_clearly(tmp_path):
    images = np.arange(6 * 28 * 28, dtype=np.uint8).reshape(6, 28, 28)
    np.savez(tmp_path / "test_only.npz", x_train=images[:0], y_train=np.zeros((0, 1), np.uint8),
             x_test=images, y_test=np.array([[0], [1], [0], [1], [0], [1]], np.uint8))
    ds = load_dataset("npz", tmp_path / "test_only.npz", "classes", 32, 1)
    assert len(ds) == 6 and list(ds.labels) == [0, 1, 0, 1, 0, 1] and set(ds.own_split) == {"test"}
    np.savez(tmp_path / "miscounted.npz", x_train=images, y_train=np.zeros(5, np.uint8),
             x_test=images, y_test=np.zeros(6, np.uint8))
    with pytest.raises(DataError, match="miscounted.npz: y_train holds 5 labels for the 6 images of x_train"):
        load_dataset("npz", tmp_path / "miscounted.npz", "classes", 32, 1)
    np.savez(tmp_path / "nothing.npz", x_train=images[:0], y_train=np.zeros(0, np.uint8),
             x_test=images[:0], y_test=np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="nothing.npz holds no images"):
        load_dataset("npz", tmp_path / "nothing.npz", "classes", 32, 1)


# ----------------------------------------------------------------------------- CIFAR

def test_cifar_members_need_only_the_three_numpy_globals(tmp_path):
    names = {arg for op, arg, _ in pickletools.genops(as_cifar_pickle(cifar_batch(2)))
             if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_cifar10_tarball_pixels_labels_names_and_own_split(tmp_path):
    path, members = cifar10_tarball(tmp_path / "cifar-10-python.tar.gz")
    found = detection.detect(path)
    assert (found.source, found.task) == ("cifar", "classes") and "CIFAR-10" in found.kind
    ds = load_dataset("cifar", path, "classes", 32, 3)
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"] and ds.images.shape == (24, 32, 32, 3)
    first = members["cifar-10-batches-py/data_batch_1"]
    # row-major channels-first planes become an (H, W, RGB) image
    assert np.array_equal(ds.images[0], first[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert list(ds.labels[:4]) == first[b"labels"][:4] and ds.files[0] == "data_batch_1/img_0000.png"
    assert list(ds.own_split).count("test") == 4 and ds.patients_per_image
    gray = load_dataset("cifar", path, "classes", 48, 1)  # the same resizing and channels as other sources
    assert gray.images.shape == (24, 48, 48, 1)


def test_cifar100_fine_labels_by_default_or_coarse_when_chosen(tmp_path):
    path = cifar100_tarball(tmp_path / "cifar-100-python.tar.gz")
    assert "CIFAR-100" in detection.detect(path).kind
    fine = load_dataset("cifar", path, "classes", 32, 3)
    coarse = load_dataset("cifar", path, "classes", 32, 3, options=FormatOptions(label_level="coarse"))
    assert len(fine.class_names) == 100 and len(coarse.class_names) == 20
    assert np.array_equal(fine.labels // 5, coarse.labels) and coarse.class_names[0] == "coarse0"


class RunsACommand:
    """What an attacker would put in a pickle: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_in_a_cifar_tarball_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps({b"data": RunsACommand(marker)}, protocol=3)
    path, _ = cifar10_tarball(tmp_path / "cifar-10-python.tar.gz",
                              replace={"cifar-10-batches-py/data_batch_3": evil})
    with pytest.raises(DataError, match=r"data_batch_3: refused: the pickle asks for (posix|os)\.system"):
        load_dataset("cifar", path, "classes", 32, 3)
    assert not marker.exists()
    for name in ("builtins.eval", "subprocess.Popen", "numpy.load"):  # numpy, but not an array's globals
        module, attr = name.rsplit(".", 1)
        with pytest.raises(DataError, match="refused"):
            cifar.SafeUnpickler(io.BytesIO(f"c{module}\n{attr}\n.".encode())).load()


def test_cifar_tarballs_go_through_the_archive_guard(tmp_path, monkeypatch):
    linked = write_tar(tmp_path / "linked.tar.gz", {"cifar-10-batches-py/test_batch": b"x"},
                       links={"cifar-10-batches-py/data_batch_1": "/etc/passwd"})
    with pytest.raises(DataError, match="data_batch_1: links and special files are not allowed"):
        load_dataset("cifar", linked, "classes", 32, 3)
    path, _ = cifar10_tarball(tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar, "CIFAR_TAR", archives.ZipLimits(member_bytes=1000, total_bytes=10**9, members=64))
    with pytest.raises(DataError, match="is refused: .*data_batch_1: .* bytes is larger than the limit"):
        load_dataset("cifar", path, "classes", 32, 3)
    not_cifar = write_tar(tmp_path / "other.tar.gz", {"notes.txt": b"hello"})
    with pytest.raises(DataError, match="not a CIFAR python tarball: expected data_batch_1"):
        detection.detect(not_cifar)


# ----------------------------------------------------------------------------- CSV of labels

def test_a_plain_csv_of_labels_with_patient_ids_splits_by_patient(tmp_path):
    rows = ["filename,label,patient_id"]
    for i in range(30):
        png(tmp_path / "images" / f"{i}.png", 40 * (i % 3))
        rows.append(f"images/{i}.png,{['cat', 'dog', 'owl'][i % 3]},p{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert detection.detect(tmp_path / "labels.csv").source == "csv"
    ds = load_dataset("csv", tmp_path / "labels.csv", "classes", 32, 1)
    assert ds.class_names == ["cat", "dog", "owl"] and len(ds) == 30 and ds.patient_ids[3] == "p1"
    split = make_split(ds, 0.2, 0.2, seed=1)
    assert not split.report.leaks and not split.report.per_image
    assert not any("per image" in w for w in split.report.warnings)


def nih_csv(tmp_path: Path) -> Path:
    """Data_Entry_2017.csv, its images spread over images_00N/images/ as NIH ships them."""
    findings = ["No Finding", "Pneumonia", "Effusion", "Pneumonia|Effusion"]
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"]
    for i in range(24):
        png(tmp_path / f"images_00{1 + i // 12}" / "images" / f"{i:08d}_000.png", 10 * i)
        rows.append(f"{i:08d}_000.png,{findings[i % 4]},0,{i // 2},50,M,PA")
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "Data_Entry_2017.csv"


def test_nih_findings_single_finding_rows_or_one_finding_against_the_rest(tmp_path):
    path = nih_csv(tmp_path)
    assert "NIH ChestX-ray14" in detection.detect(path).kind
    single = load_dataset("csv", path, "classes", 32, 1)
    assert single.class_names == ["Effusion", "No Finding", "Pneumonia"] and len(single) == 18
    assert sum("several findings (Pneumonia|Effusion)" in s["reason"] for s in single.report.skipped) == 6
    pneumonia = load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(label_column="pneumonia"))
    assert pneumonia.class_names == ["no Pneumonia", "Pneumonia"] and pneumonia.class_counts()["Pneumonia"] == 12
    assert len(pneumonia) == 24 and set(pneumonia.patient_ids) == {str(i) for i in range(12)}


def test_chexpert_target_column_with_uncertain_skipped_and_patients_from_paths(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    rows = ["Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Cardiomegaly,Pneumonia"]
    values = ["1.0", "0.0", "", "-1.0"]
    for i in range(16):
        rel = f"CheXpert-v1.0-small/train/patient{i // 2:05d}/study1/view{i % 2 + 1}_frontal.jpg"
        png(tmp_path / rel, 15 * i)
        rows.append(f"{rel},Male,60,Frontal,AP,,1.0,{values[i % 4]}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="one 1/0/-1 column per finding .*Cardiomegaly, Pneumonia.*choose one"):
        load_dataset("csv", root / "train.csv", "classes", 32, 1)
    ds = load_dataset("csv", root / "train.csv", "classes", 32, 1, options=FormatOptions(label_column="Pneumonia"))
    assert ds.class_counts() == {"no Pneumonia": 8, "Pneumonia": 4}  # empty reads as negative
    assert [s["reason"] for s in ds.report.skipped] == ["uncertain Pneumonia (-1)"] * 4
    assert ds.patient_ids[0] == "patient00000" and not ds.patients_per_image


def test_csv_problems_are_said_clearly(tmp_path):
    path = nih_csv(tmp_path)
    with pytest.raises(DataError, match=r"unknown target 'Cardio' .*columns are Image Index, Finding Labels.*"
                                        r"findings in 'Finding Labels' are Effusion, No Finding, Pneumonia"):
        load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(label_column="Cardio"))
    elsewhere = tmp_path / "empty_folder"
    elsewhere.mkdir()
    with pytest.raises(DataError, match=r"none of the 24 files listed in Data_Entry_2017.csv is in .*empty_folder.*"
                                        r"\(e.g. 00000000_000.png, 00000001_000.png"):
        load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(images_folder=str(elsewhere)))
    (tmp_path / "images_002" / "images" / "00000020_000.png").unlink()
    (tmp_path / "images_002" / "images" / "00000021_000.png").unlink()
    ds = load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(label_column="Effusion"))
    assert label_csv.missing_summary(ds.report.skipped) == (
        "2 files listed in the CSV were not found (00000020_000.png, 00000021_000.png); their rows were skipped")
    (tmp_path / "blank.csv").write_text("filename,label\nimages_001/images/00000000_000.png,\n")
    with pytest.raises(DataError, match=r"no usable rows in blank.csv \(1 no label\)"):
        load_dataset("csv", tmp_path / "blank.csv", "classes", 32, 1)


def test_a_format_option_is_part_of_the_cache_key(tmp_path):
    path = nih_csv(tmp_path)
    first = load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(label_column="Effusion"))
    second = load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(label_column="Pneumonia"))
    assert first.class_names == ["no Effusion", "Effusion"] and second.class_names == ["no Pneumonia", "Pneumonia"]


# ----------------------------------------------------------------------------- DICOM

def test_dicom_class_folders_decode_as_the_diagnose_page_does_with_patient_ids(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)
    files = {}
    for cls, photometric in (("effusion", "MONOCHROME1"), ("normal", "MONOCHROME2")):
        for i in range(4):
            data = dicom_bytes(ramp + 100 * i, photometric, PatientID=f"{cls}-{i % 2}",
                               RescaleSlope=2, RescaleIntercept=-1024)
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{i}.dcm").write_bytes(data)
            files[f"{cls}/{i}.dcm"] = data
    found = detection.detect(tmp_path)
    assert (found.source, found.task) == ("folder", "classes") and "DICOM" in found.kind
    ds = load_dataset("folder", tmp_path, "classes", 32, 1)
    assert ds.class_names == ["effusion", "normal"] and len(ds) == 8 and not ds.report.skipped
    for row, name in enumerate(ds.files):  # one computation: the Diagnose page's decoding, then resizing
        assert np.array_equal(ds.images[row], resize_to_model(decode_upload(files[name], name), 32, 1))
    inverted, plain = ds.images[0].astype(int), ds.images[4].astype(int)  # the same pixels, MONOCHROME1 and 2
    assert np.abs(255 - inverted - plain).max() <= 1
    assert sorted(set(ds.patient_ids)) == ["effusion-0", "effusion-1", "normal-0", "normal-1"]


# ----------------------------------------------------------------------------- detection on the command line

def test_the_train_command_detects_the_source_from_the_path(tmp_path, capsys):
    npz = keras_npz(tmp_path / "mnist.npz")
    config = train_cli.build_config(train_cli.parse_args(["--data-path", str(npz)]))
    assert (config.data_source, config.task) == ("npz", "classes")
    assert "detected a Keras .npz" in capsys.readouterr().err
    (tmp_path / "nih").mkdir()
    csv = nih_csv(tmp_path / "nih")
    config = train_cli.build_config(train_cli.parse_args(["--data-path", str(csv), "--label-column", "Effusion"]))
    assert (config.data_source, config.label_column) == ("csv", "Effusion")
    given = train_cli.build_config(train_cli.parse_args(["--data-path", str(npz), "--data-source", "npz",
                                                         "--task", "classes"]))
    assert given.data_source == "npz"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not a dataset format CXR Lab reads"):
        train_cli.build_config(train_cli.parse_args(["--data-path", str(tmp_path / "notes.txt")]))


@pytest.mark.slow
def test_train_on_a_tiny_mnist_file_without_naming_the_source(tmp_path):
    npz = keras_npz(tmp_path / "mnist.npz", n_train=60, n_test=20)
    result = subprocess.run([sys.executable, "-m", "core", "train", "--data-path", str(npz), "--split", "own",
                             "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--quiet",
                             "--set", "arch_params.dense_units=16", "--runs-dir", str(tmp_path / "runs")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output["state"] == "done" and output["test"]["n"] == 20
    config = json.loads((Path(output["run_dir"]) / "config.json").read_text())
    assert (config["data_source"], config["task"], config["npz_classes"]) == ("npz", "classes", "auto")


# ----------------------------------------------------------------------------- the Dataset page

def test_the_dataset_page_detects_a_keras_npz_typed_as_another_source(app_env, tmp_path):
    npz = keras_npz(tmp_path / "mnist.npz")
    at = open_page("pages/dataset.py")
    at.radio(key="ds_source").set_value("folder").run()
    at.text_input(key="ds_path_folder").input(str(npz)).run()
    assert_clean(at)
    assert at.session_state["ds_source"] == "npz"
    assert at.session_state["dataset_settings"]["data_source"] == "npz"
    page = texts(at)
    assert "Detected: a Keras .npz" in page and "split is per image" in page
    assert "Overlap check passed" not in page
    assert at.selectbox(key="ds_npz_classes").value == "auto"


def test_a_csv_images_folder_outside_the_shared_data_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "inside").mkdir()
    path = nih_csv(tmp_path / "inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "inside"))
    assert len(load_dataset("csv", path, "classes", 32, 1, use_cache=False)) == 18
    with pytest.raises(DataError, match="outside the data folder"):
        load_dataset("csv", path, "classes", 32, 1, options=FormatOptions(images_folder=str(outside)))


def test_the_dataset_caption_names_a_format_setting_that_was_chosen():
    from core.present import forms
    settings = {**forms.default_dataset_settings(), "data_source": "csv", "data_path": "/d/train.csv",
                "task": "classes", "label_column": "Pneumonia", "label_level": "coarse"}
    label = forms.dataset_label(settings)
    assert "CSV of labels (train.csv) · the dataset's own classes · Target (CSV): Pneumonia · 128 px" in label
    assert "CIFAR" not in label  # a setting of another format is not named
