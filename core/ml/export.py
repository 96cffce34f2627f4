"""Exports of a run's model.keras for serving: a TensorFlow SavedModel (run.saved_model_dir) and a
float32 TFLite model (run.tflite_path), each written atomically beside model.keras, and a check
that both give the probabilities model.keras gives (`export_agreement`).

The exports take raw 0-255 float32 pixels (N, size, size, channels), input "pixels", and give the
softmax probabilities, uncalibrated, like model.keras. They hold the inference graph only: the
model is traced with training=False, so its augmentation layers and dropout do nothing.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from core.files import atomic_path, locked
from core.ml.inference import load_model
from core.progress import ProgressFn
from core.store.run_folder import ACTIVE_STATES, Run

SERVING_ENDPOINT = "serve"
EXPORT_LOCK = ".export.lock"


class ExportError(RuntimeError):
    """A model that could not be exported or converted."""


# ----------------------------------------------------------------------------- checks

def check_exportable(run: Run) -> None:
    """Raise a clear error for a run that has no finished model to export."""
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run.path} is not a run folder (no config.json)")
    if run.state() in ACTIVE_STATES:
        raise RuntimeError(f"run {run.id} is still {run.state()}: export it once it has finished")
    if not run.has_model():
        raise FileNotFoundError(f"run {run.id} has no model.keras to export (state: {run.state()})")


# ----------------------------------------------------------------------------- writing

def export_saved_model(run: Run, model=None) -> Path:
    """model.keras as a SavedModel in run.saved_model_dir (signature "serve"), built in a temp
    folder beside it and renamed into place, so a reader never sees half an export."""
    check_exportable(run)
    model = model if model is not None else load_model(run)
    building = Path(tempfile.mkdtemp(prefix=".saved_model.", suffix=".tmp", dir=run.path))
    try:
        inference_archive(model).write_out(str(building), verbose=False)
        replace_folder(building, run.saved_model_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return run.saved_model_dir


def inference_archive(model):
    """The model's inference forward pass as a SavedModel endpoint "serve". Not `model.export`: it
    traces the model without training=False, and Keras's random augmentation layers default to
    training=True, so the export would augment every image (and TFLite cannot convert it)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_ENDPOINT, lambda pixels: model(pixels, training=False),
                         input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]),
                                                          dtype="float32", name="pixels")])
    return archive


def replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` at `target`: the old one is renamed aside first, then removed."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_tflite(run: Run) -> Path:
    """The SavedModel (exported first if missing) converted to a float32 TFLite model at
    run.tflite_path."""
    import tensorflow as tf

    check_exportable(run)
    if not (run.saved_model_dir / "saved_model.pb").exists():
        export_saved_model(run)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(run.saved_model_dir))
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds: say which run and why
        raise ExportError(f"run {run.id}: TFLite conversion failed: {str(exc).strip()[:600]}") from exc
    with atomic_path(run.tflite_path) as tmp:
        tmp.write_bytes(flatbuffer)
    return run.tflite_path


def export_run(run: Run, progress: ProgressFn | None = None) -> dict:
    """Both exports; `progress(done, total, message)` (core/progress.py) hears of each step. Returns
    paths and sizes."""
    report = progress or (lambda done, total, message: None)
    check_exportable(run)
    report(0.0, 1.0, "Loading model.keras")
    model = load_model(run)
    # Two exports of one run (two tabs, the CLI beside the page) would swap folders under each other.
    with locked(run.path / EXPORT_LOCK):
        report(0.2, 1.0, "Exporting the SavedModel")
        export_saved_model(run, model)
        report(0.6, 1.0, "Converting to TFLite")
        export_tflite(run)
    report(1.0, 1.0, "Exported")
    return exported_files(run)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def exported_files(run: Run) -> dict:
    """What exists of the exports: paths and sizes in bytes (None where not exported)."""
    saved = run.saved_model_dir if (run.saved_model_dir / "saved_model.pb").exists() else None
    tflite = run.tflite_path if run.tflite_path.exists() else None
    return {"keras": str(run.model_path), "keras_bytes": run.model_path.stat().st_size if run.has_model() else None,
            "saved_model": str(saved) if saved else None, "saved_model_bytes": folder_size(saved) if saved else None,
            "tflite": str(tflite) if tflite else None, "tflite_bytes": tflite.stat().st_size if tflite else None}


# ----------------------------------------------------------------------------- reading the exports back

def saved_model_probabilities(run: Run, images: np.ndarray) -> np.ndarray:
    """Probabilities from the SavedModel's serving signature, as a server would get them."""
    import tensorflow as tf

    with locked(run.path / EXPORT_LOCK, shared=True):  # not while an export swaps the folder mid-read
        loaded = tf.saved_model.load(str(run.saved_model_dir))
    serve = loaded.signatures.get("serving_default") or getattr(loaded, SERVING_ENDPOINT)
    output = serve(tf.constant(np.asarray(images, dtype=np.float32)))
    if isinstance(output, dict):  # a signature returns {output name: tensor}
        (output,) = output.values()
    return np.asarray(output, dtype=np.float32)


def tflite_probabilities(run: Run, images: np.ndarray) -> np.ndarray:
    """Probabilities from the TFLite model through the TFLite interpreter, one image at a time."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that it moves to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(run.tflite_path))
    interpreter.allocate_tensors()
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in np.asarray(images, dtype=np.float32):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(result["index"])[0].copy())
    return np.asarray(rows, dtype=np.float32)


def export_agreement(run: Run, images: np.ndarray, model=None) -> dict:
    """Largest absolute difference of the SavedModel's and the TFLite model's probabilities from
    model.keras's on `images` (raw 0-255 pixels)."""
    model = model if model is not None else load_model(run)
    images = np.asarray(images, dtype=np.float32)
    reference = np.asarray(model.predict(images, verbose=0), dtype=np.float32)
    return {"images": len(images),
            "saved_model_max_abs_diff": float(np.abs(saved_model_probabilities(run, images) - reference).max()),
            "tflite_max_abs_diff": float(np.abs(tflite_probabilities(run, images) - reference).max())}


def sample_test_images(run: Run, count: int = 8) -> np.ndarray:
    """The first `count` images of the run's test split, decoded as the run saw them."""
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig

    dataset, split = load_data(TrainConfig.from_dict(run.config()))
    return np.asarray(dataset.images[split.test[:count]], dtype=np.float32)


def saved_model_zip(run: Run) -> bytes:
    """The SavedModel folder as a zip (saved_model/...), for a download."""
    buffer = io.BytesIO()
    with locked(run.path / EXPORT_LOCK, shared=True):  # one export's files, not half of two
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(run.saved_model_dir.rglob("*")):
                if path.is_file():
                    archive.write(path, Path("saved_model") / path.relative_to(run.saved_model_dir))
    return buffer.getvalue()
