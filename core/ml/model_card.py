"""A run's model card (model_card.md, and a self-contained HTML page): what the model is, what it
was trained and tested on, how well it does with 95% patient-bootstrap intervals, how calibrated
it is, where else it was tested, and what it is not for.

Only facts from the run folder go in; what an older run did not save reads "not recorded". The
card is built as a list of blocks (`Heading`, `Paragraph`, `Bullets`, `Table`) that core/document.py
renders to Markdown or to HTML, as it renders a study's report: both say the same, and every text is
escaped once, there.
"""
from __future__ import annotations

import time
from pathlib import Path

from core import document
from core.document import Bullets, Document, Heading, Paragraph, Table
from core.files import write_text
from core.ml import calibration as calibration_lib
from core.ml import intervals as intervals_lib
from core.ml.decisions import VALIDATION_CHOSEN, metric_label
from core.settings import architectures
from core.settings.config import with_used_dropout
from core.store.run_folder import Run

NOT_RECORDED = "not recorded"
N_RESAMPLES = 1000
CONFIDENCE = 0.95
# bootstrap_intervals key -> what the card calls it (recall:<class> rows follow these)
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
                 "auc": "AUC", "macro_ovr_auc": "Macro one-vs-rest AUC", "average_precision": "Average precision",
                 "sensitivity": "Sensitivity (disease recall)", "specificity": "Specificity (normal recall)"}
SPLITS = ("train", "val", "test")
SPLIT_TITLES = {"train": "Training", "val": "Validation", "test": "Test"}


# ----------------------------------------------------------------------------- the blocks

def facts(pairs) -> Table:
    """A two-column table of (what, value) pairs."""
    return Table(("Item", "Value"), tuple((str(k), text(v)) for k, v in pairs))


# ----------------------------------------------------------------------------- formatting

def text(value) -> str:
    """A value as the card writes it; None is 'not recorded'."""
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"  # a setting as it was typed: 0.001, 0.25, 1e-05
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or "none"
    return str(value)


def number(value, digits: int = 3) -> str:
    if value is None:
        return NOT_RECORDED
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"


def count(value) -> str:
    return NOT_RECORDED if value is None else f"{int(value):,}"


def with_interval(entry: dict | None) -> str:
    """'0.845 (0.814-0.871)' from a bootstrap_intervals entry."""
    if not entry or entry.get("value") is None:
        return NOT_RECORDED
    bounds = intervals_lib.interval_bounds(entry)
    if bounds is None:
        return f"{number(entry['value'])} ({intervals_lib.no_interval_reason(entry)})"
    return f"{number(entry['value'])} ({number(bounds[0])}-{number(bounds[1])})"


def when(timestamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else NOT_RECORDED


# ----------------------------------------------------------------------------- what the run holds

def intervals(run: Run, split: str, threshold) -> dict | None:
    """bootstrap_intervals of the run's saved predictions of `split` (None without them)."""
    saved = run.predictions(split)
    if saved is None:
        return None
    return intervals_lib.bootstrap_intervals(saved["probabilities"], saved["labels"], saved["class_names"],
                                           saved["patient_ids"], threshold=threshold,
                                           n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=0)


def temperature(run: Run) -> dict | None:
    val, test = run.predictions("val"), run.predictions("test")
    if val is None or test is None:
        return None
    return calibration_lib.temperature_report(val, test)


def resolved_params(config: dict) -> dict:
    """The architecture's parameters as the run built it (defaults filled in), but the dropout: the
    card names that once, under the training procedure."""
    config = with_used_dropout(config)
    try:
        params = architectures.resolve_params(config.get("arch"), config.get("arch_params"))
    except ValueError:  # an architecture or parameter this version no longer knows
        params = dict(config.get("arch_params") or {})
    params.pop("dropout", None)
    return params


def loss_text(config: dict) -> str:
    """The training loss: cross-entropy (runs saved before the setting existed), or focal with its gamma."""
    if config.get("loss") == "focal":
        return f"focal (gamma {text(float(config.get('focal_gamma', 2.0)))})"
    return "cross-entropy"


def averaging_text(config: dict) -> str:
    """Weight averaging: off (also for runs saved before the setting existed), or its EMA momentum."""
    momentum = config.get("ema_momentum") or 0
    return f"exponential moving average, momentum {text(float(momentum))}" if momentum else "off"


def dropout_text(config: dict) -> str:
    """The dropout rate the model was built with, and where it came from."""
    used = with_used_dropout(config)["dropout"]
    if used is None:
        return "none (the architecture has no dropout)"
    own = config.get("dropout") is not None or "dropout" in (config.get("arch_params") or {})
    return text(float(used)) if own else f"{text(float(used))} (the architecture's default)"


def architecture_title(arch) -> str:
    known = architectures.ARCHITECTURES.get(arch)
    return f"{known.title} ({arch})" if known else text(arch)


# ----------------------------------------------------------------------------- the sections

def final_state(status: dict, summary: dict) -> str | None:
    """The run's state; the card of a run that just finished is written before its status says so."""
    if status.get("state") == "running" and summary:
        return "cancelled (its best epoch kept)" if summary.get("cancelled") else "done"
    return status.get("state")


def trained_at(run: Run, status: dict, summary: dict) -> float | None:
    """When training ended: status' finished time, else when the summary was written."""
    if status.get("finished"):
        return status["finished"]
    return run.summary_path.stat().st_mtime if summary and run.summary_path.exists() else status.get("created")


def model_details(run: Run, config: dict, summary: dict) -> list:
    model, status = summary.get("model") or {}, run.status()
    channels = {"grayscale": 1, "rgb": 3}.get(config.get("color_mode"))
    size = config.get("image_size")
    layers = run.layer_table()
    params = resolved_params(config)
    return [Heading("Model details"), facts([
        ("Name", run.display_name()), ("Run id", run.id),
        ("Trained", when(trained_at(run, status, summary))), ("State", final_state(status, summary)),
        ("Architecture", architecture_title(config.get("arch"))),
        ("Architecture parameters", "; ".join(f"{k} = {text(v)}" for k, v in params.items()) or "none"),
        ("Trainable parameters", count(model.get("trainable_params"))),
        ("Total parameters", count(model.get("total_params"))),
        ("MACs per image", count(model.get("macs"))),
        ("Layers", count(len(layers)) if layers else NOT_RECORDED),
        ("Input", f"{size} x {size} px, {channels} channel(s), raw 0-255 pixels" if size and channels
         else NOT_RECORDED),
        ("Output", "softmax probabilities of " + text(summary.get("class_names"))),
        *[("Warning", warning) for warning in summary.get("warnings") or []],  # e.g. no ImageNet weights
        ("Files", exported_files(run)),
    ])]


def exported_files(run: Run) -> str:
    names = [("model.keras", run.model_path), ("saved_model/", run.saved_model_dir / "saved_model.pb"),
             ("model.tflite", run.tflite_path)]
    present = [name for name, path in names if path.exists()]
    return ", ".join(present) or "no model saved"


def training_data(config: dict, summary: dict, environment: dict) -> list:
    dataset, split = summary.get("dataset") or {}, summary.get("split") or {}
    source = config.get("data_source")
    blocks = [Heading("Training data"), facts([
        ("Source", "built-in chest X-ray set" if source == "builtin" else source),
        ("Location", environment.get("dataset_source") or config.get("data_path") or None),
        ("Content hash", dataset.get("content_hash") or environment.get("dataset_hash")),
        ("Images", count(dataset.get("images"))), ("Patients", count(dataset.get("patients"))),
        ("Classes", ", ".join(f"{name} ({count(n)})" for name, n in (dataset.get("class_counts") or {}).items())
         or summary.get("class_names")),
        ("Task", config.get("task")),
        ("Images skipped (unreadable)", dataset.get("skipped")),
    ])]
    return blocks + split_section(split, config)


def split_section(split: dict, config: dict) -> list:
    heading = Heading("The split", 3)
    if not split:
        return [heading, Paragraph(f"Split: {NOT_RECORDED}.")]
    mode = ("grouped by patient: no patient has images in two splits" if split.get("mode") == "grouped"
            else "the dataset's own train/val/test folders")
    counts, patients = split.get("counts") or {}, split.get("patients") or {}
    classes = sorted({name for per_class in counts.values() for name in per_class})
    rows = tuple((SPLIT_TITLES[s], count(patients.get(s)), count(sum((counts.get(s) or {}).values())),
                  *(count((counts.get(s) or {}).get(c)) for c in classes)) for s in SPLITS if s in counts)
    overlap = split.get("overlap") or {}
    leak = ("Leak check: " + ("FAILED, patients in two splits: " if split.get("leaks") else "passed, ")
            + ", ".join(f"{pair} {n}" for pair, n in overlap.items()) + " patients shared.") if overlap \
        else f"Leak check: {NOT_RECORDED}."
    seed = config.get("split_seed") if config.get("split_seed") is not None else config.get("seed")
    return [heading, Paragraph(f"Mode: {mode}; split seed {text(seed)}."),
            Table(("Split", "Patients", "Images", *classes), rows), Paragraph(leak),
            *([Bullets(tuple(split["warnings"]))] if split.get("warnings") else [])]


def augmentation_text(augmentation: dict | None) -> str:
    if augmentation is None:
        return NOT_RECORDED
    active = [f"{name} {text(value)}" for name, value in augmentation.items() if value]
    return ", ".join(active) or "none"


def training_procedure(config: dict, summary: dict) -> list:
    stopping = (f"on {config.get('monitor')}, patience {config.get('patience')}" if config.get("early_stopping")
                else "off") if "early_stopping" in config else None
    return [Heading("Training procedure"), facts([
        ("Optimizer", config.get("optimizer")), ("Learning rate", config.get("learning_rate")),
        ("Schedule", config.get("schedule")), ("Weight decay", config.get("weight_decay")),
        ("Batch size", config.get("batch_size")), ("Dropout", dropout_text(config)),
        ("Label smoothing", config.get("label_smoothing")), ("Loss", loss_text(config)),
        ("Weight averaging", averaging_text(config)),
        ("Epochs", f"{text(summary.get('epochs_run'))} run of {text(config.get('epochs'))}"),
        ("Best epoch (kept)", summary.get("best_epoch")), ("Early stopping", stopping),
        ("Augmentation (training only)", augmentation_text(config.get("augmentation"))),
        ("Class weights", config.get("class_weights")), ("Seed", config.get("seed")),
        ("Training time (s)", summary.get("seconds")), ("Device", (summary.get("resources") or {}).get("device")),
    ])]


def metric_rows(by_split: dict[str, dict | None], threshold) -> tuple:
    """One row per bootstrapped metric, labelled with the decision rule it depends on ('Accuracy @
    threshold 0.43'), one column per split."""
    keys = []
    for result in by_split.values():
        keys += [k for k in (result or {}).get("intervals", {}) if k not in keys]
    recalls = [k for k in keys if k.startswith("recall:")]
    if "sensitivity" in keys and len(recalls) == 2:  # two classes: the recalls are sensitivity and specificity
        keys = [k for k in keys if k not in recalls]
    label = {**METRIC_LABELS, **{k: f"Recall of {k.split(':', 1)[1]}" for k in recalls}}
    return tuple((metric_label(label.get(k, k), k, threshold),
                  *(with_interval((r or {}).get("intervals", {}).get(k)) for r in by_split.values())) for k in keys)


def evaluation(run: Run, summary: dict) -> list:
    threshold = summary.get("threshold")
    by_split = {split: intervals(run, split, threshold) for split in ("val", "test")}
    blocks = [Heading("Evaluation")]
    decided_at = next((r["threshold"] for r in by_split.values() if r), threshold)  # None: no binary view
    decision = (f"Decisions use the threshold {number(decided_at, 2)} on the disease score, {VALIDATION_CHOSEN}."
                if decided_at is not None else "Decisions take the most likely class (argmax).")
    if not any(by_split.values()):
        return blocks + [Paragraph(f"Predictions: {NOT_RECORDED}; the summary's figures follow, without "
                                   "intervals."), summary_only(summary)]
    sizes = [f"{SPLIT_TITLES[s].lower()} {count(r['n_images'])} images of {count(r['n_patients'])} patients"
             for s, r in by_split.items() if r]
    blocks += [Paragraph(f"{decision} Intervals: {CONFIDENCE:.0%} percentile bootstrap over patients "
                         f"({N_RESAMPLES} resamples; {'; '.join(sizes)})."),
               Table(("Metric", "Validation (95% CI)", "Test (95% CI)"), metric_rows(by_split, decided_at))]
    return blocks + [threshold_free(summary)]


def threshold_free(summary: dict) -> Table:
    """Log loss and Brier score of the saved summary (no interval)."""
    rows = tuple((title, *(number((summary.get(s) or {}).get(key)) for s in ("val", "test")))
                 for title, key in (("Log loss", "log_loss"), ("Brier score", "brier")))
    return Table(("Probability score", "Validation", "Test"), rows)


def summary_only(summary: dict) -> Table:
    """The summary's own figures, labelled with the rule they were decided at (argmax in runs
    saved before their figures were at the validation-chosen threshold)."""
    figures = summary.get("test") or summary.get("val")
    rows = tuple((metric_label(METRIC_LABELS[key], key, figures["threshold"]) if figures else METRIC_LABELS[key],
                  *(number((summary.get(s) or {}).get(key)) for s in ("val", "test")))
                 for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "average_precision"))
    return Table(("Metric", "Validation", "Test"), rows)


def calibration(run: Run) -> list:
    report = temperature(run)
    heading = Heading("Calibration")
    if report is None:
        return [heading, Paragraph(f"Calibration: {NOT_RECORDED} (the run has no saved val and test predictions).")]
    rows = tuple((SPLIT_TITLES[s], number(report[s]["ece"]["before"]), number(report[s]["ece"]["after"]),
                  number(report[s]["nll"]["before"]), number(report[s]["nll"]["after"])) for s in ("val", "test"))
    return [heading,
            Paragraph(f"Temperature scaling fitted on the validation split: T = {number(report['temperature'])} "
                      "(probabilities become softmax(log p / T)). ECE is the top-label expected calibration "
                      "error over 10 bins; NLL the negative log-likelihood. The exported models give the "
                      "probabilities before scaling."),
            Table(("Split", "ECE before", "ECE after", "NLL before", "NLL after"), rows)]


def external_validation(run: Run) -> list:
    results = run.external_results()
    heading = Heading("External validation")
    if not results:
        return [heading, Paragraph("None yet: this model has been evaluated only on its own test split.")]
    blocks = [heading]
    for result in results:
        found = result.get("intervals") or {}
        found = found if "intervals" in found else {"intervals": found}  # the bootstrap dict, or its entries
        rate = result.get("ood_rate")
        blocks += [Heading(f"{result.get('name', 'unnamed')}", 3),
                   Paragraph(f"{count(result.get('n_images'))} images, evaluated "
                             f"{when(result.get('evaluated'))}; out-of-distribution rate "
                             f"{NOT_RECORDED if rate is None else f'{rate:.1%}'}; against the training images, "
                             f"{shift_text(result.get('shift'))}; {seen_text(result.get('seen'))}."),
                   Table(("Metric", "External (95% CI)"),
                         metric_rows({"external": found}, (result.get("metrics") or {}).get("threshold")))]
    return blocks


def shift_text(shift: dict | None) -> str:
    """'brightness median 157 vs 123 in training (percentile 95 of the training images), contrast ...'."""
    if not shift:
        return f"brightness and contrast {NOT_RECORDED}"
    return ", ".join(f"{name} median {v['external_median']:.0f} vs {v['training_median']:.0f} in training "
                     f"(percentile {v['median_percentile']:.0f} of the training images)" for name, v in shift.items())


def seen_text(seen: dict | None) -> str:
    """'none of its images seen in training or validation', or how many were (the same picture or patient)."""
    if seen is None:
        return f"overlap with the training and validation images {NOT_RECORDED}"
    if not seen["seen"]:
        return "none of its images seen in training or validation"
    return (f"{seen['seen']} of its images seen in training or validation ({seen['same_pictures']} the same "
            f"picture, {seen['same_patient_ids']} a patient id of theirs): these results are optimistic")


def intended_use(config: dict, summary: dict) -> list:
    size = config.get("image_size")
    population = ("The built-in set is pediatric chest X-rays (patients aged one to five) of a single "
                  "hospital, Guangzhou Women and Children's Medical Center (Kermany et al. 2018, Mendeley "
                  "Data v2, doi:10.17632/rscbjbr9sj.2), labelled normal or pneumonia: results need not carry "
                  "over to adults, other hospitals, scanners or views." if config.get("data_source") == "builtin"
                  else "The training data are those named above: the model knows only their population, "
                       "hospitals and scanners.")
    return [Heading("Intended use and limitations"), Bullets((
        "Research and teaching tool. NOT FOR CLINICAL USE: not a medical device, not validated for "
        "diagnosis, screening or triage.",
        population,
        f"Images are reduced to {text(size)} x {text(size)} px, far below diagnostic resolution.",
        "Patients are identified from file names; where a name carries no patient, each image counts as "
        "its own patient, and the split and the intervals may then be optimistic.",
        "The decision threshold and the temperature were chosen on the validation split; the test figures "
        "are the unbiased ones." if summary.get("threshold") is not None else
        "The test figures are the unbiased ones; validation figures guided training.",
        "Images unlike the training data (other body parts, other modalities) still get a confident answer: "
        "check the out-of-distribution warning of the Diagnose page.",
    ))]


def environment_section(environment: dict) -> list:
    keys = (("Python", "python"), ("TensorFlow", "tensorflow"), ("Keras", "keras"), ("NumPy", "numpy"),
            ("Data pipeline", "data_pipeline"))
    if not environment:
        return [Heading("Environment"), Paragraph(f"Environment: {NOT_RECORDED}.")]
    return [Heading("Environment"), facts([(title, environment.get(key)) for title, key in keys])]


def card_blocks(run: Run) -> list:
    """Every block of the card, in order."""
    config, summary, environment = run.config(), run.summary(), run.environment()
    return [Heading(f"Model card: {config.get('name') or run.id}", 1),
            *model_details(run, config, summary), *training_data(config, summary, environment),
            *training_procedure(config, summary), *evaluation(run, summary), *calibration(run),
            *external_validation(run), *intended_use(config, summary), *environment_section(environment),
            Paragraph(f"Generated by CXR Lab from the run folder on {when(time.time())}.")]


# ----------------------------------------------------------------------------- rendering

STYLE = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:0.5rem 0}td,th{border:1px solid #ccc;padding:0.2rem 0.6rem;"
         "text-align:left}th{background:#f2f2f2}h1{font-size:1.6rem}h2{margin-top:1.6rem}")


def card_document(blocks: list) -> Document:
    return Document(title=blocks[0].text, blocks=blocks, style=STYLE)


def model_card(run: Run) -> str:
    """The card as Markdown."""
    return document.markdown(card_document(card_blocks(run)))


def model_card_both(run: Run) -> tuple[str, str]:
    """(Markdown, HTML) of one card, its intervals bootstrapped once."""
    card = card_document(card_blocks(run))
    return document.markdown(card), document.html_page(card)


def card_sources(run: Run) -> tuple:
    """What the card is made of, as (file, modification time) pairs: a cache key that changes when
    the run's summary, predictions, exports or external results do."""
    paths = [run.config_path, run.status_path, run.summary_path, run.environment_path, run.layers_path,
             run.predictions_path("val"), run.predictions_path("test"), run.model_path,
             run.saved_model_dir / "saved_model.pb", run.tflite_path, *sorted(run.external_dir.glob("*.json"))]
    return tuple((path.name, path.stat().st_mtime_ns if path.exists() else None) for path in paths)


def write_model_card(run: Run) -> Path:
    """Write the Markdown card to run.model_card_path (atomically); returns the path."""
    if not run.config_path.exists():
        raise FileNotFoundError(f"{run.path} is not a run folder (no config.json)")
    write_text(run.model_card_path, model_card(run))
    return run.model_card_path
