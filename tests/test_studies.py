"""The Studies gallery: every study is a valid sweep in both variants, its models build, a quick study
runs end to end, and its answer follows the numbers of its runs."""
import json
import math
import time

import pytest

from core.present import studies as studies_view
from core.present import study_report
from core.settings.config import TrainConfig
from core.settings.studies import STUDIES, VARIANTS, get_study, study_spec
from core.files import write_json
from core.store.sweeps import Sweep, load_sweep, submit_sweep, sweeps_dir
from tests.conftest import tiny_folder_config, wait_until, write_run

# Units of work of a quick study: epochs x share of the training patients x (image side / 64)^2, summed
# over its runs. One unit (a 64 px epoch of the default CNN on all training patients) took ~10 s on
# this 2-core VM, plus ~10 s per run to start, evaluate and save: 18 units and 12 runs is ~5 minutes
# (bench/studies.py measures them: the 24-unit schedule study of the first draft took 11.5 min while
# other tests shared the CPU).
QUICK_UNITS = 18
QUICK_RUNS = 12


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("key", list(STUDIES))
def test_every_study_is_a_valid_sweep_of_the_built_in_set(key, variant):
    sweep = Sweep.from_dict(study_spec(key, variant))
    study = get_study(key)
    configs = sweep.configs()
    values = sweep.axes[0].values
    assert sweep.study == key and sweep.variant == variant
    assert all(config.data_source == "builtin" for config in configs)
    points = math.prod(len(axis.values) for axis in sweep.axes)  # a grid study sweeps two or three settings
    assert len(configs) == points * (sweep.cv_folds or sweep.repeats)
    assert sweep.cv_folds or sweep.repeats >= 2, "every study repeats its points: an answer with its uncertainty"
    assert all(value in study.values for value in values)
    if study.labels:
        assert sweep.axes[0].labels == [study.label(v) for v in values]
    for config in configs:
        config.validate()
        assert TrainConfig.from_dict(config.to_dict()) == config  # the run folder re-creates it


@pytest.mark.parametrize("key", list(STUDIES))
def test_quick_studies_fit_in_ten_minutes_on_two_cores(key):
    configs = Sweep.from_dict(study_spec(key, "quick")).configs()
    units = sum(c.epochs * c.train_fraction * (c.image_size / 64) ** 2 for c in configs)
    assert units <= QUICK_UNITS and len(configs) <= QUICK_RUNS, (key, units, len(configs))


def test_full_studies_train_on_every_patient_at_full_size():
    for key in STUDIES:
        base = Sweep.from_dict(study_spec(key, "full")).base
        assert base.train_fraction == 1.0 or key == "train_fraction"
        assert base.image_size == 128 or key in ("image_size", "image_size_speed")


def test_a_bad_study_or_variant_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown study 'nope'; choose one of: activation"):
        study_spec("nope")
    with pytest.raises(ValueError, match="unknown variant 'huge'; choose quick or full"):
        study_spec("dropout", "huge")


def test_the_swept_values_are_copies_of_the_declaration():
    spec = study_spec("conv_layers", "quick")
    spec["axes"][0]["values"][0].append(999)
    assert get_study("conv_layers").values[0] == [32]


@pytest.mark.slow
def test_every_studys_models_build():
    from core.ml.models import build_model
    seen = set()
    for key in STUDIES:
        for variant in VARIANTS:
            for config in Sweep.from_dict(study_spec(key, variant)).configs():
                params = dict(config.arch_params)
                if config.arch == "transfer":
                    params["weights"] = "none"  # offline here; the architecture is the same
                wanted = (config.arch, json.dumps(params, sort_keys=True), config.image_size, config.dropout)
                if wanted in seen:
                    continue
                seen.add(wanted)
                model = build_model(config.arch, config.image_size, config.channels, 2, params, config.dropout)
                assert model.output_shape == (None, 2), wanted
    assert len(seen) >= 30


# ----------------------------------------------------------------------------- answers from runs

def constructed_study(store, key: str, accuracies: dict, seconds=None):
    """A finished study whose runs scored `accuracies` (label -> one accuracy per seed), as the
    trainer would have left them, recorded as the study's sweep."""
    spec = study_spec(key, "quick")
    sweep = Sweep.from_dict(spec)
    record = {"id": "sweep-20260101-000000", "created": time.time(), **sweep.to_dict(), "runs": []}
    axis = sweep.axes[0]
    for value, label in zip(axis.values, axis.labels or [str(v) for v in axis.values]):
        for seed, accuracy in enumerate(accuracies[label]):
            run = write_run(store, seed=seed, name=f"{label} seed{seed}", sweep_id=record["id"])
            summary = run.summary()
            summary["test"]["accuracy"] = accuracy
            write_json(run.path / "summary.json", summary)
            record["runs"].append({"run_id": run.id, "point": {axis.setting: value}, "seed": seed, "fold": 0})
    write_json(sweeps_dir(store) / f"{record['id']}.json", record)
    return load_sweep(store, record["id"])


def test_the_answer_names_the_best_dropout_and_the_values_tied_with_it(store):
    record = constructed_study(store, "dropout", {"0.2": [0.80, 0.84], "0.4": [0.90, 0.92],
                                                  "0.6": [0.89, 0.91], "0.8": [0.70, 0.71]})
    frame = studies_view.results_for(store, record)
    sentence = studies_view.answer(record, frame, "test_accuracy")
    assert sentence.startswith("Dropout 0.4 scores best (test accuracy 0.910 ± 0.014, 2 seeds)")
    assert "; 0.4 to 0.6 are within one standard deviation of it" in sentence
    assert "0.8" not in sentence and "0.2" not in sentence


def test_the_answer_reads_the_studys_labels_and_says_when_nothing_stands_out(store):
    record = constructed_study(store, "batch_norm", {"without BatchNorm": [0.85, 0.90],
                                                     "with BatchNorm": [0.86, 0.88]})
    sentence = studies_view.answer(record, studies_view.results_for(store, record), "test_accuracy")
    assert sentence.startswith("No value stands out: both are within one standard deviation")
    assert "(without BatchNorm, test accuracy 0.875 ± 0.035, 2 seeds)" in sentence


def test_the_results_table_and_the_report_carry_the_labels_and_the_answer(store):
    record = constructed_study(store, "augmentation", {"off": [0.80, 0.82],
                                                       "mild (rotate 7°, zoom 10%, shift 5%)": [0.86, 0.87],
                                                       "strong (rotate 15°, zoom 20%, shift 10%, brightness, "
                                                       "contrast)": [0.75, 0.70]})
    frame = studies_view.results_for(store, record)
    table = studies_view.table(record, frame, studies_view.table_metrics(record, "test_accuracy"))
    assert table["augmentation"].tolist()[0] == "off"
    assert table["Test accuracy"].tolist()[1] == "0.865 ± 0.007"
    report = studies_view.report(store, record, "test_accuracy")
    html = study_report.report_html(report)
    assert "Augmentation (quick)" in html and "mild (rotate 7°" in html and "<svg" in html
    assert report.conclusion.startswith("Mild (rotate 7°, zoom 10%, shift 5%) scores best")


# ----------------------------------------------------------------------------- a real study

@pytest.mark.slow
def test_a_quick_study_runs_end_to_end_on_tiny_settings(manager, chest_folder):
    """The model-family study's quick sweep, on a tiny folder at 32 px for one epoch, its logistic
    regression (fitted by scikit-learn) against the CNN: every run trains for real in the same sweep,
    the answer and the report come from their numbers."""
    spec = study_spec("model_family", "quick")
    tiny = tiny_folder_config(chest_folder, epochs=1).to_dict()
    spec["base"] = {**spec["base"], **{k: tiny[k] for k in ("data_source", "data_path", "image_size", "batch_size")},
                    "task": "classes", "train_fraction": 1.0}
    spec["axes"][0].update(values=["logistic_regression", "cnn"], labels=["logistic regression", "CNN"])
    sweep_id = submit_sweep(manager, Sweep.from_dict(spec))
    record = load_sweep(manager.store, sweep_id)
    assert len(record["runs"]) == 4 and record["study"] == "model_family"
    for entry in record["runs"]:
        assert wait_until(lambda: manager.store.get(entry["run_id"]).state() in ("done", "failed"), 300,
                          "a run of the study") and manager.store.get(entry["run_id"]).state() == "done"
    fitted = [manager.store.get(entry["run_id"]) for entry in record["runs"] if entry["point"]["arch"] ==
              "logistic_regression"]
    assert len(fitted) == 2 and all(run.summary()["test"]["accuracy"] is not None for run in fitted)
    assert studies_view.latest_sweeps(manager.store)["model_family"]["id"] == sweep_id
    frame = studies_view.results_for(manager.store, record)
    assert frame["test_accuracy_n"].tolist() == [2, 2]
    assert frame["label"].tolist() == ["logistic regression", "CNN"]
    sentence = studies_view.answer(record, frame, "test_accuracy")
    best = frame.loc[frame["test_accuracy_mean"].idxmax(), "label"]
    assert best.capitalize() in sentence or "stands out" in sentence, sentence
    report = studies_view.report(manager.store, record, "test_accuracy")
    assert report.run_ids == [entry["run_id"] for entry in record["runs"]]
    assert sentence in study_report.report_html(report)


def test_a_study_of_model_shapes_shows_each_models_layers_and_size(store):
    accuracies = {label: [0.8, 0.82] for label in get_study("wide_deep").labels}
    record = constructed_study(store, "wide_deep", accuracies)
    sizes = {}
    for i, entry in enumerate(record["runs"]):
        run = store.get(entry["run_id"])
        params = 1000 * (1 + i // 2)  # the same model for both seeds of a value
        run.write_layer_table([{"layer": "conv2d", "type": "Conv2D", "output_shape": "64 x 64 x 8",
                                "params": params, "macs": 10 * params}])
        summary = run.summary()
        summary["model"] = {"trainable_params": params, "total_params": params, "macs": 10 * params}
        write_json(run.path / "summary.json", summary)
        sizes[json.dumps(entry["point"])] = params
    tables = studies_view.layer_tables(store, record)
    assert [label for label, _ in tables] == list(get_study("wide_deep").labels)
    assert [rows[0]["params"] for _, rows in tables] == [1000, 2000, 3000]
    frame = studies_view.results_for(store, record)
    table = studies_view.table(record, frame, ["test_accuracy"])
    assert table["trainable parameters"].tolist() == ["1.00 k", "2.00 k", "3.00 k"]
    assert studies_view.layer_tables(store, constructed_study(store, "dropout", {
        label: [0.8] for label in ("0.2", "0.4", "0.6", "0.8")})) == []


def test_the_command_line_lists_the_studies_and_refuses_an_unknown_one(capsys):
    from core.cli.sweep import main
    assert main(["--list-studies"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(STUDIES) and listed[0].startswith("activation: Which activation")
    assert main(["--study", "nope"]) == 2
    assert "unknown study 'nope'; choose one of: activation" in capsys.readouterr().err
    assert main([]) == 2
    assert "give a sweep file or --study KEY" in capsys.readouterr().err


def test_every_study_also_runs_on_the_three_class_task():
    for key in STUDIES:
        sweep = studies_view.variant_sweep(key, "quick", "subtype")
        assert {config.task for config in sweep.configs()} == {"subtype"}, key


def test_the_studies_page_shows_a_finished_studys_answer_chart_table_and_report(app_env, store):
    from tests.apptest_support import assert_clean, open_page
    constructed_study(store, "dropout", {"0.2": [0.80, 0.84], "0.4": [0.90, 0.92],
                                         "0.6": [0.89, 0.91], "0.8": [0.70, 0.71]})
    at = open_page("pages/studies.py", {"study_key": "dropout"})
    assert_clean(at)
    assert [h.value for h in at.header] == ["Dropout"]
    assert at.info[0].value.startswith("Dropout 0.4 scores best (test accuracy 0.910 ± 0.014, 2 seeds)")
    assert len(at.get("vega_lite_chart")) == 1, "the chart with error bars"
    table = at.dataframe[0].value
    assert table["dropout"].tolist() == ["0.2", "0.4", "0.6", "0.8"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Report (HTML)", "Report (Markdown + charts, zip)"]


def test_a_running_study_says_the_time_left_until_its_last_run_ends(app_env, store):
    from core.store import runs as runs_lib
    from tests.apptest_support import assert_clean, open_page, texts
    record = constructed_study(store, "dropout", {"0.2": [0.80, 0.84], "0.4": [0.90, 0.92],
                                                  "0.6": [0.89, 0.91], "0.8": [0.70, 0.71]})
    running, queued = (store.get(entry["run_id"]) for entry in record["runs"][-2:])
    running.update_status(state="running", trainer=runs_lib.this_process(), worker=runs_lib.this_process())
    write_json(running.progress_path, {"phase": "training", "eta_s": 60.0})
    queued.update_status(state="queued")  # as its finished siblings: 3 epochs of 2 s in a 30 s run
    at = open_page("pages/studies.py", {"study_key": "dropout"})
    assert_clean(at)
    assert "6 of 8 runs ended · about 1 min 30 s left" in texts(at)


def test_the_plan_names_what_every_run_shares_and_leaves_out_what_the_study_varies():
    assert studies_view.plan_text(studies_view.variant_sweep("dropout", "quick")) == \
        "4 values × 2 seeds = 8 runs of 3 epochs at 64 px on 50% of the training patients"
    assert studies_view.plan_text(studies_view.variant_sweep("train_fraction", "full")) == \
        "4 values × 3 seeds = 12 runs of 30 epochs at 128 px"
    assert studies_view.plan_text(studies_view.variant_sweep("kfold", "quick")) == \
        "2 values × 3 folds = 6 runs of 3 epochs at 64 px on 50% of the training patients"


def test_the_transfer_study_warns_before_launch_when_the_imagenet_weights_are_missing(app_env, monkeypatch, tmp_path):
    from tests.apptest_support import assert_no_exception, open_page
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no weights there
    at = open_page("pages/studies.py", {"study_key": "transfer"})
    assert_no_exception(at)
    warning = " ".join(w.value for w in at.warning)
    assert "The ImageNet weights of mobilenet_v2 are not on this machine" in warning
    assert str(tmp_path / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5") \
        in warning


def test_the_base_study_warns_for_every_base_whose_weights_are_missing(app_env, monkeypatch, tmp_path):
    from tests.apptest_support import assert_no_exception, open_page
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5").touch()
    at = open_page("pages/studies.py", {"study_key": "transfer_base"})
    assert_no_exception(at)
    warning = " ".join(w.value for w in at.warning)
    assert "The ImageNet weights of densenet121, efficientnet_b0, resnet50_v2 are not on this machine" in warning
    assert "mobilenet_v2" not in warning  # its file is there


# ----------------------------------------------------------------------------- the classic reports' studies

def test_the_gallery_has_the_classic_studies_of_the_reports():
    from core.settings.studies import FITS
    new = {"learning_rate": "learning_rate", "optimizer_lr": "optimizer", "patience": "patience",
           "width": "arch_params.filters", "dense_layers": "arch_params.dense_layers",
           "class_weights": "class_weights", "momentum": "momentum"}
    assert {key: STUDIES[key].setting for key in new} == new
    assert all(study.fits in FITS for study in STUDIES.values())
    patience = Sweep.from_dict(study_spec("patience", "quick")).base
    assert patience.early_stopping and patience.epochs > max(get_study("patience").quick.values)
    assert Sweep.from_dict(study_spec("class_weights", "quick")).axes[0].values == ["none", "balanced"]
    assert get_study("class_weights").metric == "test_macro_f1"
    bases = Sweep.from_dict(study_spec("transfer_base", "full"))
    assert bases.axes[0].values == ["mobilenet_v2", "efficientnet_b0", "resnet50_v2", "densenet121"]
    assert {c.arch_params["weights"] for c in bases.configs()} == {"imagenet"} and bases.base.arch == "transfer"
    heads = Sweep.from_dict(study_spec("transfer_head", "full")).axes[0].values
    assert [len(layers) for layers in heads] == [0, 1, 2, 5]  # a head of 0 to 5 dense layers
    widths = [config.arch_params["filters"] for config in Sweep.from_dict(study_spec("width", "full")).configs()]
    assert sorted({tuple(f) for f in widths}) == [(8, 16, 16), (16, 32, 32), (32, 64, 64), (64, 128, 128)]


def test_the_optimizer_studies_compare_plain_optimizers_and_momentum_is_its_own_study():
    from core.settings.config import OPTIMIZERS
    plain = Sweep.from_dict(study_spec("optimizer", "full"))
    assert plain.axes[0].values == ["sgd", "rmsprop", "adam", "adagrad"] and set(plain.axes[0].values) <= set(OPTIMIZERS)
    assert {config.momentum for config in plain.configs()} == {0.0}  # as Keras sets them up, explicitly
    momentum = Sweep.from_dict(study_spec("momentum", "quick"))
    assert momentum.base.optimizer == "sgd" and momentum.axes[0].values == [0.0, 0.5, 0.9, 0.99]


def test_the_optimizer_by_learning_rate_grid_adds_epochs_in_its_full_variant():
    quick, full = (Sweep.from_dict(study_spec("optimizer_lr", v)) for v in VARIANTS)
    assert [a.setting for a in quick.axes] == ["optimizer", "learning_rate"]
    assert [a.setting for a in full.axes] == ["optimizer", "learning_rate", "epochs"]
    assert not full.base.early_stopping  # the epochs axis means what it says
    assert len(full.configs()) == 4 * 3 * 2 * 3
    assert studies_view.plan_text(quick) == "3 × 2 values × 2 seeds = 12 runs of 2 epochs at 64 px on 50% of the " \
                                            "training patients"
    assert studies_view.varies_text(get_study("optimizer_lr")).startswith(
        "optimizer: sgd, rmsprop, adam, adagrad × learning rate: 0.01, 0.001")


def test_every_study_names_what_such_reports_found_and_its_figures_match_its_values():
    for study in STUDIES.values():
        assert study.reference and study.reference.finding and study.reference.source, study.key
        labels = {label for variant in VARIANTS for label in (study.axes(variant)[0].labels or ())}
        for figure in study.reference.figures:
            assert 0 < figure.value < 1 and set(figure.matches) <= labels, (study.key, figure)
            assert study.reference.measured_on, "figures say what data they are of"
    assert [f.value for f in get_study("wide_deep").reference.figures] == [0.76, 0.65, 0.74]
    assert [f.value for f in get_study("transfer").reference.figures] == [0.910, 0.931]


def test_a_study_runs_on_the_loaded_dataset_when_it_fits_else_on_the_built_in_set(store):
    folder = {"data_source": "folder", "data_path": "/data/xrays", "task": "classes", "image_size": 224,
              "color_mode": "rgb", "split": "own", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 7}
    dataset, note = studies_view.study_dataset(get_study("dropout"), folder)
    assert note is None and dataset["data_path"] == "/data/xrays" and "image_size" not in dataset
    sweep = studies_view.variant_sweep("dropout", "quick", dataset=dataset)
    assert (sweep.base.data_source, sweep.base.task, sweep.base.split, sweep.base.image_size) == (
        "folder", "classes", "own", 64)  # the variant keeps its own image size
    dataset, note = studies_view.study_dataset(get_study("kfold"), folder)
    assert dataset == {"task": "binary"} and note.startswith("k-fold cross-validation varies the patient split")
    builtin = {"data_source": "builtin", "task": "binary", "split": "grouped", "test_fraction": 0.2}
    dataset, note = studies_view.study_dataset(get_study("kfold"), builtin, task="subtype")
    assert note is None and (dataset["task"], dataset["test_fraction"]) == ("subtype", 0.2)
    assert studies_view.dataset_text(dataset).startswith("Built-in chest X-rays · ")
    assert [card["fits"] for card in studies_view.gallery(store)][:1] == ["any image set"]


def constructed_grid(store, key: str, accuracy):
    """A finished grid study (quick), each run scoring accuracy(point), recorded as the study's sweep."""
    sweep = Sweep.from_dict(study_spec(key, "quick"))
    record = {"id": "sweep-20260102-000000", "created": time.time(), **sweep.to_dict(), "runs": []}
    settings = [axis.setting for axis in sweep.axes]
    for config in sweep.configs(record["id"]):
        point = {s: config.to_dict()[s] for s in settings}
        run = write_run(store, seed=config.seed - 42, **point)
        summary = run.summary()
        summary["test"]["accuracy"] = accuracy(point) + (config.seed - 42) / 1000
        write_json(run.summary_path, summary)
        record["runs"].append({"run_id": run.id, "point": point, "seed": config.seed, "fold": 0})
    write_json(sweeps_dir(store) / f"{record['id']}.json", record)
    return load_sweep(store, record["id"])


def test_a_grid_study_answers_with_its_best_combination_table_chart_and_report(store):
    record = constructed_grid(store, "optimizer_lr", lambda p: 0.9 if p == {"optimizer": "adam", "learning_rate": 0.001}
                              else 0.7 + p["learning_rate"])
    frame = studies_view.results_for(store, record)
    assert frame["label"].tolist()[:2] == ["optimizer sgd, learning rate 0.01", "optimizer sgd, learning rate 0.001"]
    sentence = studies_view.answer(record, frame, "test_accuracy")
    assert sentence.startswith("Optimizer adam, learning rate 0.001 scores best (test accuracy 0.901 ± 0.001")
    table = studies_view.table(record, frame, ["test_accuracy"])
    assert list(table.columns[:2]) == ["optimizer", "learning rate"] and len(table) == 6
    [(title, chart)] = studies_view.charts(record, frame, "test_accuracy")
    assert chart.to_dict()["title"] == "Test accuracy against optimizer, one line per learning_rate"
    report = studies_view.report(store, record, "test_accuracy")
    html = study_report.report_html(report)
    assert "Optimizer × learning rate (quick)" in html and "What such reports found" in html
    assert "optimizer × learning rate is swept" in html and "Wilson et al., NeurIPS 2017" in html


def test_the_report_puts_such_reports_figures_beside_this_runs(store):
    record = constructed_study(store, "wide_deep", {"wide (2 layers of 96)": [0.80, 0.82],
                                                    "deep (6 thin layers, 16 to 64)": [0.90, 0.92],
                                                    "wide and deep (5 layers, 32 to 256)": [0.85, 0.85]})
    frame = studies_view.results_for(store, record)
    beside = studies_view.beside(record, frame)
    assert beside["figure"].tolist() == ["0.760", "0.650", "0.740"]
    assert beside["test accuracy here"].tolist() == ["0.810 ± 0.014", "0.910 ± 0.014", "0.850 ± 0.000"]
    assert set(beside["on"]) == {"CIFAR-10 (test accuracy)"}
    text, _ = study_report.report_markdown(studies_view.report(store, record, "test_accuracy"))
    assert "**What such reports found.** The wide CNN scored best" in text
    assert "| wide CNN | CIFAR-10 (test accuracy) | 0.760 | wide (2 layers of 96) | 0.810 ± 0.014 |" in text
    assert studies_view.beside(constructed_study(store, "dropout", {label: [0.8] for label in
                                                                      ("0.2", "0.4", "0.6", "0.8")}), frame) is None


def test_the_studies_page_shows_such_reports_figures_beside_the_answer(app_env, store):
    from tests.apptest_support import assert_clean, open_page, texts
    constructed_study(store, "wide_deep", {"wide (2 layers of 96)": [0.80, 0.82],
                                           "deep (6 thin layers, 16 to 64)": [0.90, 0.92],
                                           "wide and deep (5 layers, 32 to 256)": [0.85, 0.85]})
    at = open_page("pages/studies.py", {"study_key": "wide_deep"})
    assert_clean(at)
    assert "What such reports found:** The wide CNN scored best" in texts(at)
    assert "Fits any image set" in texts(at) and "Runs on: Built-in chest X-rays · " in texts(at)
    assert at.info[0].value.startswith("Deep (6 thin layers, 16 to 64) scores best")
    beside = next(d.value for d in at.dataframe if "figure" in d.value.columns)
    assert beside["figure"].tolist() == ["0.760", "0.650", "0.740"]


def test_the_readme_lists_every_study_with_the_datasets_it_fits_and_its_question():
    from pathlib import Path

    from core.settings.studies import FITS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key, study in STUDIES.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| {study.title} (`{key}`) |")), None)
        assert row is not None, f"README's Studies table has no row for {key}"
        assert f"| {FITS[study.fits]} |" in row and study.question in row, key


def test_a_study_of_whole_numbers_reads_its_labels_from_the_results_frame(store):
    record = constructed_study(store, "patience", {"1": [0.80, 0.82], "3": [0.85, 0.86]})
    frame = studies_view.results_for(store, record)
    assert str(frame["patience"].dtype) == "int64"  # NumPy scalars, not the record's ints
    assert studies_view.table(record, frame, ["test_accuracy"])["patience"].tolist() == ["1", "3"]
