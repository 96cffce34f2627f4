"""Why ui/streamlit_patches.protect_background_training stays: Keras model builds while another thread calls
keras.backend.clear_session(), as Streamlit does after every script run of any browser tab.

Prints how many builds (and Grad-CAM maps) failed or changed while clear_session ran about twice a
second, and the same without it.

    .venv/bin/python bench/clear_session.py [--seconds 40]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(seconds: float, clearing: bool) -> dict:
    import keras

    from core.ml import explain, models
    model = models.build_model("seed_cnn", 64, 1, 2, {"dense_units": 16})
    explainer = explain.Explainer(model)
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 1)).astype("float32")
    reference, _ = explain.heatmap_with_fallback(explainer, pixels, 1)
    stop, clears = threading.Event(), [0]

    def clear_like_streamlit() -> None:
        while not stop.wait(0.5):
            keras.backend.clear_session()
            clears[0] += 1

    result = {"builds": 0, "build_errors": 0, "gradcams": 0, "gradcam_errors": 0}
    clearer = threading.Thread(target=clear_like_streamlit, daemon=True)
    if clearing:
        clearer.start()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        result["builds"] += 1
        try:
            models.model_stats(models.build_model("deep_bn_cnn", 64, 1, 2, {}))
        except ValueError as exc:
            result["build_errors"] += 1
            result["last_error"] = str(exc)[:100]
        result["gradcams"] += 1
        heatmap, _ = explain.heatmap_with_fallback(explainer, pixels, 1)
        result["gradcam_errors"] += int(not np.allclose(heatmap, reference, atol=1e-4))
    stop.set()
    return {**result, "clear_session_calls": clears[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    for clearing in (False, True):
        print(("with" if clearing else "without") + " clear_session every 0.5 s:", measure(args.seconds, clearing),
              flush=True)


if __name__ == "__main__":
    main()
