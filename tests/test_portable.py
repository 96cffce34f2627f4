"""Importing an exported zip is idempotent: identical runs and sweep records are skipped, a
different run whose id clashes is imported under a new id."""
import shutil

import pytest

from core.store.portable import (
    ImportRefused,
    export_runs,
    export_sweep,
    import_archive,
    run_content_hash,
)
from core.files import write_json
from core.store.runs import RunStore
from core.store.sweeps import list_sweeps, sweeps_dir
from tests.conftest import write_run


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> RunStore:
    """Three finished runs, written once for the module; tests change only their own copy."""
    store = RunStore(tmp_path_factory.mktemp("portable") / "source")
    for seed in range(3):
        write_run(store, "done", name=f"run {seed}", seed=seed, image_size=32)
    return store


@pytest.fixture
def source(three_runs, tmp_path) -> RunStore:
    shutil.copytree(three_runs.root, tmp_path / "source")
    return RunStore(tmp_path / "source")


def sweep_record(store: RunStore, sweep_id: str = "sweep-test") -> dict:
    record = {"id": sweep_id, "name": "test", "created": 1.0, "axes": [{"setting": "seed", "values": [0, 1, 2]}],
              "repeats": 1, "cv_folds": 0,
              "runs": [{"run_id": r.id, "point": {"seed": i}, "seed": i} for i, r in enumerate(store.list())]}
    write_json(sweeps_dir(store) / f"{sweep_id}.json", record)
    return record


def test_importing_the_same_zip_twice_adds_nothing_the_second_time(source, tmp_path):
    archive = export_runs(source, [r.id for r in source.list()], tmp_path / "runs.zip")
    target = RunStore(tmp_path / "target")
    first = import_archive(target, archive)
    assert sorted(first.imported) == sorted(r.id for r in source.list()) and first.skipped == []
    second = import_archive(target, archive)
    assert second.imported == [] and sorted(second.skipped) == sorted(first.imported)
    assert len(target.list()) == 3


def test_importing_into_the_store_that_exported_skips_its_own_runs(source, tmp_path):
    archive = export_runs(source, [r.id for r in source.list()], tmp_path / "runs.zip")
    result = import_archive(source, archive)
    assert result.imported == [] and len(result.skipped) == 3 and len(source.list()) == 3


def test_a_different_run_with_a_clashing_id_is_imported_under_a_new_id(source, tmp_path):
    run = source.list()[0]
    archive = export_runs(source, [run.id], tmp_path / "one.zip")
    target = RunStore(tmp_path / "target")
    import_archive(target, archive)
    run.append_metrics({"epoch": 4, "loss": 0.1, "seconds": 2.0})  # the run changed after the first export
    changed = export_runs(source, [run.id], tmp_path / "changed.zip")
    result = import_archive(target, changed)
    assert len(result.imported) == 1 and result.imported[0] != run.id and result.skipped == []
    assert len(target.get(result.imported[0]).history()) == 4 and len(target.get(run.id).history()) == 3
    assert import_archive(target, changed).imported == []  # the renamed copy is recognised too


def test_the_content_hash_ignores_the_status_the_import_rewrites(source):
    run = source.list()[0]
    before = run_content_hash(run.path)
    run.update_status(note="rewritten")
    assert run_content_hash(run.path) == before
    (run.path / "metrics.jsonl").write_text("")
    assert run_content_hash(run.path) != before


def test_a_sweep_imported_twice_keeps_one_record_and_one_copy_of_its_runs(source, tmp_path):
    record = sweep_record(source)
    archive = export_sweep(source, record["id"], tmp_path / "sweep.zip")
    target = RunStore(tmp_path / "target")
    first = import_archive(target, archive)
    assert first.sweep_id == record["id"] and not first.sweep_skipped
    second = import_archive(target, archive)
    assert second.sweep_id == record["id"] and second.sweep_skipped and second.imported == []
    assert [r["id"] for r in list_sweeps(target)] == [record["id"]] and len(target.list()) == 3


def test_a_different_sweep_with_a_clashing_id_gets_a_new_id(source, tmp_path):
    record = sweep_record(source)
    target = RunStore(tmp_path / "target")
    import_archive(target, export_sweep(source, record["id"], tmp_path / "a.zip"))
    write_json(sweeps_dir(source) / f"{record['id']}.json", {**record, "name": "renamed study"})
    result = import_archive(target, export_sweep(source, record["id"], tmp_path / "b.zip"))
    assert result.sweep_id == f"{record['id']}-2" and not result.sweep_skipped
    assert sorted(r["name"] for r in list_sweeps(target)) == ["renamed study", "test"]
    assert result.imported == [] and len(result.skipped) == 3  # the runs themselves are the same


def test_a_refused_zip_imports_nothing(tmp_path):
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(ImportRefused, match="not a zip"):
        import_archive(RunStore(tmp_path / "target"), tmp_path / "text.zip")
    assert RunStore(tmp_path / "target").list() == []
