"""Dataset loading (built-in zip, folders, zips, .npz), bad files, caching and patient-grouped splits."""
import zipfile

import numpy as np
import pytest

from core.data import sources as data
from core.data.datasets import DataError, load_dataset, load_summary
from core.data.splits import make_split
from tests.synthetic import jpeg_bytes, make_chest_folder

# ----------------------------------------------------------------------------- file names

@pytest.mark.parametrize("name, expected", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0117-0001-0002.jpeg", "IM-0117"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan_42.png", "scan_42"),
])
def test_patient_id_from_file_name(name, expected):
    assert data.patient_id(name) == expected


def test_pneumonia_subtype_from_file_name():
    assert data.pneumonia_subtype("PNEUMONIA/person1_bacteria_1.jpeg") == "bacterial"
    assert data.pneumonia_subtype("person1_virus_7.jpeg") == "viral"
    assert data.pneumonia_subtype("IM-0001-0001.jpeg") is None


# ----------------------------------------------------------------------------- built-in set

def test_builtin_binary_matches_the_data_readme():
    ds = load_dataset("builtin", task="binary", image_size=128)
    assert ds.images.shape == (4488, 128, 128, 1) and ds.images.dtype == np.uint8
    assert ds.class_counts() == {"NORMAL": 1215, "PNEUMONIA": 3273}
    assert ds.report.skipped == []
    assert len(set(ds.patient_ids[ds.labels == 0])) == 1090
    assert len(set(ds.patient_ids[ds.labels == 1])) == 1398


def test_a_second_load_reads_the_cache_and_decodes_nothing(tmp_path, private_cache):
    root = make_chest_folder(tmp_path / "xrays")
    decoded, decoded_again = [], []
    first = load_dataset("folder", root, image_size=32, progress=lambda done, total, message: decoded.append(done))
    again = load_dataset("folder", root, image_size=32, progress=lambda done, total, message: decoded_again.append(done))
    assert decoded[-1] == len(first) == 24 and decoded_again == []
    assert again.report.from_cache and not first.report.from_cache and list(private_cache.glob("*.npy"))
    np.testing.assert_array_equal(again.images, first.images)
    # The report of the cached load still names the decoding that filled the cache.
    decoding = first.report.decode_seconds
    assert again.report.decode_seconds == decoding and 0 < decoding <= first.report.seconds
    assert load_summary(first.report) == f"24 images, decoded in {first.report.seconds:.1f} s, 0 skipped"
    assert load_summary(again.report) == (f"24 images, decoded in {first.report.decode_seconds:.1f} s and read "
                                          f"from the cache in {again.report.seconds:.1f} s, 0 skipped")


def test_a_cache_written_before_decode_times_were_kept_still_loads(tmp_path, private_cache):
    root = make_chest_folder(tmp_path / "xrays")
    first = load_dataset("folder", root, image_size=32)
    (meta_file,) = private_cache.glob("*.meta.npz")
    with np.load(meta_file, allow_pickle=False) as saved:
        older = {key: saved[key] for key in saved.files if key != "decode_seconds"}
    np.savez(meta_file, **older)
    again = load_dataset("folder", root, image_size=32)
    assert again.report.from_cache and again.report.decode_seconds is None
    assert load_summary(again.report).startswith("24 images, read from the cache in ")
    np.testing.assert_array_equal(again.labels, first.labels)


@pytest.mark.slow  # decodes the 4,488 built-in images in RGB at 64 px, a size no other test uses
def test_builtin_subtype_counts_and_second_load_decodes_nothing(private_cache):
    decoded, decoded_again = [], []
    ds = load_dataset("builtin", task="subtype", image_size=64, channels=3,
                      progress=lambda done, total, message: decoded.append(done))
    assert ds.class_names == ["normal", "bacterial", "viral"]
    assert ds.class_counts() == {"normal": 1215, "bacterial": 2151, "viral": 1122}
    assert ds.images.shape == (4488, 64, 64, 3)
    again = load_dataset("builtin", task="subtype", image_size=64, channels=3,
                         progress=lambda done, total, message: decoded_again.append(done))
    assert decoded and max(decoded) == 4488 and decoded_again == []  # read from the cache, not decoded
    assert again.report.from_cache and not ds.report.from_cache
    np.testing.assert_array_equal(again.images, ds.images)
    np.testing.assert_array_equal(again.patient_ids, ds.patient_ids)


def test_builtin_grouped_split_has_no_patient_overlap_and_keeps_class_ratios():
    ds = load_dataset("builtin", task="subtype", image_size=32)
    split = make_split(ds, val_fraction=0.15, test_fraction=0.15, seed=3)
    parts = {name: set(ds.patient_ids[split.indices(name)]) for name in ("train", "val", "test")}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert split.report.overlap == {"train/val": 0, "train/test": 0, "val/test": 0} and not split.report.leaks
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(len(ds)))
    overall = np.bincount(ds.labels) / len(ds)
    for name in ("train", "val", "test"):
        ratios = np.bincount(ds.labels[split.indices(name)], minlength=3) / len(split.indices(name))
        assert np.abs(ratios - overall).max() < 0.03, name
    assert split.report.fractions["test"] == pytest.approx(0.15, abs=0.02)


def test_split_is_reproducible_per_seed_and_differs_between_seeds():
    ds = load_dataset("builtin", task="binary", image_size=32)
    a, b, c = make_split(ds, seed=1), make_split(ds, seed=1), make_split(ds, seed=2)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)


# ----------------------------------------------------------------------------- folders and zips

def test_folder_with_class_subfolders(tmp_path):
    root = make_chest_folder(tmp_path / "xrays")
    ds = load_dataset("folder", root, task="binary", image_size=32)
    assert ds.class_names == ["NORMAL", "PNEUMONIA"] and ds.class_counts() == {"NORMAL": 12, "PNEUMONIA": 12}
    assert ds.images.shape == (24, 32, 32, 1)
    assert not ds.has_own_split
    assert ds.images[ds.labels == 1].mean() > ds.images[ds.labels == 0].mean()


def test_generic_folder_classes_are_folder_names(tmp_path):
    for cls in ("cat", "dog", "emu"):
        for i in range(4):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{cls}{i}.jpg").write_bytes(jpeg_bytes(30 * i))
    ds = load_dataset("folder", tmp_path, task="classes", image_size=32, channels=3)
    assert ds.class_names == ["cat", "dog", "emu"] and ds.images.shape == (12, 32, 32, 3)
    with pytest.raises(DataError, match="NORMAL and PNEUMONIA"):
        load_dataset("folder", tmp_path, task="binary", image_size=32)


def test_kaggle_layout_offers_its_own_split_and_checks_it_for_leaks(tmp_path):
    root = make_chest_folder(tmp_path / "chest_xray", split_dirs=True)
    ds = load_dataset("folder", root, task="subtype", image_size=32)
    assert ds.has_own_split and set(ds.own_split) == {"train", "val", "test"}
    split = make_split(ds, use_own_split=True)
    assert split.report.mode == "own" and not split.report.leaks
    assert len(split.train) == len(split.val) == len(split.test) == 24
    # The same patient in train and test: the check must see it and warn.
    (root / "test" / "NORMAL" / "IM-0100-0099.jpeg").write_bytes(jpeg_bytes(60))
    leaky = make_split(load_dataset("folder", root, task="subtype", image_size=32), use_own_split=True)
    assert leaky.report.overlap["train/test"] == 1 and leaky.report.leaks
    assert "IM-0100" in leaky.report.overlap_examples
    assert any("patient leak" in w for w in leaky.report.warnings)


def test_own_split_without_val_carves_val_from_train_by_patient(tmp_path):
    root = make_chest_folder(tmp_path / "c", split_dirs=True)
    for folder in (root / "val").rglob("*.jpeg"):
        folder.unlink()
    ds = load_dataset("folder", root, task="binary", image_size=32)
    split = make_split(ds, val_fraction=0.3, use_own_split=True)
    assert len(split.val) > 0 and not split.report.leaks
    assert any("no val part" in w for w in split.report.warnings)


def test_zip_of_a_folder_with_bad_files_skips_and_reports_them(tmp_path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"top/NORMAL/IM-{i:04d}-0001.jpeg", jpeg_bytes(50))
            zf.writestr(f"top/PNEUMONIA/person{i}_bacteria_{i}.jpeg", jpeg_bytes(210))
        zf.writestr("top/NORMAL/IM-9999-0001.jpeg", b"this is not a jpeg")
        zf.writestr("top/NORMAL/IM-9998-0001.jpeg", jpeg_bytes(50)[:120])  # truncated
        zf.writestr("top/NORMAL/IM-9997-0001.jpeg", b"")                    # empty
        zf.writestr("top/PNEUMONIA/notes.txt", b"hello")
        zf.writestr("__MACOSX/top/NORMAL/._IM-0000-0001.jpeg", b"junk")
        zf.writestr("top/README.jpg", jpeg_bytes(10))                       # not in a class folder
    ds = load_dataset("zip", archive, task="binary", image_size=32)
    assert ds.class_counts() == {"NORMAL": 4, "PNEUMONIA": 4}
    reasons = {entry["file"]: entry["reason"] for entry in ds.report.skipped}
    assert "not an image file" in reasons["top/NORMAL/IM-9999-0001.jpeg"]
    assert "truncated" in reasons["top/NORMAL/IM-9998-0001.jpeg"] or "damaged" in reasons["top/NORMAL/IM-9998-0001.jpeg"]
    assert "empty" in reasons["top/NORMAL/IM-9997-0001.jpeg"]
    assert "extension" in reasons["top/PNEUMONIA/notes.txt"]
    assert "class folder" in reasons["top/README.jpg"]
    assert not any("MACOSX" in f for f in reasons)


def test_subtype_skips_pneumonia_files_without_a_subtype(tmp_path):
    root = make_chest_folder(tmp_path / "x")
    (root / "PNEUMONIA" / "person77_unknown_1.jpeg").write_bytes(jpeg_bytes(200))
    ds = load_dataset("folder", root, task="subtype", image_size=32)
    assert len(ds) == 24
    assert ds.report.skipped == [{"file": "PNEUMONIA/person77_unknown_1.jpeg",
                                  "reason": "pneumonia image without 'bacteria' or 'virus' in its name"}]


# ----------------------------------------------------------------------------- npz

def test_medmnist_style_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    path = tmp_path / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    ds = load_dataset("npz", path, task="classes", image_size=32)
    assert ds.images.shape == (50, 32, 32, 1) and ds.class_names == ["class 0", "class 1"]
    split = make_split(ds, use_own_split=True)
    assert (len(split.train), len(split.val), len(split.test)) == (30, 10, 10)
    grouped = make_split(ds, seed=0)
    assert len(grouped.train) + len(grouped.val) + len(grouped.test) == 50


def test_npz_float_images_with_class_names(tmp_path):
    path = tmp_path / "floats.npz"
    images = np.linspace(0, 1, 12 * 16 * 16).reshape(12, 16, 16, 1).astype(np.float32)
    np.savez(path, images=images, labels=np.arange(12) % 3, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset("npz", path, task="classes", image_size=32)
    assert ds.class_names == ["a", "b", "c"] and ds.images.max() > 200 and not ds.has_own_split


def test_npz_intensities_outside_0_1_are_stretched_to_0_255_like_16_bit_images(tmp_path):
    from core.data.imaging import stretch_to_uint8
    path = tmp_path / "hounsfield.npz"
    images = np.linspace(-1000, 3000, 12 * 32 * 32).reshape(12, 32, 32)
    np.savez(path, images=images, labels=np.arange(12) % 2)
    ds = load_dataset("npz", path, task="classes", image_size=32, use_cache=False)
    np.testing.assert_array_equal(ds.images[..., 0], stretch_to_uint8(images))
    assert ds.images.min() == 0 and ds.images.max() == 255
    np.testing.assert_array_equal(stretch_to_uint8(np.array([[np.nan, 2.0], [4.0, 4.0]])), [[0, 128], [255, 255]])
    np.testing.assert_array_equal(stretch_to_uint8(np.full((2, 2), 7.0)), np.zeros((2, 2), np.uint8))


def test_bad_npz_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("npz", junk, task="classes")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros(3))
    with pytest.raises(DataError, match="no 'train_images'"):
        load_dataset("npz", wrong, task="classes")


# ----------------------------------------------------------------------------- unusable datasets

def test_empty_missing_and_single_class_datasets_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", tmp_path / "nope", task="classes")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset("folder", tmp_path / "empty", task="classes")
    flat = make_chest_folder(tmp_path / "tree", n_patients=2)  # then flattened: NORMAL/a.jpeg -> NORMAL__a.jpeg
    for image in list(flat.rglob("*.jpeg")):
        image.rename(tmp_path / "tree" / f"{image.parent.name}__{image.name}")
    with pytest.raises(DataError, match=r"found 8 images, but none inside a class folder.*CLASS__ prefix.*"
                                        r"\(NORMAL, PNEUMONIA\).*into (NORMAL|PNEUMONIA)/"):
        load_dataset("folder", flat, task="binary")
    only = tmp_path / "only" / "NORMAL"
    only.mkdir(parents=True)
    for i in range(3):
        (only / f"IM-{i:04d}-0001.jpeg").write_bytes(jpeg_bytes(60))
    with pytest.raises(DataError, match="only one class"):
        load_dataset("folder", tmp_path / "only", task="classes")
    broken = tmp_path / "broken" / "a"
    broken.mkdir(parents=True)
    (broken / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images"):
        load_dataset("folder", tmp_path / "broken", task="classes")
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK nope")
    with pytest.raises(DataError, match="not a valid zip"):
        load_dataset("zip", not_zip, task="classes")


def test_class_with_too_few_patients_for_the_split_names_the_class(tmp_path):
    root = make_chest_folder(tmp_path / "x", n_patients=6)
    for path in list((root / "NORMAL").glob("IM-010[2-5]-*.jpeg")):
        path.unlink()  # NORMAL keeps 2 patients
    ds = load_dataset("folder", root, task="binary", image_size=32)
    with pytest.raises(DataError, match="class 'NORMAL' has only 4 images from 2 patient"):
        make_split(ds)


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.2, 0.6), (0.45, 0.45)])
def test_bad_fractions_are_rejected(val, test):
    ds = load_dataset("builtin", task="binary", image_size=32)
    with pytest.raises(DataError):
        make_split(ds, val_fraction=val, test_fraction=test)


def test_bad_settings_are_rejected():
    with pytest.raises(DataError, match="task must be one of binary, subtype, classes; got .dogs."):
        load_dataset(task="dogs")
    with pytest.raises(DataError, match="channels"):
        load_dataset(channels=2)
    with pytest.raises(DataError, match="data_source must be one of builtin, folder, zip, npz, cifar, csv; got .s3."):
        load_dataset("s3")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("folder")
