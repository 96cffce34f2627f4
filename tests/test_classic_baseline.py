"""Logistic regression on the pixels (core.ml.classic, `python -m core baseline`): real scikit-learn
fits on tiny synthetic data, and the command, which trains a logistic_regression run, on a synthetic
chest X-ray folder."""
import json

import numpy as np
import pytest

from core.cli import baseline as baseline_cli
from core.ml import classic
from core.store.runs import RunStore


def separable(n: int, seed: int, features: int = 20):
    """Rows whose class is decided by feature 0 alone; the other features are noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, features)).astype(np.float32)
    return x, (x[:, 0] > 0.5).astype(int)


@pytest.mark.parametrize("penalty", classic.PENALTIES)
def test_the_c_of_the_lowest_validation_loss_is_kept(penalty):
    (x_train, y_train), (x_val, y_val) = separable(200, 0), separable(100, 1)
    fitted = classic.fit_logistic_regression(x_train, y_train, x_val, y_val, 2, penalty, (0.01, 1.0, 100.0))
    assert set(fitted.val_log_loss) == {0.01, 1.0, 100.0}
    assert fitted.c == min(fitted.val_log_loss, key=fitted.val_log_loss.get) != 0.01  # 0.01 underfits
    assert (classic.probabilities(fitted.model, x_val, 2).argmax(1) == y_val).mean() > 0.9
    assert np.argmax(np.abs(fitted.model.coef_[0])) == 0  # the feature that decides weighs most


def test_l1_zeroes_the_noise_features_and_l2_does_not():
    x, y = separable(300, 2)
    l1 = classic.fit_logistic_regression(x, y, x, y, 2, "l1", (0.5,)).model
    l2 = classic.fit_logistic_regression(x, y, x, y, 2, "l2", (0.5,)).model
    assert np.count_nonzero(l1.coef_) < x.shape[1] // 2
    assert np.count_nonzero(l2.coef_) == x.shape[1]


def test_a_class_missing_from_training_gets_probability_zero():
    x, y = separable(50, 3)
    fitted = classic.fit_logistic_regression(x, y, x, y, 3, "l2", (1.0,))
    probabilities = classic.probabilities(fitted.model, x, 3)
    assert probabilities.shape == (50, 3) and (probabilities[:, 2] == 0).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("penalty,c_grid,match", [("l3", (1.0,), "penalty must be one of l1, l2"),
                                                  ("l2", (0.0,), "C must be positive"),
                                                  ("l2", (), "the C grid is empty")])
def test_bad_penalties_and_grids_are_refused(penalty, c_grid, match):
    x, y = separable(20, 4)
    with pytest.raises(ValueError, match=match):
        classic.fit_logistic_regression(x, y, x, y, 2, penalty, c_grid)


@pytest.mark.slow  # trains (scikit-learn, then the Keras graph's predictions) in this process
def test_the_baseline_command_trains_a_logistic_regression_run(chest_folder, tmp_path, capsys):
    code = baseline_cli.main(["--data-source", "folder", "--data-path", str(chest_folder), "--image-size", "32",
                              "--penalty", "l1", "--c", "0.1", "10", "--runs-dir", str(tmp_path), "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == "done" and result["logistic_regression"]["penalty"] == "l1"
    [run] = RunStore(tmp_path).list()  # a run like any other: Runs, Compare, Evaluate list it
    assert run.id == result["run_id"] and run.config()["arch"] == "logistic_regression"
    assert run.config()["arch_params"] == {"penalty": "l1", "c_grid": [0.1, 10.0]}
    summary = run.summary()
    assert result["logistic_regression"]["C"] == summary["logistic_regression"]["C"] in (0.1, 10.0)
    assert result["test"]["n"] == summary["test"]["n"] > 0
    assert summary["test"]["threshold"] == summary["threshold"]  # decided as a run decides
    assert result["test"]["accuracy"] == summary["test"]["accuracy"]


def test_the_baseline_command_on_a_missing_folder_fails_saying_why(tmp_path, capsys):
    """As `python -m core train` does: the run is recorded as failed, with the reason."""
    assert baseline_cli.main(["--data-source", "folder", "--data-path", str(tmp_path / "gone"),
                              "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == "failed" and result["error"].endswith("gone does not exist")
