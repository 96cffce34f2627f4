"""Sweeps, repeats, patient-grouped k-fold, training fraction, and portable runs (export / import)."""
import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from core.data.datasets import load_dataset
from core.data.splits import make_cv_split, make_split, subsample_train
from core.ml.inference import load_model
from core.ml.data_pipeline import load_data
from core.settings.config import TrainConfig
from core.store.portable import ImportRefused, export_sweep, import_archive
from core.store.runs import RunStore
from core.store.sweeps import Sweep, load_sweep, submit_sweep, sweep_results
from core.workers.manager import JobManager


def tiny_base_of(folder) -> dict:
    return {"arch": "seed_cnn", "image_size": 32, "epochs": 1, "batch_size": 16, "data_source": "folder",
            "data_path": str(folder), "arch_params": {"dense_units": 8}}


@pytest.fixture
def tiny_base(chest_folder):
    return tiny_base_of(chest_folder)


# ----------------------------------------------------------------------------- splits

@pytest.mark.slow  # three patient-grouped fold searches over the 4,488 built-in images
def test_kfold_gives_k_disjoint_validation_folds_and_one_fixed_test_split():
    ds = load_dataset("builtin", task="binary", image_size=32)
    folds = [make_cv_split(ds, folds=3, fold=i, test_fraction=0.15, seed=4) for i in range(3)]
    tests = {tuple(f.test) for f in folds}
    assert len(tests) == 1
    val_patients = [set(ds.patient_ids[f.val]) for f in folds]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not val_patients[i] & val_patients[j]
    rest = set(range(len(ds))) - set(folds[0].test)
    assert set(np.concatenate([f.val for f in folds])) == rest
    for f in folds:
        assert not f.report.leaks and f.report.mode.startswith("cv fold")


@pytest.mark.slow  # split searches over the 4,488 built-in images
def test_training_fraction_shrinks_train_by_patient_and_keeps_val_and_test():
    ds = load_dataset("builtin", task="binary", image_size=32)
    full = make_split(ds, seed=1)
    half = subsample_train(ds, full, 0.5, seed=1)
    np.testing.assert_array_equal(half.val, full.val)
    np.testing.assert_array_equal(half.test, full.test)
    assert set(half.train) < set(full.train)
    assert len(half.train) / len(full.train) == pytest.approx(0.5, abs=0.05)
    kept, dropped = set(ds.patient_ids[half.train]), set(ds.patient_ids[np.setdiff1d(full.train, half.train)])
    assert not kept & dropped  # whole patients kept or dropped
    ratio = lambda idx: np.mean(ds.labels[idx])  # noqa: E731
    assert ratio(half.train) == pytest.approx(ratio(full.train), abs=0.03)
    config = TrainConfig(image_size=32, train_fraction=0.5, seed=1)
    _, from_config = load_data(config)
    np.testing.assert_array_equal(from_config.train, half.train)


# ----------------------------------------------------------------------------- sweeps

def test_sweep_expands_the_grid_with_repeats_on_a_fixed_split(tiny_base):
    sweep = Sweep.from_dict({"name": "drop", "base": tiny_base, "repeats": 3,
                             "axes": [{"setting": "dropout", "values": [0.2, 0.4]},
                                      {"setting": "arch_params.activation", "values": ["relu", "tanh"]}]})
    configs = sweep.configs("sweep-x")
    assert len(configs) == 12
    assert {c.seed for c in configs} == {42, 43, 44} and {c.split_seed for c in configs} == {42}
    assert {(c.dropout, c.arch_params["activation"]) for c in configs} == {
        (0.2, "relu"), (0.2, "tanh"), (0.4, "relu"), (0.4, "tanh")}
    assert all(c.sweep_id == "sweep-x" for c in configs)
    with pytest.raises(ValueError, match="seed"):
        Sweep.from_dict({"base": tiny_base, "axes": [{"setting": "seed", "values": [1, 2]}]})
    with pytest.raises(ValueError, match="dropout"):
        Sweep.from_dict({"base": tiny_base, "axes": [{"setting": "dropout", "values": [0.2, 1.5]}]})


@pytest.fixture(scope="module")
def grid_sweep(chest_folder, tmp_path_factory):
    """A 2x2 sweep of tiny runs trained by a job manager, once for the tests that read it: (store, sweep id)."""
    manager = JobManager(RunStore(tmp_path_factory.mktemp("grid-sweep")))
    try:
        sweep = Sweep.from_dict({"name": "grid", "base": tiny_base_of(chest_folder),
                                 "axes": [{"setting": "dropout", "values": [0.1, 0.5]},
                                          {"setting": "batch_size", "values": [8, 16]}]})
        sweep_id = submit_sweep(manager, sweep)
        for entry in load_sweep(manager.store, sweep_id)["runs"]:
            assert manager.wait(entry["run_id"], 300) == "done"
    finally:
        manager.shutdown()
    return manager.store, sweep_id


@pytest.mark.slow
def test_a_2x2_sweep_of_tiny_runs_completes_with_a_results_table(grid_sweep):
    store, sweep_id = grid_sweep
    record = load_sweep(store, sweep_id)
    assert len(record["runs"]) == 4
    rows = sweep_results(store, sweep_id)
    assert [(r["dropout"], r["batch_size"]) for r in rows] == [(0.1, 8), (0.1, 16), (0.5, 8), (0.5, 16)]
    for row in rows:
        assert row["runs"] == row["done"] == 1 and row["test_accuracy_n"] == 1
        assert 0 <= row["test_accuracy_mean"] <= 1
    # every run of the sweep is scored on the same test patients
    tests = {tuple(store.get(e["run_id"]).predictions("test")["files"]) for e in record["runs"]}
    assert len(tests) == 1


@pytest.mark.slow
def test_kfold_sweep_point_gives_k_runs_with_disjoint_validation_patients(manager, tiny_base):
    sweep = Sweep.from_dict({"base": tiny_base, "cv_folds": 3,
                             "axes": [{"setting": "learning_rate", "values": [0.001]}]})
    sweep_id = submit_sweep(manager, sweep)
    runs = [manager.store.get(e["run_id"]) for e in load_sweep(manager.store, sweep_id)["runs"]]
    assert len(runs) == 3 and all(manager.wait(r.id, 300) == "done" for r in runs)
    val_sets = [set(r.predictions("val")["patient_ids"]) for r in runs]
    assert not (val_sets[0] & val_sets[1] or val_sets[0] & val_sets[2] or val_sets[1] & val_sets[2])
    assert len({tuple(r.predictions("test")["files"]) for r in runs}) == 1
    row = sweep_results(manager.store, sweep_id)[0]
    assert row["done"] == 3 and row["test_accuracy_n"] == 3  # one point, its mean ± std over the folds
    assert 0 <= row["test_accuracy_mean"] <= 1 and row["test_accuracy_std"] >= 0


@pytest.mark.slow
def test_sweep_cli_runs_a_sweep_file(tmp_path, tiny_base):
    import subprocess
    import sys
    from pathlib import Path
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"name": "cli", "base": tiny_base, "repeats": 1,
                                "axes": [{"setting": "dropout", "values": [0.1, 0.3]}]}))
    result = subprocess.run([sys.executable, "-m", "core", "sweep", str(spec), "--runs-dir", str(tmp_path / "r")],
                            cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout)
    assert [row["dropout"] for row in output["results"]] == [0.1, 0.3]
    assert all(row["done"] == 1 for row in output["results"])


@pytest.mark.slow
def test_sweep_cli_trains_a_grid_of_three_settings(tmp_path, tiny_base):
    import subprocess
    import sys
    from pathlib import Path
    spec = tmp_path / "grid.json"
    spec.write_text(json.dumps({"name": "cube", "base": tiny_base, "axes": [
        {"setting": "optimizer", "values": ["adam", "sgd"]}, {"setting": "learning_rate", "values": [0.01, 0.001]},
        {"setting": "batch_size", "values": [8, 16]}]}))
    result = subprocess.run([sys.executable, "-m", "core", "sweep", str(spec), "--runs-dir", str(tmp_path / "r"),
                             "--metric", "accuracy_gap"], cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)["results"]
    assert [(r["optimizer"], r["learning_rate"], r["batch_size"]) for r in rows] == [
        (o, lr, b) for o in ("adam", "sgd") for lr in (0.01, 0.001) for b in (8, 16)]
    assert all(r["done"] == 1 and r["accuracy_gap_n"] == 1 for r in rows)  # every run measured its overfitting
    assert "optimizer | learning_rate | batch_size | accuracy_gap mean ± std | done/runs" in result.stderr


# ----------------------------------------------------------------------------- portable runs

@pytest.mark.slow
def test_export_import_round_trip(grid_sweep, tmp_path):
    store, sweep_id = grid_sweep
    run_ids = [e["run_id"] for e in load_sweep(store, sweep_id)["runs"]]
    archive = export_sweep(store, sweep_id, tmp_path / "export.zip")
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert "manifest.json" in names and any("tensorboard/train/events" in n for n in names)
    assert all(f"{r}/model.keras" in names for r in run_ids)
    other = RunStore(tmp_path / "elsewhere")
    imported = import_archive(other, archive).imported
    assert imported == run_ids
    for run_id in run_ids:
        original, copy = store.get(run_id), other.get(run_id)
        assert copy.config() == original.config() and copy.history() == original.history()
        np.testing.assert_array_equal(copy.predictions("test")["probabilities"],
                                      original.predictions("test")["probabilities"])
        assert copy.state() == "done" and load_model(copy) is not None
    assert [r["done"] for r in sweep_results(other, sweep_id)] == [1, 1, 1, 1]
    assert import_archive(other, archive).imported == []  # importing twice adds nothing
    assert len(other.list()) == 4


def write_zip(path, members: dict, manifest_runs=("r1",)):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "cxrlab-runs", "version": 1, "runs": list(manifest_runs)}))
        for name, content in members.items():
            zf.writestr(name, content)
    return path


@pytest.mark.parametrize("members, message", [
    ({"r1/config.json": "{}", "r1/../../evil.py": "x"}, "unsafe path"),
    ({"r1/config.json": "{}", "/etc/passwd": "x"}, "unsafe path"),
    ({"r1/config.json": "{}", "C:/windows/x": "x"}, "unsafe path"),
    ({"r1/config.json": "{}", "r1/run.pkl": "x"}, "not a file a CXR Lab run contains"),
    ({"r1/config.json": '{"colour": 1}'}, "not a valid run config"),
    ({"r1/config.json": "{}", "r1/predictions_test.npz": "not numpy"}, "not a plain array file"),
    ({"r1/config.json": "{}", "r1/model.keras": "not a model"}, "safe mode"),
    ({"r1/status.json": "{}"}, "no config.json"),
])
def test_malicious_or_broken_zips_are_refused(tmp_path, members, message):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(ImportRefused, match=message):
        import_archive(store, write_zip(tmp_path / "bad.zip", members))
    assert store.list() == [] and list(store.root.iterdir()) == []


def test_pickled_arrays_are_refused(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as inner:
        inner.writestr("probabilities.npy", buffer.getvalue())
    with pytest.raises(ImportRefused, match="plain array"):
        import_archive(RunStore(tmp_path / "runs"), write_zip(tmp_path / "p.zip", {
            "r1/config.json": "{}", "r1/predictions_val.npz": npz.getvalue()}))


def test_huge_member_and_zip_bomb_are_refused_without_unpacking(tmp_path, monkeypatch):
    import core.store.portable as portable
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps({"format": "cxrlab-runs", "runs": ["r1"]}))
        zf.writestr("r1/config.json", "{}")
        zf.writestr("r1/metrics.jsonl", b"\0" * (50 * 2**20))  # 50 MiB of zeros compress ~1000:1
    with pytest.raises(ImportRefused, match="zip bomb"):
        import_archive(RunStore(tmp_path / "runs"), bomb)
    monkeypatch.setattr(portable, "LIMITS", dataclasses.replace(portable.LIMITS, member_bytes=1024))
    big = write_zip(tmp_path / "big.zip", {"r1/config.json": "{}", "r1/metrics.jsonl": "x" * 5000})
    with pytest.raises(ImportRefused, match="larger than the limit"):
        import_archive(RunStore(tmp_path / "runs2"), big)


def test_not_an_export_is_refused(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("r1/config.json", "{}")
    with pytest.raises(ImportRefused, match="manifest.json is missing"):
        import_archive(RunStore(tmp_path / "runs"), plain)
    (tmp_path / "text.zip").write_text("hello")
    with pytest.raises(ImportRefused, match="not a zip"):
        import_archive(RunStore(tmp_path / "runs"), tmp_path / "text.zip")
