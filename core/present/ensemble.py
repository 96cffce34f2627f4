"""What the Evaluate page says of an ensemble (core.ml.ensemble), without Streamlit: this run's headline
numbers beside the ensemble's at one named threshold, and what each cost."""
from __future__ import annotations

from core.ml.decisions import decision_rule
from core.present.evaluation import headline_columns

THIS_RUN = "this run"


def column(ensemble) -> str:
    return f"ensemble of {len(ensemble.run_ids)}"


def comparison_rows(plain: dict, averaged: dict, ensemble, run_seconds: float | None) -> list[dict]:
    """Rows metric | this run (95% CI) | ensemble (95% CI), both bootstrap_intervals results at the same
    threshold, then the cost: forward passes per image and training time."""
    name = column(ensemble)
    rows = headline_columns({THIS_RUN: plain["intervals"], name: averaged["intervals"]}, ensemble.class_names,
                            averaged["threshold"])
    rows.append({"metric": "Cost: forward passes per image", THIS_RUN: "1", name: str(ensemble.passes)})
    rows.append({"metric": "Cost: training time", THIS_RUN: duration(run_seconds),
                 name: duration(ensemble.trained_seconds)})
    return rows


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def caption(ensemble, threshold: float | None) -> str:
    """What was averaged, the one threshold both columns are at, and the ensemble's own."""
    own = (f"Chosen on the members' averaged validation probabilities, the ensemble's own decision would be "
           f"{decision_rule(ensemble.threshold)}." if ensemble.threshold is not None else "")
    return (f"The class probabilities of {len(ensemble.run_ids)} runs ({', '.join(ensemble.run_ids)}) averaged, image "
            f"by image: each run's saved predictions of the same {ensemble.split} images, so scoring it costs "
            f"nothing more; predicting a new image costs a forward pass per member. Both columns at "
            f"{decision_rule(threshold)} (the threshold above), with 95% patient-bootstrap intervals. {own}").strip()


def no_partners(split_label: str) -> str:
    return (f"No other finished run scored these {split_label} images (the same dataset and split). Runs that share "
            "a split (the seed repeats of a sweep point, or a run launched again with another seed and the same "
            "split seed) can be averaged here into an ensemble.")
