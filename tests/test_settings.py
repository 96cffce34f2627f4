"""Each setting is declared once (core.settings): validation, the command line, the sweep axes and the
data checks read the same declaration and say the same thing about a wrong value."""
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import train as train_cli
from core.data.datasets import DataError, load_dataset
from core.present import sweeps as sweep_view
from core.settings.architectures import ARCHITECTURES, resolve_params
from core.settings.config import (
    AUGMENTATION_SETTINGS,
    SETTINGS,
    Augmentation,
    TrainConfig,
    setting_for,
    with_used_dropout,
)
from core.store.sweeps import Sweep, SweepAxis

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_is_declared_with_a_default_that_passes_its_own_check():
    nested = {"arch_params", "augmentation"}  # declared per architecture / in Augmentation
    assert set(SETTINGS) | nested == set(TrainConfig.__dataclass_fields__)
    for spec in [*SETTINGS.values(), *AUGMENTATION_SETTINGS.values()]:
        assert spec.help and spec.kind in (int, float, str, bool), spec.name
        assert spec.check(spec.default) == spec.default, spec.name
    assert TrainConfig().validate() == TrainConfig()
    for arch in ARCHITECTURES.values():
        for param in arch.params:
            assert param.check(param.default) == param.default, (arch.name, param.name)


@pytest.mark.parametrize("values, message", [
    ({"epochs": "10"}, "epochs must be a whole number between 1 and 500; got '10'"),
    ({"epochs": 0}, "epochs must be a whole number between 1 and 500; got 0"),
    ({"epochs": 2.5}, "epochs must be a whole number between 1 and 500; got 2.5"),
    ({"learning_rate": True}, "learning_rate must be a number between 1e-06 and 1; got True"),
    ({"optimizer": "adamax"}, "optimizer must be one of adam, adamw, sgd, rmsprop, adagrad; got 'adamax'"),
    ({"dropout": 1.5}, "dropout must be empty (None) or a number between 0 and 0.9; got 1.5"),
    ({"cv_folds": 1}, "cv_folds must be 0 (off) or a whole number between 2 and 20; got 1"),
    ({"memory_cap_mb": 100}, "memory_cap_mb must be 0 (off) or a whole number of at least 256; got 100"),
    ({"early_stopping": "yes"}, "early_stopping must be true or false; got 'yes'"),
    ({"augmentation": {"zoom": "a"}}, "augmentation.zoom must be a number between 0 and 0.5; got 'a'"),
    ({"arch_params": {"dense_units": 0}}, "dense_units must be a whole number between 1 and 4,096; got 0"),
])
def test_a_wrong_type_reads_like_a_value_out_of_range(values, message):
    with pytest.raises(ValueError) as raised:
        TrainConfig.from_dict(values).validate()
    assert str(raised.value) == message


def test_values_of_the_right_kind_are_stored_as_that_kind():
    config = TrainConfig.from_dict({"learning_rate": 1, "image_size": 64.0, "dropout": 0}).validate()
    assert (type(config.learning_rate), type(config.image_size), type(config.dropout)) == (float, int, float)
    assert resolve_params("mlp", {"hidden_units": "64, 32"})["hidden_units"] == [64, 32]


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown TrainConfig settings: colour"):
        TrainConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="unknown augmentation settings: spin"):
        TrainConfig.from_dict({"augmentation": {"spin": 1}})


def test_the_command_line_has_a_flag_per_setting_with_the_same_message(capsys):
    args = train_cli.parse_args(["--image-size", "64", "--no-early-stopping", "--dropout", "none",
                                 "--optimizer", "sgd", "--set", "augmentation.zoom=0.1"])
    config = train_cli.build_config(args)
    assert (config.image_size, config.early_stopping, config.dropout, config.optimizer) == (64, False, None, "sgd")
    assert config.augmentation.zoom == 0.1
    assert set(SETTINGS) - set(train_cli.NOT_FLAGS) <= set(vars(args))  # one flag per declared setting
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--epochs", "0"])
    assert "epochs must be a whole number between 1 and 500; got 0" in capsys.readouterr().err


def test_sweep_axes_and_data_checks_read_the_same_declarations():
    base = TrainConfig().to_dict()
    assert sweep_view.coerce_values(base, "image_size", [64.0]) == [64]
    with pytest.raises(ValueError, match="image_size must be a whole number between 32 and 512; got 1024"):
        sweep_view.coerce_values(base, "image_size", [1024])
    with pytest.raises(ValueError, match="no_such_setting is not a setting of a seed_cnn run"):
        Sweep(TrainConfig(), [SweepAxis("no_such_setting", [1, 2])]).validate()
    assert setting_for("arch_params.width", "deep_bn_cnn").max == 4.0
    assert setting_for("augmentation.zoom") is AUGMENTATION_SETTINGS["zoom"]
    with pytest.raises(DataError, match="image_size must be a whole number between 32 and 512; got 16"):
        load_dataset(image_size=16)
    assert Augmentation().any() is False


def test_checking_a_config_imports_no_tensorflow():
    code = ("import sys; from core.settings.config import TrainConfig; "
            "TrainConfig(arch='transfer', arch_params={'base': 'resnet50_v2'}).validate(); "
            "from core.present import forms; from core.cli import train; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_one_command_line_dispatches_to_each_command():
    result = subprocess.run([sys.executable, "-m", "core"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "python -m core train" in result.stderr
    for command in ("train", "worker", "sweep", "evaluate", "predict"):
        result = subprocess.run([sys.executable, "-m", "core", command, "--help"], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0 and f"python -m core {command}" in result.stdout, command


# ----------------------------------------------------------------------------- one dropout per run

# An older run's config.json: the form saved the architecture's dropout among its parameters and the
# run's own beside it; the model was built with the run's own (models.build_model lets it override).
OLD_CONFIG_WITH_TWO_DROPOUTS = {"arch": "seed_cnn", "arch_params": {"dense_units": 16, "dropout": 0.25},
                                "dropout": 0.5}


def test_a_config_holds_one_dropout_the_one_its_model_is_built_with():
    config = TrainConfig.from_dict(OLD_CONFIG_WITH_TWO_DROPOUTS)
    assert config.dropout == 0.5 and config.arch_params == {"dense_units": 16}
    assert "dropout" not in config.to_dict()["arch_params"]
    assert TrainConfig(arch_params={"dropout": 0.3}).dropout == 0.3  # set only among the parameters: moved
    assert config.with_overrides({"arch_params.dropout": 0.1}).dropout == 0.1  # a sweep axis or --set


def test_a_saved_config_reads_as_the_dropout_its_model_used():
    assert with_used_dropout(OLD_CONFIG_WITH_TWO_DROPOUTS)["dropout"] == 0.5
    assert "dropout" not in with_used_dropout(OLD_CONFIG_WITH_TWO_DROPOUTS)["arch_params"]
    assert with_used_dropout({"arch": "seed_cnn", "arch_params": {}, "dropout": None})["dropout"] == 0.25
    assert with_used_dropout({"arch": "logistic", "arch_params": {}, "dropout": 0.5})["dropout"] is None
    assert with_used_dropout({"arch": "gone_arch", "dropout": 0.2})["dropout"] == 0.2  # unknown: as saved


def test_sgd_and_rmsprop_have_no_momentum_unless_it_is_set_as_in_keras():
    import keras

    from core.ml.training import make_optimizer
    assert TrainConfig().momentum == 0.0 == keras.optimizers.SGD().momentum == keras.optimizers.RMSprop().momentum
    assert make_optimizer(TrainConfig(optimizer="sgd"), 0.01).momentum == 0.0
    assert make_optimizer(TrainConfig(optimizer="rmsprop", momentum=0.9), 0.001).momentum == 0.9


def test_a_config_saved_without_momentum_reads_as_the_0_9_it_trained_with(store):
    from core.settings.config import as_trained
    from core.files import write_json
    old = {key: value for key, value in TrainConfig(optimizer="sgd").to_dict().items() if key != "momentum"}
    run = store.create(TrainConfig().to_dict(), queued=False)
    write_json(run.config_path, old)
    assert run.config()["momentum"] == 0.9 and TrainConfig.from_dict(run.config()).momentum == 0.9
    saved_since = TrainConfig(optimizer="sgd").to_dict()  # every config saved now holds every setting
    assert as_trained(saved_since)["momentum"] == 0.0 and as_trained({}) == {}
    assert TrainConfig.from_dict({"optimizer": "sgd"}).momentum == 0.0  # typed values: today's default
