"""What the Train page says and how a saved config fills its form (core.present.train_view)."""
from core.present import train_view
from core.present.estimate import SAME_MODEL, RunEstimate
from core.settings import architectures
from core.settings.config import TrainConfig
from core.settings.recipes import recipe


def test_a_saved_config_fills_every_widget_it_sets():
    config = TrainConfig(arch="mlp", arch_params={"hidden_units": [64, 32]}, dropout=0.4, batch_size=100,
                         learning_rate=0.003, name="kept").to_dict()
    config["augmentation"] = {"zoom": 0.1}  # older runs saved only what they changed
    state = train_view.form_state(config, ("arch", "batch_size", "learning_rate", "name"))
    assert state == {
        "train_arch": "mlp", "train_batch_size": 128, "train_learning_rate": 0.003, "train_name": "kept",
        "train_aug_rotation_degrees": 0.0, "train_aug_zoom": 0.1, "train_aug_shift": 0.0,
        "train_aug_horizontal_flip": False, "train_aug_brightness": 0.0, "train_aug_contrast": 0.0,
        "train_aug_shear": 0.0, "train_aug_gaussian_noise": 0.0, "train_aug_mixup": 0.0,
        "train_p_mlp_hidden_units": "64, 32", "train_p_mlp_activation": "relu", "train_p_mlp_dropout": 0.4}


def test_the_recipe_fills_its_architectures_parameters():
    state = train_view.form_state(recipe("binary").to_dict(), ("arch",))
    assert state["train_arch"] == "deep_bn_cnn"
    assert {k for k in state if k.startswith("train_p_")} == {
        "train_p_deep_bn_cnn_" + name for name in ("width", "dense_layers", "dropout", "activation")}


def test_the_architectures_own_dropout_applies_unless_the_config_sets_one():
    assert train_view.arch_param_values({"arch": "seed_cnn"})["dropout"] == 0.25
    assert train_view.arch_param_values({"arch": "seed_cnn", "dropout": 0.5})["dropout"] == 0.5
    assert train_view.split_dropout({"dense_units": 8, "dropout": 0.3}) == ({"dense_units": 8}, 0.3)
    assert train_view.split_dropout({}) == ({}, None)


def test_the_headline_names_the_phase_only_while_running():
    assert train_view.headline("a", "r1", "running", "training", None) == "**a** · `r1` · state: **running** (training)"
    assert train_view.headline("a", "r1", "done", "training", None) == "**a** · `r1` · state: **done**"
    assert train_view.headline("a", "r1", "queued", None, [2, 4]).endswith("state: **queued** · resumed at epoch 4")


def test_progress_bars_and_metrics():
    progress = {"phase": "training", "epochs": 4, "epoch": 2, "history": [{}, {}], "batches": 20, "batch": 5,
                "images_per_sec": 812.0, "eta_s": 95.0, "batch_loss": 0.4321, "learning_rate": 0.001}
    assert train_view.progress_bars(progress) == [(0.5, "Epoch 3 of 4"), (0.25, "Batch 5 of 20")]
    assert train_view.progress_metrics(progress) == [("Images / s", "812"), ("Time left", "1 min 35 s"),
                                                     ("Learning rate", "1.00e-03"), ("Batch loss", "0.4321")]
    loading = {"phase": "loading data", "load_done": 100, "load_total": 400}
    assert train_view.progress_bars(loading) == [(0.25, "Loading images 100 / 400")]
    assert [value for _, value in train_view.progress_metrics({})] == ["—", "—", "—", "—"]


def test_scores_of_a_finished_run():
    summary = {"test": {"accuracy": 0.91234, "macro_f1": 0.9, "auc": None, "threshold": 0.43}, "best_epoch": 3}
    assert train_view.score_metrics(summary) == [("Test accuracy @ threshold 0.43", "0.912"),
                                                 ("Test macro-F1 @ threshold 0.43", "0.900"),
                                                 ("Test AUC", "—"), ("Best epoch", 3)]
    older = {"test": {"accuracy": 0.9, "macro_f1": 0.9, "auc": 0.95, "threshold": None}}  # argmax figures
    assert train_view.score_metrics(older)[0] == ("Test accuracy @ argmax", "0.900")


def test_the_result_caption_lists_what_the_run_used():
    caption = train_view.result_caption({"peak_memory_mb": 812.4, "images_per_sec": 1234.0, "wall_s": 63,
                                         "device": "CPU (2 cores)"}, [2, 3])
    assert caption == "Peak memory 812 MB · 1,234 images/s · wall time 1 min 3 s · CPU (2 cores) · resumed at epochs 2, 3"
    assert train_view.result_caption({}, []) == ""


def test_what_a_stopped_run_kept():
    assert train_view.stopped_text({"best_epoch": 2, "epochs_run": 3}, True).startswith(
        "Stopped. Kept: the best epoch (2 of 3 run)")
    assert train_view.stopped_text({}, True) == "Stopped. The model as it was is saved and evaluated below."
    assert "nothing was trained" in train_view.stopped_text({}, False)


def test_queue_and_interrupted_texts():
    assert train_view.queue_state_text("queued", True, 3) == "queued to resume from epoch 3"
    assert train_view.queue_state_text("running", False, None) == "running"
    text = train_view.interrupted_text([f"run{i}" for i in range(7)])
    assert text.startswith("7 run(s) stopped") and "run4 ..." in text and "run5" not in text


def test_the_time_preview():
    unknown = RunEstimate(seconds=None)
    assert train_view.epoch_time(unknown) == "after epoch 1"
    assert "known after the first epoch" in train_view.time_caption(unknown, 3, 100)
    guess = RunEstimate(seconds=70.0, epoch_seconds=20.0, overhead_seconds=10.0, basis=SAME_MODEL, rough=True)
    assert train_view.epoch_time(guess) == "≈ 20 s"
    caption = train_view.time_caption(guess, 3, 1234)
    assert caption.startswith("About 1 min 10 s for 3 epochs on 1,234 training images, including about 10 s")


# ----------------------------------------------------------------------------- presets of the configurable CNN

def test_a_preset_fills_every_cnn_parameter_widget():
    state = train_view.preset_state("wide")
    assert state == {"train_p_cnn_filters": "128, 128", "train_p_cnn_kernel_size": 5,
                     "train_p_cnn_convs_per_block": 1, "train_p_cnn_batch_norm": False,
                     "train_p_cnn_pooling": "max", "train_p_cnn_activation": "relu", "train_p_cnn_dropout": 0.3,
                     "train_p_cnn_dense_layers": "", "train_p_cnn_head": "global_average",
                     # the per-block settings at their defaults: every block alike, no block dropout
                     "train_p_cnn_kernel_sizes": "", "train_p_cnn_activations": "", "train_p_cnn_pool_sizes": "",
                     "train_p_cnn_block_dropout": 0.25, "train_p_cnn_dropout_after_blocks": "",
                     "train_p_cnn_head_dropout": "every_dense"}
    assert train_view.preset_state(train_view.CUSTOM_PRESET) == {}
    assert train_view.preset_options()[0] == "custom"
    assert set(train_view.preset_options()[1:]) == set(architectures.CNN_PRESETS)
    assert train_view.preset_title("vgg") == "VGG-style (2 convs per block)"


def test_the_widgets_values_read_back_as_the_presets_params():
    for name in architectures.CNN_PRESETS:
        assert train_view.param_values_in(train_view.preset_state(name), "cnn") == architectures.preset_params(name)
    assert train_view.param_values_in({}, "cnn") == architectures.default_params("cnn")


def test_the_preset_turns_custom_once_a_parameter_changes():
    vgg = architectures.preset_params("vgg")
    assert train_view.preset_choice("vgg", vgg) == "vgg"
    assert train_view.preset_choice("vgg", {**vgg, "kernel_size": 5}) == "custom"
    assert train_view.preset_choice("custom", vgg) == "custom"  # chosen custom stays custom
    assert train_view.preset_choice("gone", vgg) == "custom"  # a preset of an older version
    # at first: the preset the values are, if any
    assert train_view.preset_choice(None, architectures.default_params("cnn")) == "seed"
    assert train_view.preset_choice(None, {**vgg, "kernel_size": 5}) == "custom"


def test_a_saved_cnn_config_fills_its_list_parameters():
    config = TrainConfig(arch="cnn", arch_params={"filters": [16, 32], "dense_layers": []}).to_dict()
    state = train_view.form_state(config, ("arch",))
    assert state["train_p_cnn_filters"] == "16, 32" and state["train_p_cnn_dense_layers"] == ""
    assert train_view.preset_choice("seed", train_view.param_values_in(state, "cnn")) == "custom"
