"""Upload-to-result latency of the Diagnose page: decode, preprocess, predict (with the
out-of-distribution features), Grad-CAM and overlay, for a 1024x1024 JPEG on a 128 px model.

    .venv/bin/python bench/diagnose_latency.py [--run runs/<id>] [--repeats 20]

Uses the newest finished 128 px run of the run store, or trains a 1-epoch seed_cnn on the built-in
set (about 30 s) in a temporary folder. The Diagnoser (model, explainer, OOD reference) is built
once, as the page caches it per run; the timings are per image, medians over the repeats.
Target: total <= 0.5 s on a CPU.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

TARGET_S = 0.5


def find_or_train_run(run_dir: str | None, scratch: Path):
    from core.ml.diagnosis import diagnosable_runs
    from core.store.run_folder import Run
    from core.store.runs import RunStore
    if run_dir:
        return Run(Path(run_dir))
    runs = [r for r in diagnosable_runs(RunStore()) if r.config().get("image_size") == 128]
    if runs:
        return runs[0]
    from core.ml.training import execute_run
    from core.settings.config import TrainConfig
    print("no finished 128 px run: training a 1-epoch seed_cnn on the built-in set ...", flush=True)
    config = TrainConfig(arch="seed_cnn", image_size=128, epochs=1, batch_size=64, name="latency-bench")
    run = RunStore(scratch).create(config.to_dict(), name="latency-bench")
    execute_run(run, config)
    if run.state() != "done":
        raise SystemExit(f"training failed: {run.status().get('error')}")
    return run


def test_jpeg(size: int = 1024) -> bytes:
    """A real built-in X-ray, upscaled to size x size, as a JPEG."""
    from core.data.sources import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        name = next(n for n in sorted(archive.namelist()) if n.lower().endswith(".jpeg"))
        image = Image.open(io.BytesIO(archive.read(name))).convert("L").resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def time_once(diagnoser, data: bytes) -> dict:
    """Seconds per stage for one upload, the way the page processes it."""
    import numpy as np

    from core.data.imaging import resize_to_model
    from core.ml.diagnosis import decode_upload
    from core.ml.maps import overlay
    from core.ml.ood import assess
    stages, started = {}, time.perf_counter()
    image = decode_upload(data, "bench.jpg")
    stages["decode"] = time.perf_counter() - started
    mark = time.perf_counter()
    pixels = resize_to_model(image, diagnoser.config.image_size, diagnoser.config.channels)
    stages["preprocess"] = time.perf_counter() - mark
    mark = time.perf_counter()
    features, probabilities = diagnoser.features_model.predict_on_batch(pixels[None].astype(np.float32))
    predicted, _ = diagnoser.decide(np.asarray(probabilities)[0], diagnoser.threshold)
    assess(image, np.asarray(features), diagnoser.reference())
    stages["predict+ood"] = time.perf_counter() - mark
    mark = time.perf_counter()
    heatmap = diagnoser.explainer.heatmap(pixels, "gradcam", diagnoser.class_names.index(predicted))
    stages["gradcam"] = time.perf_counter() - mark
    mark = time.perf_counter()
    overlay(image, heatmap, 0.45)
    stages["overlay"] = time.perf_counter() - mark
    stages["total"] = time.perf_counter() - started
    return stages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder (default: newest finished 128 px run, or train one)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    from core.ml.diagnosis import Diagnoser
    with tempfile.TemporaryDirectory() as scratch:
        run = find_or_train_run(args.run, Path(scratch))
        started = time.perf_counter()
        diagnoser = Diagnoser(run.path)
        diagnoser.reference()
        print(f"run {run.id} ({run.config().get('arch')}, {run.config().get('image_size')} px): model, "
              f"explainer and OOD reference ready in {time.perf_counter() - started:.1f} s (once per run)")
        data = test_jpeg()
        for _ in range(2):  # warm-up: the first calls trace the graphs
            time_once(diagnoser, data)
        samples = [time_once(diagnoser, data) for _ in range(args.repeats)]
        diagnoser.diagnose(data, "bench.jpg")  # the page's own call works on the same input
    print(f"1024x1024 JPEG ({len(data) // 1024} KiB), median over {args.repeats} repeats:")
    for stage in samples[0]:
        print(f"  {stage:12s} {statistics.median(s[stage] for s in samples) * 1000:7.1f} ms")
    total = statistics.median(s["total"] for s in samples)
    print(f"upload-to-result {total:.3f} s (target <= {TARGET_S} s): {'OK' if total <= TARGET_S else 'SLOW'}")
    return 0 if total <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
