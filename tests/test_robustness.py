"""Numbers and processes a user can trust: why a training process died (memory or not), what it
printed last, the wall time of a resumed run, a queue that survives a broken run folder, status
writes from several processes, deletes and imports no reader sees half of, zip bombs in datasets,
class names in HTML, and uploads that `make clean` leaves alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import files
from core.data import datasets, layout, sources
from core.data.archives import DATASET_ZIP, ZipLimits
from core.store import portable
from core.store.portable import ImportRefused, export_runs, import_archive
from core.files import write_json
from core.store.run_folder import Run, segment_time
from core.store.runs import RunStore
from core.workers import oom
from core.workers.manager import JobManager, exit_reason
from tests.conftest import tiny_folder_config, wait_until

PROJECT = Path(__file__).resolve().parents[1]
# What TensorFlow 2.21 prints at every start on a CPU machine (captured from a real process).
TF_BANNER = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796394191.604026    9913 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders.
I0000 00:00:1796394191.604357    9913 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796394191.663630    9913 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796394196.279965    9913 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


# ----------------------------------------------------------------------------- why a process died

def test_sigkill_says_out_of_memory_only_when_memory_explains_it():
    plain = exit_reason(-signal.SIGKILL, memory="peak 954 MB, 22,000 MB available")
    assert plain == ("killed by SIGKILL (by another process or the user; memory was not short: "
                     "peak 954 MB, 22,000 MB available)")
    assert "out of memory" not in exit_reason(-signal.SIGKILL)
    oom_said = exit_reason(-signal.SIGKILL, oom="the kernel's out-of-memory killer acted while it ran")
    assert oom_said.startswith("killed by SIGKILL, most likely out of memory (the kernel's out-of-memory killer")
    assert "smaller batch size" in oom_said


def test_memory_is_blamed_when_the_peak_came_close_to_what_was_available():
    room = oom.available_mb()
    assert room and room > 100  # Linux: /proc/meminfo (and any cgroup limit) are read
    watch = oom.OomWatch.start()
    assert watch.verdict(peak_mb=100) is None  # nothing was killed for memory while this test ran
    assert "came close to the" in watch.verdict(peak_mb=room * 0.95)


def fake_kernel(root: Path, version: int, oom_kills: int, limit: int | None = None, used: int = 0) -> None:
    """A /proc and /sys/fs/cgroup of a container in cgroup `version` (1 or 2) with its counters."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "vmstat").write_text("pgfault 10\noom_kill 7\n")
    (root / "proc" / "meminfo").write_text("MemTotal:       32000000 kB\nMemAvailable:   20971520 kB\n")
    if version == 1:
        (root / "proc" / "self" / "cgroup").write_text("4:memory:/docker/abc\n0::/\n")
        group = root / "cgroup" / "memory" / "docker" / "abc"
        group.mkdir(parents=True)
        (group / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kills}\n")
        (group / "memory.limit_in_bytes").write_text(f"{limit or 9223372036854771712}\n")
        (group / "memory.usage_in_bytes").write_text(f"{used}\n")
    else:
        (root / "proc" / "self" / "cgroup").write_text("0::/docker/abc\n")
        (root / "cgroup" / "cgroup.controllers").parent.mkdir(parents=True)
        (root / "cgroup" / "cgroup.controllers").write_text("cpu memory\n")
        group = root / "cgroup" / "docker" / "abc"
        group.mkdir(parents=True)
        (group / "memory.events").write_text(f"low 0\nhigh 0\nmax 2\noom 1\noom_kill {oom_kills}\noom_group_kill 0\n")
        (group / "memory.max").write_text(f"{limit}\n" if limit else "max\n")
        (group / "memory.current").write_text(f"{used}\n")


@pytest.mark.parametrize("version", [1, 2])
def test_the_kernels_oom_kill_counters_and_cgroup_limits_are_read(tmp_path, monkeypatch, version):
    fake_kernel(tmp_path, version, oom_kills=3, limit=2 * 2**30, used=2**30)
    monkeypatch.setattr(oom, "PROC", tmp_path / "proc")
    monkeypatch.setattr(oom, "CGROUP_ROOT", tmp_path / "cgroup")
    assert oom.oom_kill_count() == 7 + 3  # the machine's and the container's
    assert oom.available_mb() == 1024  # the container's limit leaves less than the machine's 20 GB
    group = oom.memory_cgroups()[0]
    watch = oom.OomWatch.start()
    counters = group / ("memory.oom_control" if version == 1 else "memory.events")
    counters.write_text(counters.read_text().replace("oom_kill 3", "oom_kill 4"))  # the container killed one
    assert watch.verdict(peak_mb=50) == "the kernel's out-of-memory killer acted while it ran"


def test_tensorflows_start_up_noise_is_left_out_of_the_last_lines_shown(store):
    run = store.create({"arch": "seed_cnn"})
    run.stderr_path.write_text(TF_BANNER + "Epoch 2/5\nResourceExhaustedError: allocating 4.1 GiB\n" + TF_BANNER)
    assert run.stderr_tail() == "Epoch 2/5\nResourceExhaustedError: allocating 4.1 GiB"
    run.stderr_path.write_text(TF_BANNER)
    assert run.stderr_tail() == ""


# ----------------------------------------------------------------------------- resume and wall time

def test_a_run_that_completed_epoch_1_resumes_from_epoch_2(make_run):
    from core.present import runs as present_runs
    from core.present import train_view
    run = make_run("interrupted")
    write_json(run.checkpoint_dir / "state.json", {"epoch": 1, "phase": "train"})
    assert (run.checkpoint_epoch(), run.resume_epoch()) == (1, 2)
    RunStore(run.path.parent).requeue(run, resume=True)
    label, _ = present_runs.queue_entry(run, {"state": "queued"}, stopping=False)
    assert label.endswith("queued (to resume from epoch 2)")
    assert train_view.queue_state_text("queued", True, run.resume_epoch()) == "queued to resume from epoch 2"


def test_wall_time_adds_up_the_training_segments_not_the_gaps_between_them():
    first = segment_time({"state": "queued"}, {"state": "running"}, now=1000.0)
    assert first == {"segment_started": 1000.0}
    ended = segment_time({"state": "running", **first}, {"state": "interrupted"}, now=1060.0)
    assert ended == {"trained_s": 60.0, "segment_started": None}
    resumed = segment_time({"state": "queued", **ended}, {"state": "running"}, now=5000.0)  # an hour later
    done = segment_time({"state": "running", **ended, **resumed}, {"state": "done"}, now=5030.0)
    assert done["trained_s"] == 90.0
    # A process found dead later ended when it was last seen (`finished`), not when it was found.
    found = segment_time({"state": "running", "segment_started": 1000.0}, {"state": "interrupted",
                                                                           "finished": 1010.0}, now=9000.0)
    assert found["trained_s"] == 10.0
    # The training process says when its own work began (the worker's hand-over came just before).
    assert segment_time({"state": "queued"}, {"state": "running", "segment_started": 990.0}, now=1000.0) == \
        {"segment_started": 990.0}


@pytest.mark.slow
def test_a_resumed_runs_wall_time_counts_its_first_segment(store, chest_folder):
    from core.ml.training import execute_run
    config = tiny_folder_config(chest_folder, epochs=2)
    run = store.create(config.to_dict(), queued=False)
    execute_run(run, config.with_overrides({"epochs": 1}))
    first_segment = run.status()["trained_s"]
    assert first_segment > 0 and run.checkpoint_epoch() == 1
    run.update_status(state="interrupted")
    time.sleep(2.0)  # the gap between the segments is no training
    execute_run(run, config, resume=True)
    assert run.state() == "done", run.status().get("error")
    wall_s, trained_s = run.summary()["resources"]["wall_s"], run.status()["trained_s"]
    assert first_segment < wall_s <= trained_s < wall_s + 2.0
    assert run.describe()["duration_s"] == pytest.approx(trained_s, abs=0.1)
    assert trained_s < run.status()["finished"] - run.status()["started"] - 2.0


# ----------------------------------------------------------------------------- a queue that goes on

@pytest.fixture
def slot_manager(store):
    """A job manager of its own (no spare process), shut down after the test."""
    manager = JobManager(store, max_concurrent=1, spare=False)
    yield manager
    manager.shutdown()


def queued_with_bad_config(store: RunStore, name: str) -> Run:
    """A queued run whose config fails validation: a slot fails it without starting a process."""
    return store.create({"arch": "no-such-architecture"}, name=name)


@pytest.mark.parametrize("bad_status", [b"\xff\xfe{not json", b"[1, 2]"])
def test_a_corrupt_status_fails_its_run_and_the_slot_goes_on(store, bad_status, caplog):
    corrupt = store.create({"arch": "seed_cnn"}, name="corrupt")
    corrupt.status_path.write_bytes(bad_status)
    manager = JobManager(store, max_concurrent=1, spare=False)
    try:
        wait_until(lambda: corrupt.status().get("state") == "failed" and not corrupt.status().get("unreadable"),
                   30, "the corrupt run to be failed")
        assert "status.json is unreadable" in corrupt.status()["error"]
        after = queued_with_bad_config(store, "after")
        wait_until(lambda: after.state() == "failed", 30, "the next run to be taken")
        assert "bad config" in after.status()["error"]
        assert all(slot.is_alive() for slot in manager._slots)
        assert "status.json is unreadable" in caplog.text
    finally:
        manager.shutdown()


def test_an_error_while_claiming_fails_that_run_and_the_queue_goes_on(store, monkeypatch, caplog):
    broken = queued_with_bad_config(store, "broken")
    real_claim = RunStore.claim

    def claim(self, run, worker_id):
        if run.id == broken.id:
            raise PermissionError(13, "Permission denied", str(run.queued_marker))
        return real_claim(self, run, worker_id)

    monkeypatch.setattr(RunStore, "claim", claim)  # the one fault a root test user cannot cause for real
    manager = JobManager(store, max_concurrent=1, spare=False)
    try:
        wait_until(lambda: broken.state() == "failed", 30, "the unclaimable run to be failed")
        assert "a worker could not claim this run: PermissionError" in broken.status()["error"]
        after = queued_with_bad_config(store, "after")
        wait_until(lambda: after.state() == "failed", 30, "the next run to be taken")
        assert all(slot.is_alive() for slot in manager._slots)
        assert "could not be claimed" in caplog.text
    finally:
        manager.shutdown()


# ----------------------------------------------------------------------------- several writers

UPDATER = """
import sys
from pathlib import Path
from core.store.runs import Run
run, key = Run(Path(sys.argv[1])), sys.argv[2]
for value in range(int(sys.argv[3])):
    run.update_status(**{key: value})
"""


@pytest.mark.slow
def test_status_updates_from_several_processes_lose_nothing(store):
    run = store.create({"arch": "seed_cnn"}, queued=False)
    writers = [subprocess.Popen([sys.executable, "-c", UPDATER, str(run.path), f"writer_{i}", "150"], cwd=PROJECT)
               for i in range(4)]
    assert [writer.wait(120) for writer in writers] == [0] * 4
    status = run.status()
    assert [status.get(f"writer_{i}") for i in range(4)] == [149] * 4
    assert status["state"] == "queued"


def test_a_file_is_flushed_to_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                      real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (events.append(("replace", str(src))),
                                                               real_replace(src, dst))[1])
    write_json(tmp_path / "status.json", {"state": "done"})
    (_, synced), (_, replaced) = events
    assert [kind for kind, _ in events] == ["fsync", "replace"] and synced == replaced
    assert json.loads((tmp_path / "status.json").read_text()) == {"state": "done"}


def test_a_delete_cut_short_leaves_no_half_run_in_the_store(make_run, store, monkeypatch):
    run = make_run("done")
    import core.store.runs as runs_module

    def crash(path, *args, **kwargs):
        (Path(path) / "model.keras").unlink(missing_ok=True)  # part of it removed, then the process dies
        raise OSError("the process died while deleting")

    monkeypatch.setattr(runs_module.shutil, "rmtree", crash)
    with pytest.raises(OSError):
        store.delete(run.id)
    monkeypatch.undo()
    assert run.id not in [r.id for r in store.list()]
    with pytest.raises(KeyError):
        store.get(run.id)
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".deleting-")]
    store.recover()  # whoever starts next finishes the delete
    assert not [p.name for p in store.root.iterdir() if p.name.startswith(".deleting-")]


def test_an_imported_run_has_its_status_before_it_appears_in_the_store(make_run, store, tmp_path, monkeypatch):
    source = make_run("running")
    archive = export_runs(store, [source.id], tmp_path / "export.zip")
    target = RunStore(tmp_path / "other")
    seen, real_rename = [], os.rename

    def rename(src, dst):
        if Path(dst).parent == target.root:
            seen.append(Run(Path(src)).status())
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    imported = import_archive(target, archive).imported
    assert len(seen) == 1 and seen[0]["imported_from"] == source.id and seen[0]["state"] == "interrupted"
    assert target.get(imported[0]).status()["content_hash"]


# ----------------------------------------------------------------------------- zips from outside

def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_dataset_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path, chest_folder):
    images = {p.relative_to(chest_folder).as_posix(): p.read_bytes() for p in chest_folder.rglob("*.jpeg")}
    bomb = zip_of(tmp_path / "bomb.zip", {**images, "NORMAL/huge.png": b"\0" * (50 * 2**20)})
    with pytest.raises(datasets.DataError, match="bomb.zip is refused: NORMAL/huge.png: compressed .*zip bomb"):
        datasets.load_dataset("zip", bomb, "binary", 32, use_cache=False)


def test_a_dataset_zip_over_the_member_count_or_size_is_refused(tmp_path, chest_folder, monkeypatch):
    images = {p.relative_to(chest_folder).as_posix(): p.read_bytes() for p in chest_folder.rglob("*.jpeg")}
    fine = zip_of(tmp_path / "fine.zip", images)
    assert len(datasets.load_dataset("zip", fine, "binary", 32, use_cache=False)) == len(images)
    monkeypatch.setattr(sources, "DATASET_ZIP", ZipLimits(member_bytes=DATASET_ZIP.member_bytes,
                                                           total_bytes=DATASET_ZIP.total_bytes, members=10))
    with pytest.raises(datasets.DataError, match=f"holds {len(images)} files, more than the limit of 10"):
        datasets.load_dataset("zip", fine, "binary", 32, use_cache=False)
    monkeypatch.setattr(sources, "DATASET_ZIP", ZipLimits(member_bytes=100, total_bytes=2**30, members=10**6))
    with pytest.raises(datasets.DataError, match="is larger than the limit"):
        datasets.load_dataset("zip", fine, "binary", 32, use_cache=False)


def test_an_npz_bomb_is_refused_before_its_arrays_load(tmp_path):
    np.savez_compressed(tmp_path / "bomb.npz", images=np.zeros((800, 256, 256), np.uint8), labels=np.zeros(800))
    with pytest.raises(datasets.DataError, match="zip bomb"):
        datasets.load_dataset("npz", tmp_path / "bomb.npz", "classes", 32, use_cache=False)


def test_run_imports_and_datasets_share_one_guard(tmp_path):
    bomb = zip_of(tmp_path / "bomb.zip", {"manifest.json": b'{"format": "cxrlab-runs", "runs": ["r1"]}',
                                          "r1/config.json": b"{}", "r1/metrics.jsonl": b"\0" * (50 * 2**20)})
    with pytest.raises(ImportRefused, match="r1/metrics.jsonl: compressed .*zip bomb"):
        import_archive(RunStore(tmp_path / "runs"), bomb)
    assert portable.check_zip is sources.check_zip


@pytest.mark.slow
def test_class_names_are_shown_as_text_on_the_dataset_page(app_env, tmp_path):
    from tests.apptest_support import assert_clean, open_page
    from tests.synthetic import make_medmnist_npz
    path = make_medmnist_npz(tmp_path / "names.npz", classes=2)
    with np.load(path) as saved:
        arrays = dict(saved)
    np.savez(path, **arrays, class_names=np.array(["<img src=x onerror=alert(1)>", "B&B"]))
    at = open_page("pages/dataset.py")
    at.radio(key="ds_source").set_value("npz").run()
    at.text_input(key="ds_path_npz").set_value(str(path)).run()
    at.button(key="ds_apply_button").click().run()
    assert_clean(at)
    shown = "\n".join(m.value for m in at.markdown)
    assert "■ &lt;img src=x onerror=alert(1)&gt;</span>" in shown and "■ B&amp;B</span>" in shown
    assert "<img" not in shown


# ----------------------------------------------------------------------------- uploads outlive make clean

def test_uploads_are_kept_outside_the_folder_make_clean_removes(monkeypatch):
    monkeypatch.delenv("CXR_UPLOADS_DIR")
    assert datasets.uploads_dir() == PROJECT / "data" / "uploads"
    assert not datasets.uploads_dir().is_relative_to(PROJECT / ".cache")
    makefile = (PROJECT / "Makefile").read_text()
    clean = makefile[makefile.index("\nclean:"):].split("\n\n")[0]
    assert "rm -rf $(VENV) .cache" in clean and "mv -n {} data/uploads/" in clean
    assert subprocess.run(["git", "check-ignore", "-q", "data/uploads/x.zip"], cwd=PROJECT).returncode == 0


def test_a_run_naming_an_old_upload_path_finds_it_in_the_uploads_folder(tmp_path, monkeypatch):
    legacy, uploads = tmp_path / "project" / ".cache" / "uploads", tmp_path / "uploads"
    monkeypatch.setattr(layout, "LEGACY_UPLOADS_DIR", legacy)
    old_path = legacy / "0123456789abcdef0123.npz"  # what a run's config says
    with pytest.raises(datasets.DataError, match="Upload the same file again"):
        sources.resolve_source_path("npz", old_path)
    from tests.synthetic import make_medmnist_npz
    uploads.mkdir()
    make_medmnist_npz(uploads / old_path.name)  # uploaded again (or moved over by `make clean`)
    assert sources.resolve_source_path("npz", old_path) == uploads / old_path.name
    legacy.mkdir(parents=True)
    make_medmnist_npz(old_path)  # still in the old place: read from there
    assert sources.resolve_source_path("npz", old_path) == old_path
