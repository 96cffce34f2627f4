"""Portable runs: export runs (or a sweep) as one zip, import such a zip into another run store.

The import trusts nothing in the zip: every member must be a known run file under a run folder,
with a safe relative name and a bounded size; JSON must parse, arrays load without pickle, and
models load with Keras safe mode before anything enters the store.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.archives import RUN_EXPORT, UnsafeArchive, check_zip
from core.files import atomic_path
from core.files import read_json, write_json
from core.store.run_folder import Run
from core.store.runs import RUN_ID, RunStore

FORMAT = "cxrlab-runs"
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "summary.json", "environment.json", "model.keras",
             "predictions_val.npz", "predictions_test.npz", "ood.npz", "halving.json",
             "layers.json", "annotations.json", "batches.json", "model_card.md")
LIMITS = RUN_EXPORT  # member size, total, count, compression ratio: core.data.archives
_EVENT_FILE = re.compile(r"^tensorboard/(train|validation)/events\.out\.tfevents\.[\w.-]+$")
_EXTERNAL_FILE = re.compile(r"^external/[A-Za-z0-9][\w.-]{0,120}\.json$")  # external validation results
MAX_MODEL_CARD_CHARS = 1_000_000


class ImportRefused(ValueError):
    """The zip is not a CXR Lab export, or contains something unsafe; nothing was imported."""


# ----------------------------------------------------------------------------- export

def export_runs(store: RunStore, run_ids: list[str], destination: str | Path, sweep: dict | None = None) -> Path:
    """Write the runs' files (config, metrics, predictions, model, TensorBoard events) to a zip."""
    destination = Path(destination)
    runs = [store.get(run_id) for run_id in run_ids]
    manifest = {"format": FORMAT, "version": 1, "exported": time.time(), "runs": [r.id for r in runs]}
    if sweep:
        manifest["sweep"] = sweep
    with atomic_path(destination) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
            for run in runs:
                for path in _exportable_files(run):
                    archive.write(path, f"{run.id}/{path.relative_to(run.path).as_posix()}")
    return destination


def _exportable_files(run: Run) -> list[Path]:
    files = [run.path / name for name in RUN_FILES if (run.path / name).exists()]
    if run.external_dir.is_dir():
        files += [p for p in sorted(run.external_dir.iterdir())
                  if p.is_file() and _EXTERNAL_FILE.fullmatch(p.relative_to(run.path).as_posix())]
    if run.tensorboard_dir.exists():
        files += [p for p in sorted(run.tensorboard_dir.rglob("*"))
                  if p.is_file() and _EVENT_FILE.fullmatch(p.relative_to(run.path).as_posix())]
    return files


# ----------------------------------------------------------------------------- import

def check_archive(archive: zipfile.ZipFile) -> tuple[dict, dict[str, list[zipfile.ZipInfo]]]:
    """The manifest and members grouped by run id; raises ImportRefused for anything unexpected."""
    members: dict[str, list[zipfile.ZipInfo]] = {}
    names = [info.filename for info in archive.infolist()]
    if "manifest.json" not in names:
        raise ImportRefused("not a CXR Lab export: manifest.json is missing")
    for name in names:
        _check_member_name(name)
    try:
        infos = check_zip(archive, LIMITS)
    except UnsafeArchive as exc:
        raise ImportRefused(str(exc)) from None
    for info in infos:
        name = info.filename
        if info.is_dir() or name == "manifest.json":
            continue
        run_id, _, inner = name.partition("/")
        if not RUN_ID.fullmatch(run_id) or not (inner in RUN_FILES or _EVENT_FILE.fullmatch(inner)
                                                 or _EXTERNAL_FILE.fullmatch(inner)):
            raise ImportRefused(f"{name}: not a file a CXR Lab run contains")
        members.setdefault(run_id, []).append(info)
    manifest = _parse_manifest(archive.read("manifest.json"))
    if set(manifest["runs"]) != set(members):
        raise ImportRefused("the manifest does not match the runs in the archive")
    for run_id, infos in members.items():
        if f"{run_id}/config.json" not in {i.filename for i in infos}:
            raise ImportRefused(f"run {run_id} has no config.json")
    return manifest, members


def _check_member_name(name: str) -> None:
    path = PurePosixPath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or ".." in path.parts or re.match(r"^[A-Za-z]:", name)
            or any(part in ("", ".") for part in name.rstrip("/").split("/"))):
        raise ImportRefused(f"{name!r}: unsafe path in the archive (absolute or outside the run folder)")


def _parse_manifest(raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ImportRefused("manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ImportRefused("not a CXR Lab export (unknown format in manifest.json)")
    if not isinstance(manifest.get("runs"), list) or not all(isinstance(r, str) for r in manifest["runs"]):
        raise ImportRefused("manifest.json has no list of runs")
    return manifest


@dataclass
class ImportResult:
    imported: list[str] = field(default_factory=list)    # ids of the runs added to the store
    skipped: list[str] = field(default_factory=list)     # ids of identical runs already in the store
    sweep_id: str | None = None                          # the sweep record added, if any
    sweep_skipped: bool = False                          # the same sweep record was already here


def import_archive(store: RunStore, zip_path: str | Path) -> ImportResult:
    """Check, unpack and verify every run, then move the new ones into the store. A run already in
    the store (same original id, identical content) is skipped, so importing a zip twice adds
    nothing; a different run whose id clashes is imported under a new id."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ImportRefused("not a zip file") from None
    result, placed = ImportResult(), {}
    with archive, tempfile.TemporaryDirectory(dir=store.root, prefix=".import-") as staging:
        manifest, members = check_archive(archive)
        for infos in members.values():
            for info in infos:
                target = Path(staging) / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        for run_id in members:
            _verify_run(Path(staging) / run_id)
        for run_id in manifest["runs"]:
            folder = Path(staging) / run_id
            digest = run_content_hash(folder)
            existing = find_identical_run(store, run_id, digest)
            if existing:
                result.skipped.append(existing)
                placed[run_id] = existing
            else:
                placed[run_id] = _move_into_store(store, folder, digest)
                result.imported.append(placed[run_id])
    if manifest.get("sweep"):
        result.sweep_id, result.sweep_skipped = _import_sweep(store, manifest["sweep"], placed)
    return result


def run_content_hash(folder: Path) -> str:
    """SHA-256 of a run's exportable files (names and bytes) except status.json, which the import
    rewrites: the same run gives the same hash in the exporting and the importing store."""
    digest = hashlib.sha256()
    for path in _exportable_files(Run(folder)):
        relative = path.relative_to(folder).as_posix()
        if relative == "status.json":
            continue
        digest.update(relative.encode() + b"\0")
        with open(path, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def find_identical_run(store: RunStore, original_id: str, digest: str) -> str | None:
    """The id of a run in the store that is `original_id` (or was imported from it) with the same content."""
    for run in store.list():
        status = run.status()
        if original_id not in (run.id, status.get("imported_from")):
            continue
        known = status.get("content_hash") if status.get("imported_from") == original_id else None
        if (known or run_content_hash(run.path)) == digest:
            return run.id
    return None


def _verify_run(folder: Path) -> None:
    """Every file must be what it claims to be: JSON, JSON lines, pickle-free arrays, a safe Keras model."""
    from core.settings.config import TrainConfig
    for name in ("config.json", "status.json", "summary.json", "environment.json"):
        if (folder / name).exists() and not isinstance(read_json(folder / name), dict):
            raise ImportRefused(f"{folder.name}/{name} is not a JSON object")
    try:
        TrainConfig.from_dict(read_json(folder / "config.json"))
    except (TypeError, ValueError) as exc:
        raise ImportRefused(f"{folder.name}/config.json is not a valid run config ({exc})") from None
    _verify_user_and_result_files(folder)
    if (folder / "metrics.jsonl").exists():
        try:
            [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ImportRefused(f"{folder.name}/metrics.jsonl is not JSON lines") from None
    for npz in folder.glob("*.npz"):
        try:
            with np.load(npz, allow_pickle=False) as arrays:
                [arrays[key] for key in arrays.files]
        except Exception as exc:  # noqa: BLE001 - any failure means the file is refused
            raise ImportRefused(f"{folder.name}/{npz.name} is not a plain array file ({exc})") from None
    if (folder / "model.keras").exists():
        import keras
        try:
            keras.models.load_model(folder / "model.keras", safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001
            raise ImportRefused(f"{folder.name}/model.keras does not load in Keras safe mode ({exc})") from None


def _verify_user_and_result_files(folder: Path) -> None:
    """What the user said of the run, the first epoch's batches, external results and the model card."""
    from core.store.annotations import check_annotations
    if (folder / "annotations.json").exists():
        annotations = read_json(folder / "annotations.json")
        if not isinstance(annotations, dict):
            raise ImportRefused(f"{folder.name}/annotations.json is not a JSON object")
        try:
            check_annotations(annotations)
        except ValueError as exc:
            raise ImportRefused(f"{folder.name}/annotations.json: {exc}") from None
    batches = read_json(folder / "batches.json") if (folder / "batches.json").exists() else []
    if not (isinstance(batches, list) and all(isinstance(row, dict) for row in batches)):
        raise ImportRefused(f"{folder.name}/batches.json is not a JSON list of batches")
    for result in sorted((folder / "external").glob("*.json")):
        if not isinstance(read_json(result), dict):
            raise ImportRefused(f"{folder.name}/external/{result.name} is not a JSON object")
    if (folder / "model_card.md").exists():
        try:
            card = (folder / "model_card.md").read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ImportRefused(f"{folder.name}/model_card.md is not UTF-8 text") from None
        if len(card) > MAX_MODEL_CARD_CHARS or "\0" in card:
            raise ImportRefused(f"{folder.name}/model_card.md is not a model card (binary or over "
                                f"{MAX_MODEL_CARD_CHARS} characters)")


def _move_into_store(store: RunStore, folder: Path, digest: str) -> str:
    """Give the staged run its status here, then rename it into the store in one step (under a
    new id if its own is taken): no reader sees it before its status is written."""
    status = Run(folder).status()
    if status.get("state") in ("queued", "running"):
        status["state"] = "interrupted"  # it was exported mid-run: nothing here will finish it
    write_json(folder / "status.json", {**status, "imported": time.time(), "pid": None, "owner": None,
                                        "imported_from": folder.name, "content_hash": digest})
    run_id = folder.name
    while True:
        try:
            os.rename(folder, store.root / run_id)  # never into an existing folder, unlike shutil.move
            return run_id
        except OSError:
            if not (store.root / run_id).exists():
                raise
            run_id = store.new_run_id(folder.name)


def _import_sweep(store: RunStore, sweep: dict, placed: dict[str, str]) -> tuple[str | None, bool]:
    """Write the sweep record with its runs' ids in this store: (its id, False); (the id of the same
    record already here, True); (None, False) for a record that is not a sweep record. A different
    sweep whose id clashes is kept under a new id."""
    from core.store.sweeps import sweeps_dir
    if not isinstance(sweep, dict) or not RUN_ID.fullmatch(str(sweep.get("id", ""))):
        return None, False
    sweep = {**sweep, "runs": [{**entry, "run_id": placed.get(entry.get("run_id"), entry.get("run_id"))}
                               for entry in sweep.get("runs", []) if isinstance(entry, dict)]}
    folder = sweeps_dir(store)
    base_id, number = sweep["id"], 1
    while (folder / f"{sweep['id']}.json").exists():
        if read_json(folder / f"{sweep['id']}.json") == sweep:
            return sweep["id"], True
        number += 1
        sweep = {**sweep, "id": f"{base_id}-{number}"}
    write_json(folder / f"{sweep['id']}.json", sweep)
    return sweep["id"], False


def export_sweep(store: RunStore, sweep_id: str, destination: str | Path) -> Path:
    """All runs of a sweep plus the sweep record, so the sweep view works after import."""
    from core.store.sweeps import load_sweep
    record = load_sweep(store, sweep_id)
    run_ids = [entry["run_id"] for entry in record["runs"] if (store.root / entry["run_id"]).exists()]
    return export_runs(store, run_ids, destination, sweep=record)
