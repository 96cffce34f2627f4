"""Datasets larger than memory: the memory-mapped decoded cache, cancellable loads, and training
streamed from the cache (TrainConfig.data_pipeline = "disk") with the same batches and metrics as
the in-memory pipeline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from core.data.datasets import LoadCancelled, load_dataset
from core.data.sources import DECODE_CHUNK
from core.settings.config import TrainConfig
from core.store.runs import RunStore
from tests.conftest import PROJECT

TIMING_KEYS = ("seconds", "images_per_sec")


def write_patient_folder(root, n_images: int, size: int = 48) -> None:
    """A chest-layout folder with one image per patient (so the smallest fractions still split)."""
    for i in range(n_images):
        sick = i % 2
        folder = root / ("PNEUMONIA" if sick else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"person{i}_bacteria_{i}.jpeg" if sick else f"IM-{i:05d}-0001.jpeg"
        value = (200 if sick else 60) + i % 7  # a little variation, so rows differ
        Image.new("RGB", (size, size), (value, value // 2, value)).save(folder / name, "JPEG")


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ----------------------------------------------------------------------------- the cache

def test_the_cache_is_a_read_only_memory_map_that_a_second_load_maps_again(tmp_path, private_cache):
    write_patient_folder(tmp_path / "xrays", 40)
    decoded = []
    first = load_dataset("folder", tmp_path / "xrays", image_size=32, progress=lambda d, t, m: decoded.append(d))
    again = load_dataset("folder", tmp_path / "xrays", image_size=32,
                         progress=lambda d, t, m: pytest.fail("a cached load decodes nothing"))
    assert decoded[-1] == 40 and again.report.from_cache and not first.report.from_cache
    for ds in (first, again):
        assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            ds.images[0, 0, 0, 0] = 1
    # Both map the one file (the page cache is shared); no private copy was made.
    assert str(again.images.filename) == str(first.images.filename) == again.image_file
    assert files_in(private_cache) == sorted(os.path.basename(f) for f in
                                             (first.image_file, first.image_file[:-4] + ".meta.npz"))
    rows = np.array([39, 0, 7, 7, 12])
    np.testing.assert_array_equal(again.read_images(rows), np.asarray(first.images)[rows])


def test_cancelling_a_load_leaves_no_cache_file_and_says_so(tmp_path, private_cache):
    write_patient_folder(tmp_path / "xrays", DECODE_CHUNK * 2 + 10)
    cancel = threading.Event()
    seen = []

    def progress(done, total, message):
        seen.append((done, total))
        if total and done >= DECODE_CHUNK:
            cancel.set()  # as a Cancel button would, while decoding goes on

    with pytest.raises(LoadCancelled, match="cancelled; nothing was cached"):
        load_dataset("folder", tmp_path / "xrays", image_size=32, progress=progress, cancel=cancel)
    assert seen[-1] == (DECODE_CHUNK, DECODE_CHUNK * 2 + 10)  # stopped at the next chunk
    assert files_in(private_cache) == []  # not even a temp file
    ds = load_dataset("folder", tmp_path / "xrays", image_size=32)
    assert len(ds) == DECODE_CHUNK * 2 + 10 and not ds.report.from_cache


class ScriptStopped(BaseException):
    """What Streamlit raises inside a page's progress callback when the user presses Stop or a button."""


def test_a_load_interrupted_from_its_progress_callback_leaves_no_temp_file(tmp_path, private_cache):
    write_patient_folder(tmp_path / "xrays", DECODE_CHUNK + 10)

    def progress(done, total, message):
        if total:
            raise ScriptStopped()

    with pytest.raises(ScriptStopped):
        load_dataset("folder", tmp_path / "xrays", image_size=32, progress=progress)
    assert files_in(private_cache) == []


def test_a_zip_is_decoded_member_by_member_and_cached(tmp_path, private_cache):
    import zipfile
    write_patient_folder(tmp_path / "xrays", 30)
    archive = tmp_path / "xrays.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in (tmp_path / "xrays").rglob("*.jpeg"):
            zipped.write(path, path.relative_to(tmp_path).as_posix())
    from_zip = load_dataset("zip", archive, image_size=32)
    from_folder = load_dataset("folder", tmp_path / "xrays", image_size=32)
    order = np.argsort(from_zip.files)
    np.testing.assert_array_equal(np.asarray(from_zip.images)[order],
                                  np.asarray(from_folder.images)[np.argsort(from_folder.files)])
    assert load_dataset("zip", archive, image_size=32).report.from_cache


# ----------------------------------------------------------------------------- streaming

def test_streamed_batches_are_the_in_memory_batches(chest_folder):
    import keras

    from core.ml.data_pipeline import make_streamed_dataset, make_tf_dataset
    ds = load_dataset("folder", chest_folder, image_size=32)
    rows = np.arange(len(ds))[::-1][:27]  # not in file order, and a last batch that is not full

    def epochs(make):
        keras.utils.set_random_seed(5)
        batches = make()
        return [[(x.numpy(), y.numpy()) for x, y in batches] for _ in range(2)]  # reshuffled per epoch

    in_memory = epochs(lambda: make_tf_dataset(ds.images[rows], ds.labels[rows], 2, 8, True, 5))
    streamed = epochs(lambda: make_streamed_dataset(ds, rows, 2, 8, True, 5))
    assert [len(e) for e in streamed] == [4, 4]
    assert not np.array_equal(in_memory[0][0][0], in_memory[1][0][0])  # the shuffle did reshuffle
    for memory_epoch, streamed_epoch in zip(in_memory, streamed):
        for (x_m, y_m), (x_s, y_s) in zip(memory_epoch, streamed_epoch):
            np.testing.assert_array_equal(x_m, x_s)
            np.testing.assert_array_equal(y_m, y_s)


def test_auto_streams_from_disk_only_when_the_images_would_fill_a_quarter_of_memory(chest_folder, monkeypatch):
    from core.ml import data_pipeline
    ds = load_dataset("folder", chest_folder, image_size=32)
    assert data_pipeline.choose_data_pipeline(TrainConfig(data_pipeline="auto"), ds) == "memory"
    monkeypatch.setattr(data_pipeline, "machine_memory_bytes", lambda: ds.images.nbytes * 4 - 1)
    assert data_pipeline.choose_data_pipeline(TrainConfig(data_pipeline="auto"), ds) == "disk"
    assert data_pipeline.choose_data_pipeline(TrainConfig(data_pipeline="memory"), ds) == "memory"


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


@pytest.mark.slow  # trains twice on the built-in set
def test_the_disk_pipeline_gives_the_same_metrics_as_the_memory_pipeline(tmp_path):
    from core.ml.training import execute_run
    store, results = RunStore(tmp_path / "runs"), {}
    for pipeline in ("memory", "disk"):
        config = TrainConfig(name=pipeline, arch="seed_cnn", image_size=32, epochs=2, batch_size=32,
                             train_fraction=0.3, data_pipeline=pipeline, seed=3)
        run = store.create(config.to_dict(), name=pipeline)
        summary = execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
        assert summary["data_pipeline"] == pipeline and run.environment()["data_pipeline"] == pipeline
        results[pipeline] = (summary, run.history())
    (memory, memory_history), (disk, disk_history) = results["memory"], results["disk"]
    assert without_timings(disk_history) == without_timings(memory_history)
    assert disk["val"] == memory["val"] and disk["test"] == memory["test"]
    assert disk["threshold"] == memory["threshold"]


# ----------------------------------------------------------------------------- memory

TRAIN_IN_CHILD = """
import json, sys
from core.ml.training import execute_run
from core.settings.config import TrainConfig
from core.store.runs import RunStore
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
run = RunStore(sys.argv[2]).create(config.to_dict(), name=config.name)
execute_run(run, config)
assert run.state() == "done", run.status().get("error")
"""


def peak_rss_of_training(config: TrainConfig, runs_dir) -> int:
    """Peak resident memory (bytes) of a fresh process that trains `config`."""
    child = subprocess.Popen([sys.executable, "-c", TRAIN_IN_CHILD, json.dumps(config.to_dict()), str(runs_dir)],
                             cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, "the training process failed"
    return usage.ru_maxrss * 1024


@pytest.mark.slow  # decodes 2,000 images at 224 px and trains twice in processes of their own
def test_a_streamed_training_process_does_not_grow_with_the_dataset(tmp_path, private_cache):
    # The same work on both (about 90 training and 40 validation and test images, batches of 2 so that
    # the model's own tensors vary little): only the size of the dataset behind it differs, 4x.
    sizes = {"small": (500, 0.2, 0.08), "large": (2000, 0.05, 0.02)}
    peaks, decoded = {}, {}
    for name, (n_images, train_fraction, held_out) in sizes.items():
        write_patient_folder(tmp_path / name, n_images, size=224)
        config = TrainConfig(name=name, arch="seed_cnn", data_source="folder", data_path=str(tmp_path / name),
                             image_size=224, color_mode="rgb", epochs=1, batch_size=2,
                             train_fraction=train_fraction, val_fraction=held_out, test_fraction=held_out,
                             data_pipeline="disk")
        decoded[name] = load_dataset("folder", tmp_path / name, image_size=224, channels=3).images.nbytes
        # The least of two: a process's peak varies upward by tens of MB from run to run (seen 1.32 to
        # 1.35 GB for one config at batch 2, 1.66 to 1.77 GB at batch 16), with the cores shared more.
        peaks[name] = min(peak_rss_of_training(config, tmp_path / "runs") for _ in range(2))
    growth = decoded["large"] - decoded["small"]  # 1,500 images of 224x224x3: 226 MB
    assert peaks["large"] - peaks["small"] < 0.1 * growth, (peaks, growth)


# ----------------------------------------------------------------------------- the Dataset page

def test_a_cancelled_load_is_reported_and_starts_again_only_when_asked(app_env):
    from tests.apptest_support import assert_clean, open_page, texts
    from tests.test_app_pages import small_dataset
    from ui import common
    session = small_dataset()
    settings = session["dataset_settings"]
    args = common.dataset_args({**settings, "image_size": 32})  # as the page names the load
    at = open_page("pages/dataset.py", {**session, "dataset_load_cancelled": args})
    assert_clean(at)
    assert "loading was cancelled. Nothing was lost" in texts(at) and not at.success
    at.button(key="ds_load_again_button").click().run()
    assert_clean(at)
    assert "Ready to train on" in at.success[0].value and "cancelled" not in texts(at)
