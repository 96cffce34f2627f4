"""Run store: atomic files, listing, deleting, and recovery of runs left behind by a dead process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.files import atomic_path
from core.store import runs
from core.files import write_json
from core.store.runs import RunStore


def test_default_runs_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "status.json"
    write_json(target, {"state": "running"})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"state": "do')  # half-written, then a crash
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind


def test_create_read_list_and_delete(tmp_path):
    store = RunStore(tmp_path)
    first = store.create({"arch": "seed_cnn", "name": "a"}, name="a")
    second = store.create({"arch": "mlp"}, name="b/../../evil name")
    assert second.path.parent == tmp_path and "/" not in second.id
    assert first.state() == "queued" and first.config()["arch"] == "seed_cnn"
    first.append_metrics({"epoch": 1, "loss": 0.5})
    first.append_metrics({"epoch": 2, "loss": 0.25})
    assert [row["loss"] for row in first.history()] == [0.5, 0.25]
    first.save_predictions("test", np.array([[0.2, 0.8]]), [1], ["p1"], ["f.jpeg"], ["NORMAL", "PNEUMONIA"])
    saved = first.predictions("test")
    assert saved["class_names"] == ["NORMAL", "PNEUMONIA"] and saved["files"].tolist() == ["f.jpeg"]
    assert {r.id for r in store.list()} == {first.id, second.id}
    (tmp_path / "not-a-run").mkdir()
    assert len(store.list()) == 2
    first.update_status(state="done")
    store.delete(first.id)
    assert [r.id for r in store.list()] == [second.id]
    with pytest.raises(KeyError):
        store.get("../etc")
    with pytest.raises(RuntimeError, match="cancel it"):
        store.delete(second.id)  # queued by this live process


def test_describe_gives_a_flat_row(tmp_path):
    run = RunStore(tmp_path).create({"arch": "seed_cnn", "image_size": 64, "name": "x"})
    run.write_summary({"test": {"accuracy": 0.9, "macro_f1": 0.8, "auc": 0.95}, "best_val_loss": 0.3})
    row = run.describe()
    assert row["name"] == "x" and row["test_auc"] == 0.95 and row["arch"] == "seed_cnn" and row["state"] == "queued"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def process(pid: int, host: str | None = None) -> dict:
    return {"host": host or runs.HOST, "pid": pid, "pid_start": runs.process_start(pid)}


def test_recovery_interrupts_runs_whose_processes_died_and_requeues_stale_claims(tmp_path):
    store = RunStore(tmp_path)
    gone = dead_pid()
    orphan = store.create({"arch": "seed_cnn"}, queued=False)
    orphan.update_status(state="running", trainer={"host": runs.HOST, "pid": gone}, worker=None)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive_elsewhere = store.create({"arch": "seed_cnn"}, queued=False)
        alive_elsewhere.update_status(state="running", trainer=process(sleeper.pid), worker=None)
        other_machine = store.create({"arch": "seed_cnn"}, queued=False)
        other_machine.update_status(state="running", trainer=process(gone, host="another-host"))
        stale = store.create({"arch": "seed_cnn"})
        assert store.claim(stale, f"{runs.HOST}@{gone}-")  # claimed by a worker that then died
        claimed = store.create({"arch": "seed_cnn"})
        assert store.claim(claimed, runs.worker_id())  # claimed by a live worker (this process)
        done = store.create({"arch": "seed_cnn"}, queued=False)
        done.update_status(state="done", trainer={"host": runs.HOST, "pid": gone})
        interrupted = store.recover()
    finally:
        sleeper.kill()
    assert interrupted == [orphan.id]
    assert orphan.state() == "interrupted" and "stopped" in orphan.status()["error"]
    assert alive_elsewhere.state() == other_machine.state() == "running" and done.state() == "done"
    assert [run.id for run in store.queued()] == [stale.id]  # back in the queue; `claimed` stays taken
    assert not store.claim(claimed, "someone-else")


def test_a_reused_pid_does_not_pass_for_the_dead_trainer(tmp_path):
    # After a restart a new process may get the old pid; its start time tells them apart.
    run = RunStore(tmp_path).create({"arch": "seed_cnn"}, queued=False)
    run.update_status(state="running", trainer={"host": runs.HOST, "pid": os.getpid(), "pid_start": "1"})
    assert RunStore(tmp_path).recover() == [run.id]


def test_the_queue_is_first_come_first_served_and_a_claim_succeeds_once(tmp_path):
    store = RunStore(tmp_path)
    first, second = store.create({"arch": "a"}), store.create({"arch": "b"})
    assert [run.id for run in store.queued()] == [first.id, second.id]
    assert store.claim(first, "worker-1") and not store.claim(first, "worker-2")
    assert [run.id for run in store.queued()] == [second.id]
    assert store.request_stop(second, "a-dashboard") and second.state() == "cancelled"
    assert store.queued() == [] and not store.request_stop(second, "a-dashboard")


def test_json_files_take_numpy_values_and_paths_and_store_nan_as_null(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"n": np.int64(3), "auc": np.float32(0.5), "curve": np.array([0.25, np.nan]),
                        "loss": float("inf"), "ok": np.bool_(True), "path": tmp_path, 7: (1, 2)})
    assert json.loads(target.read_text()) == {"n": 3, "auc": 0.5, "curve": [0.25, None], "loss": None,
                                              "ok": True, "path": str(tmp_path), "7": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(target, {"what": object()})


def test_a_run_id_is_a_safe_folder_name(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"name": "x"}, queued=False)
    assert store.get(run.id).path == run.path
    for bad in ("", "../x", ".hidden", "a/b", f"{run.id}\n", "x" * 122):
        with pytest.raises(KeyError, match="invalid run id"):
            store.get(bad)
