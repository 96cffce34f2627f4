"""The page-compile race of CPython 3.11 before 3.11.8 (gh-106905), closed for the served dashboard.

A thread that builds a Python AST while another thread parses Python can fail with
"SystemError: AST constructor recursion depth mismatch" (seen in a fresh-clone `make test`: the
Diagnose page failed to compile). The dashboard compiles pages from source text (Streamlit's magic,
which goes through an AST, is off in .streamlit/config.toml), parses no Python of its own at run
time (tf.data maps without AutoGraph), imports what parses at import time before it serves
(core/workers/service.py), and serialises the parses it cannot avoid (numpy's .npy headers) with
one lock (core/ast_guard.py).

The unsafe paths are not run here: `python -m tests.parse_race --magic` (or `--main-parses` without
`--guard`) reproduces the race on 3.11.7, usually within seconds, but the corrupted AST state can
also leave that process spinning for minutes, which no suite should risk.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading

import numpy as np

from tests.conftest import PROJECT



def race(*flags: str, seconds: float) -> dict:
    """tests/parse_race.py in a process of its own, run from the project as `make run` serves it."""
    done = subprocess.run([sys.executable, "-m", "tests.parse_race", "--seconds", str(seconds), *flags],
                          cwd=PROJECT, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pages_compile_while_other_threads_parse_python():
    result = race(seconds=10)
    assert result["magic"] is False, "runner.magicEnabled must stay false in .streamlit/config.toml"
    assert result["errors"] == 0, result["first_error"]
    assert result["compiles"] >= 100, result  # the pages were compiled many times over, under the race


def test_threads_that_parse_python_at_once_are_safe_under_the_dashboards_guard():
    """numpy parses every .npy header with ast.literal_eval, in whichever page thread loads a run's
    predictions; the dashboard serialises ast.parse on the racy versions (core/ast_guard.py)."""
    result = race("--main-parses", "--guard", seconds=10)
    assert result["errors"] == 0 and result["parse_errors"] == 0, result
    assert result["compiles"] >= 100, result


def test_training_and_prediction_parse_no_python_source(monkeypatch):
    """What pages and training run through tf.data and Keras parses no Python source (AutoGraph would:
    dozens of ast.parse calls per mapped function)."""
    import tensorflow as tf  # noqa: F401 - imported (which parses) before the watch starts

    from core.data.datasets import Dataset
    from core.ml import data_pipeline, models

    parsed: list[str] = []
    real_parse = ast.parse

    def watched_parse(source, *args, **kwargs):
        parsed.append(threading.current_thread().name)
        return real_parse(source, *args, **kwargs)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 1), dtype=np.uint8)
    labels = np.arange(16) % 2
    dataset = Dataset(images, labels.astype(np.int32), ["NORMAL", "PNEUMONIA"], np.arange(16).astype(str),
                      np.array([f"{i}.png" for i in range(16)]), np.full(16, ""), "hash", report=None)
    monkeypatch.setattr(ast, "parse", watched_parse)

    def work():
        model = models.build_model("seed_cnn", 32, 1, 2, {}, 0.5)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        model.fit(data_pipeline.make_tf_dataset(images, labels, 2, 8, True, 0), epochs=1, verbose=0)
        data_pipeline.predict_rows(model, dataset, np.arange(16), pipeline="disk")
        data_pipeline.predict_rows(model, dataset, np.arange(16), pipeline="memory")

    thread = threading.Thread(target=work, name="a page's script thread")
    thread.start()
    thread.join()
    assert parsed == []
