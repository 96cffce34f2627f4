"""A dashboard shared on a network reads server paths only inside its data root (CXR_DATA_ROOT)."""
import pytest

from core.data import datasets as data_lib
from tests.synthetic import make_chest_folder


def test_without_a_data_root_any_folder_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("CXR_DATA_ROOT", raising=False)
    folder = make_chest_folder(tmp_path / "anywhere", n_patients=4)
    assert len(data_lib.load_dataset("folder", folder, image_size=32).labels) > 0


def test_a_folder_outside_the_data_root_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "shared-data"))
    outside = make_chest_folder(tmp_path / "private", n_patients=4)
    with pytest.raises(data_lib.DataError, match="outside the data folder"):
        data_lib.load_dataset("folder", outside, image_size=32)
    with pytest.raises(data_lib.DataError, match="outside the data folder"):
        data_lib.load_dataset("folder", tmp_path / "shared-data" / ".." / "private", image_size=32)


def test_folders_inside_the_data_root_and_uploads_load(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "shared-data"))
    monkeypatch.setenv("CXR_UPLOADS_DIR", str(tmp_path / "uploads"))
    inside = make_chest_folder(tmp_path / "shared-data" / "xrays", n_patients=4)
    assert len(data_lib.load_dataset("folder", inside, image_size=32).labels) > 0
    uploaded = make_chest_folder(tmp_path / "uploads" / "unpacked", n_patients=4)
    assert len(data_lib.load_dataset("folder", uploaded, image_size=32).labels) > 0
