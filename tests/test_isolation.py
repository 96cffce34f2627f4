"""The suite's isolation (tests/conftest.py): every folder the app writes to is a temporary one, in
this process and in the processes tests start; the shared tiny run is what it claims to be."""
import json
import subprocess
import sys

import pytest

from core.data.datasets import cache_dir, uploads_dir
from core.settings.paths import PROJECT_ROOT
from core.store.runs import default_runs_dir
from tests.conftest import TINY_RUN

WRITTEN_FOLDERS = {"cache": cache_dir, "runs": default_runs_dir, "uploads": uploads_dir}


def test_the_app_writes_only_under_this_tests_folders(tmp_path, shared_cache_dir):
    folders = {name: where() for name, where in WRITTEN_FOLDERS.items()}
    assert not any(folder.is_relative_to(PROJECT_ROOT) for folder in folders.values()), folders
    assert folders == {"cache": shared_cache_dir, "runs": tmp_path / "runs", "uploads": tmp_path / "uploads"}


def test_a_process_a_test_starts_writes_where_the_test_does(tmp_path, shared_cache_dir):
    code = ("import json; from core.data.datasets import cache_dir, uploads_dir; "
            "from core.store.runs import default_runs_dir; "
            "print(json.dumps([str(cache_dir()), str(default_runs_dir()), str(uploads_dir())]))")
    printed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(printed) == [str(shared_cache_dir), str(tmp_path / "runs"), str(tmp_path / "uploads")]


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_an_empty_run_store(store, attempt):
    assert store.list() == []
    store.create({"arch": "seed_cnn"}, name=f"attempt {attempt}")  # the next attempt must not see it


def test_the_tiny_run_is_trained_once_and_a_copy_is_independent(tiny_run, tiny_run_copy, store):
    assert tiny_run.state() == "done" and tiny_run.has_model()
    assert {key: tiny_run.config()[key] for key in TINY_RUN} == TINY_RUN
    assert [run.id for run in store.list()] == [tiny_run.id]  # the copy is in this test's store
    (tiny_run_copy.path / "ood.npz").write_bytes(b"changed")  # a copy may be changed freely
    assert not (tiny_run.path / "ood.npz").exists()
