"""What the Evaluate page says of test-time augmentation (core.ml.tta), without Streamlit: the
headline numbers without and with it side by side at one named threshold, and what it cost."""
from __future__ import annotations

from core.ml.decisions import decision_rule
from core.ml.tta import NOT_A_VIEW, views_sentence
from core.present.evaluation import headline_columns

PLAIN, WITH_TTA = "plain", "with TTA"


def comparison_rows(plain: dict, with_tta: dict, saved: dict, class_names) -> list[dict]:
    """Rows metric | plain (95% CI) | with TTA (95% CI) for every headline number, both columns from
    bootstrap_intervals at the same threshold (which the labels name), then the cost: forward passes
    per image and the measured seconds."""
    rows = headline_columns({PLAIN: plain["intervals"], WITH_TTA: with_tta["intervals"]}, class_names,
                            with_tta["threshold"])
    rows.append({"metric": "Cost: forward passes per image", PLAIN: "1", WITH_TTA: str(saved["passes"])})
    rows.append({"metric": f"Cost: seconds for {int(saved['images'])} images", PLAIN: seconds(saved["plain_seconds"]),
                 WITH_TTA: seconds(saved["seconds"])})
    return rows


def seconds(value: float) -> str:
    return "—" if value != value else f"{value:.2f} s"  # NaN: no identity view was timed


def caption(saved: dict, threshold: float | None) -> str:
    """The views, why no flip, and the one threshold both columns are at."""
    return (f"The model's probabilities averaged over {views_sentence(saved['views'])}. {NOT_A_VIEW} Both columns at "
            f"{decision_rule(threshold)} (the threshold above), with 95% patient-bootstrap intervals; the views were "
            "predicted once for the run's current model and saved in its folder (tta_<split>.npz).")


def offer(split_label: str) -> str:
    """What the button does, before it is pressed."""
    return (f"Score the {split_label} split again, the model's probabilities averaged over {views_sentence()}: "
            f"a forward pass per view, so about that many times the plain prediction's time. {NOT_A_VIEW}")
