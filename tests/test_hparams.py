"""Every run in TensorBoard's HParams dashboard: its settings and its final metrics, read back through
the real `tensorboard` server's hparams plugin (its HTTP API, as the dashboard's own page reads it)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from core.ml import hparams
from core.settings.architectures import default_params
from core.settings.config import TrainConfig
from core.store.runs import RunStore
from tests.browser_support import free_port, stop
from tests.conftest import tiny_folder_config

TENSORBOARD = Path(sys.executable).with_name("tensorboard")


# ----------------------------------------------------------------------------- values HParams accepts

def test_settings_are_flattened_to_values_hparams_accepts():
    config = TrainConfig.from_dict({"arch": "cnn", "arch_params": {"filters": [8, 16]},
                                    "augmentation": {"zoom": 0.1}, "epochs": 3})
    flat = hparams.flat_settings(config)
    assert flat["epochs"] == 3 and flat["arch"] == "cnn"
    assert flat["augmentation.zoom"] == 0.1 and flat["augmentation.horizontal_flip"] is False
    assert flat["arch_params.filters"] == "[8, 16]"  # a list becomes text
    assert flat["arch_params.kernel_size"] == default_params("cnn")["kernel_size"]  # defaults too
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert "augmentation" not in flat and "arch_params" not in flat


def test_hparams_show_one_dropout_the_one_the_model_used():
    from tests.test_settings import OLD_CONFIG_WITH_TWO_DROPOUTS
    flat = hparams.flat_settings(TrainConfig.from_dict(OLD_CONFIG_WITH_TWO_DROPOUTS))
    assert flat["dropout"] == 0.5 and "arch_params.dropout" not in flat
    assert hparams.flat_settings(TrainConfig(arch="cnn"))["dropout"] == default_params("cnn")["dropout"]
    assert "dropout" not in hparams.flat_settings(TrainConfig(arch="logistic", dropout=0.5))  # it has none


def test_hparam_values_make_numpy_numbers_plain_and_anything_else_text():
    assert hparams.hparam_value(np.float32(0.5)) == 0.5 and type(hparams.hparam_value(np.int64(3))) is int
    assert hparams.hparam_value(True) is True
    assert hparams.hparam_value({"a": 1}) == '{"a": 1}'


def test_final_metrics_take_what_the_summary_has():
    summary = {"val": {"accuracy": 0.9, "auc": None, "macro_f1": 0.8, "log_loss": 0.3},
               "test": {"accuracy": 0.85, "auc": 0.95, "macro_f1": 0.84, "log_loss": float("nan")}}
    assert hparams.final_metric_values(summary) == {
        "hparams/val_accuracy": 0.9, "hparams/val_macro_f1": 0.8, "hparams/val_loss": 0.3,
        "hparams/test_accuracy": 0.85, "hparams/test_auc": 0.95, "hparams/test_macro_f1": 0.84}
    assert hparams.final_metric_values({"val": None, "test": None}) == {}
    at_threshold = {"test": {"accuracy": 0.85, "threshold": 0.43}}  # the decision the accuracy was at, named
    assert hparams.final_metric_values(at_threshold) == {"hparams/test_accuracy": 0.85,
                                                         "hparams/decision_threshold": 0.43}


# ----------------------------------------------------------------------------- the real dashboard

def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def served_session_groups(base: str, expected: int, timeout: float = 120) -> list[dict]:
    """The hparams plugin's session groups once it has loaded `expected` sessions with metrics."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            groups = post_json(f"{base}/data/plugin/hparams/session_groups",
                               {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                    "STATUS_RUNNING"]}).get("sessionGroups", [])
            if len(groups) >= expected and all(g.get("metricValues") for g in groups):
                return groups
        except OSError:
            pass  # not serving yet
        assert time.monotonic() < deadline, "TensorBoard did not show the runs' hparams in time"
        time.sleep(1)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, chest_folder):
    from core.ml.training import execute_run
    store = RunStore(tmp_path_factory.mktemp("hparams-runs"))
    runs = []
    for learning_rate in (0.001, 0.003):
        config = tiny_folder_config(chest_folder, epochs=1, learning_rate=learning_rate)
        run = store.create(config.to_dict(), queued=False)
        execute_run(run, config)
        assert run.state() == "done", run.status().get("error")
        runs.append(run)
    return store, runs


@pytest.mark.slow
def test_tensorboard_hparams_dashboard_shows_every_runs_settings_and_final_metrics(two_runs, tmp_path):
    store, runs = two_runs
    port = free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    server = subprocess.Popen([str(TENSORBOARD), "--logdir", str(store.root), "--port", str(port),
                               "--host", "localhost", "--reload_interval", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://localhost:{port}"
        groups = {g["name"]: g for g in served_session_groups(base, expected=2)}
        experiment = post_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    finally:
        stop(server)
        log.close()
    hparam_names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"learning_rate", "arch", "epochs", "arch_params.dense_units", "augmentation.zoom"} <= hparam_names
    metric_tags = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    for split in ("val", "test"):
        for name in ("accuracy", "auc", "macro_f1", "loss"):
            assert ("", f"hparams/{split}_{name}") in metric_tags
    assert ("validation", "epoch_auc") in metric_tags  # the per-epoch val AUC, through Keras' callback
    assert set(groups) == {run.id for run in runs}  # a group per run, named by the run id (trial_id)
    for run in runs:
        group = groups[run.id]
        assert [session["name"] for session in group["sessions"]] == [f"{run.id}/tensorboard"]
        assert group["hparams"]["learning_rate"] == pytest.approx(run.config()["learning_rate"])
        assert group["hparams"]["arch"] == "seed_cnn"
        shown = {m["name"]["tag"]: m["value"] for m in group["metricValues"] if m["name"].get("group", "") == ""}
        test = run.summary()["test"]
        assert shown["hparams/test_accuracy"] == pytest.approx(test["accuracy"], rel=1e-6)
        assert shown["hparams/test_macro_f1"] == pytest.approx(test["macro_f1"], rel=1e-6)
        assert shown["hparams/test_loss"] == pytest.approx(test["log_loss"], rel=1e-6)
        if test["auc"] is not None:
            assert shown["hparams/test_auc"] == pytest.approx(test["auc"], rel=1e-6)
