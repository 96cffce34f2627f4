"""Diagnose uploaded files with one run: decode (DICOM too), predict, check for out-of-distribution
input and explain. The Diagnose page is a thin view over `Diagnoser`; build one per run and keep it.

Preprocessing is exactly the run's: the decoded image goes through `core.data.imaging.resize_to_model`
with the run's size and channels, as the training data did.
"""
from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# DICOM decoding is core.data.dicom's, shared with DICOM training sets (one computation).
from core.data.dicom import decode_upload
from core.data.imaging import ImageError, resize_to_model
from core.ml import ood
from core.ml import tta as tta_lib


# ----------------------------------------------------------------------------- one result

@dataclass
class WithTTA:
    """A diagnosis's probabilities averaged over test-time augmentation views, what they decide, and
    their cost: forward passes and seconds, all views and the plain prediction's (the identity view)."""
    probabilities: dict
    predicted: str
    score: float | None
    passes: int
    seconds: float
    plain_seconds: float

    @property
    def extra_seconds(self) -> float:
        return max(self.seconds - self.plain_seconds, 0.0)

    def row(self) -> dict:
        return {"tta_predicted": self.predicted,
                **{f"tta_p_{name}": round(p, 4) for name, p in self.probabilities.items()},
                "tta_score": None if self.score is None else round(self.score, 4)}


@dataclass
class WithEnsemble:
    """A diagnosis's probabilities averaged with other runs' models (an ensemble), what they decide at
    the first run's threshold, and their cost: one forward pass per member, and the seconds they took."""
    probabilities: dict
    predicted: str
    score: float | None
    run_ids: tuple
    seconds: float  # what the other members' forward passes added

    @property
    def passes(self) -> int:
        return len(self.run_ids)

    def row(self) -> dict:
        return {"ensemble_predicted": self.predicted,
                **{f"ensemble_p_{name}": round(p, 4) for name, p in self.probabilities.items()},
                "ensemble_score": None if self.score is None else round(self.score, 4)}


@dataclass
class Diagnosis:
    file: str
    error: str | None = None
    image: Image.Image | None = None        # the decoded original, at its own resolution
    pixels: np.ndarray | None = None        # the model input, uint8 (S, S, C)
    probabilities: dict = field(default_factory=dict)
    predicted: str | None = None            # with the threshold applied
    score: float | None = None              # the disease score the threshold is compared with
    ood: ood.OODResult | None = None
    tta: WithTTA | None = None              # asked for: the same image through core.ml.tta's views
    ensemble: WithEnsemble | None = None    # asked for: averaged with other runs' models

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self) -> dict:
        """One flat dict for the results table and the CSV."""
        if not self.ok:
            return {"file": self.file, "predicted": None, "error": self.error}
        return {"file": self.file, "predicted": self.predicted,
                **{f"p_{name}": round(p, 4) for name, p in self.probabilities.items()},
                "score": None if self.score is None else round(self.score, 4),
                **(self.tta.row() if self.tta else {}),
                **(self.ensemble.row() if self.ensemble else {}),
                "unusual_input": self.ood.unusual if self.ood else None,
                "warning": "; ".join(self.ood.reasons) if self.ood and self.ood.reasons else "",
                "error": ""}


# ----------------------------------------------------------------------------- the service

class Diagnoser:
    """One run's model, explainer and out-of-distribution reference, built once."""

    def __init__(self, run_dir: str | os.PathLike):
        from core.ml.inference import Predictor
        self.predictor = Predictor(run_dir)
        self.run, self.config = self.predictor.run, self.predictor.config
        self.class_names = list(self.predictor.class_names)
        self.threshold = self.predictor.threshold
        self._explainer = None  # built on first use: the CLI never needs it
        self._explainer_lock = threading.Lock()
        self._layer_explainers = {}  # feature layer chosen by the user -> Explainer
        self.features_model = ood.features_model(self.predictor.model)
        self._reference, self.ood_error = None, None
        self._reference_lock = threading.Lock()  # one build, even with several sessions or a warm-up

    @property
    def explainer(self):
        """Grad-CAM on the automatic feature map, saliency and SmoothGrad for this model."""
        from core.ml.explain import Explainer
        with self._explainer_lock:
            if self._explainer is None:
                self._explainer = Explainer(self.predictor.model)
            return self._explainer

    @property
    def has_threshold(self) -> bool:
        """Whether a disease-vs-normal threshold applies (two classes, or one named NORMAL)."""
        from core.ml.metrics import positive_scores
        return positive_scores(np.full((1, len(self.class_names)), 1 / len(self.class_names)),
                               self.class_names) is not None

    def reference(self) -> ood.Reference | None:
        """The run's feature reference, built from its training data on first use; None if impossible."""
        with self._reference_lock:
            if self._reference is None and self.ood_error is None:
                try:
                    self._reference = ood.reference_for_run(self.run, self.features_model)
                except Exception as exc:  # noqa: BLE001 - e.g. the training data moved; diagnosis goes on
                    self.ood_error = ("the out-of-distribution check is off: its training data could not be "
                                      f"used ({exc})")
        return self._reference

    def warm_up(self) -> None:
        """Build the OOD reference and trace the prediction and first heatmap graphs once, for the
        model and its randomised copy (the sanity check), so that the first real upload does not pay
        for them (run it in a background thread: every graph is traced without autograph, so this
        parses no Python source; see core.ml.saliency_graph.graph_layer)."""
        self.reference()
        blank = np.zeros((self.config.image_size, self.config.image_size, self.config.channels), np.uint8)
        try:
            self.features_model.predict_on_batch(blank[None].astype(np.float32))
            for explainer in (self.explainer, self.explainer.randomised()):
                explainer.heatmap(blank, explainer.methods[0], 0)
        except Exception:  # noqa: BLE001 - only an optimisation: a real upload reports any real error
            pass

    def diagnose(self, data: bytes, name: str, threshold: float | None = None, with_tta: bool = False,
                 views=tta_lib.VIEWS) -> Diagnosis:
        """Decode, preprocess, predict and check one uploaded file; errors become Diagnosis.error.
        `with_tta` adds the probabilities averaged over `views` (Diagnosis.tta)."""
        try:
            image = decode_upload(data, name)
            pixels = resize_to_model(image, self.config.image_size, self.config.channels)
        except ImageError as exc:
            return Diagnosis(file=name, error=str(exc))
        features, probabilities = self.features_model.predict_on_batch(pixels[None].astype(np.float32))
        probabilities = np.asarray(probabilities, dtype=np.float64)[0]
        threshold = self.threshold if threshold is None else threshold
        predicted, score = self.decide(probabilities, threshold)
        return Diagnosis(file=name, image=image, pixels=pixels,
                         probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
                         predicted=predicted, score=score,
                         ood=ood.assess(image, np.asarray(features), self.reference()),
                         tta=self.with_tta(pixels, threshold, views) if with_tta else None)

    def with_tta(self, pixels: np.ndarray, threshold: float | None, views=tta_lib.VIEWS) -> WithTTA:
        """The model input's probabilities averaged over `views`, through the same prediction as
        `diagnose` (so the identity view alone gives its probabilities exactly)."""
        result = tta_lib.predict_views(lambda images: self.features_model.predict_on_batch(images)[1], pixels[None],
                                   views)
        probabilities = result.probabilities[0].astype(np.float64)
        predicted, score = self.decide(probabilities, threshold)
        return WithTTA({c: float(p) for c, p in zip(self.class_names, probabilities)}, predicted, score,
                       result.passes, result.seconds, result.plain_seconds or 0.0)

    def probabilities_of(self, image: Image.Image) -> np.ndarray:
        """The model's class probabilities of a decoded image, preprocessed as in its training."""
        pixels = resize_to_model(image, self.config.image_size, self.config.channels)
        return np.asarray(self.features_model.predict_on_batch(pixels[None].astype(np.float32))[1], np.float64)[0]

    def with_ensemble(self, diagnosis: Diagnosis, others: list, threshold: float | None) -> WithEnsemble:
        """`diagnosis` (of this model) averaged with the models of `others` (Diagnosers of runs with the
        same classes; each preprocesses the image as its own training did), decided at `threshold`."""
        for other in others:
            if other.class_names != self.class_names:
                raise ValueError(f"run {other.run.id} tells apart {', '.join(other.class_names)}, not "
                                 f"{', '.join(self.class_names)}: an ensemble averages the same classes")
        began = time.perf_counter()
        own = np.array([diagnosis.probabilities[name] for name in self.class_names])
        probabilities = np.mean([own, *(other.probabilities_of(diagnosis.image) for other in others)], axis=0)
        seconds = time.perf_counter() - began
        predicted, score = self.decide(probabilities, self.threshold if threshold is None else threshold)
        return WithEnsemble({c: float(p) for c, p in zip(self.class_names, probabilities)}, predicted, score,
                            (self.run.id, *(other.run.id for other in others)), seconds)

    def decide(self, probabilities: np.ndarray, threshold: float | None) -> tuple[str, float | None]:
        """(predicted class, disease score): the score against the threshold, or argmax without one."""
        from core.ml.metrics import positive_scores, predict_with_threshold
        probabilities = np.asarray(probabilities, dtype=np.float64)[None]
        index = int(predict_with_threshold(probabilities, self.class_names, threshold)[0])
        scores = positive_scores(probabilities, self.class_names)
        return self.class_names[index], None if scores is None else float(scores[0])

    def heatmap(self, diagnosis: Diagnosis, method: str, class_name: str | None = None,
                feature_layer: str | None = None) -> np.ndarray:
        """The method's map for the predicted class or `class_name`, Grad-CAM on the automatic
        feature map or on `feature_layer` (raises ExplainError when the map is not defined)."""
        class_index = self.class_names.index(class_name or diagnosis.predicted)
        return self.explainer_for_layer(feature_layer).heatmap(diagnosis.pixels, method, class_index)

    def explanation(self, diagnosis: Diagnosis, method: str, class_name: str | None = None,
                    feature_layer: str | None = None):
        """What the page shows: the map (an empty class-activation map replaced as explain.CAM_FALLBACKS
        says), the method drawn, the class explained and the randomisation sanity check."""
        from core.ml.explain import explain_image
        class_index = self.class_names.index(class_name or diagnosis.predicted)
        return explain_image(self.explainer_for_layer(feature_layer), diagnosis.pixels, method, class_index,
                             self.class_names)

    def explainer_for_layer(self, feature_layer: str | None):
        from core.ml.explain import Explainer
        if feature_layer is None or feature_layer == self.explainer.feature_layer:
            return self.explainer
        if feature_layer not in self._layer_explainers:
            self._layer_explainers[feature_layer] = Explainer(self.predictor.model, feature_layer=feature_layer)
        return self._layer_explainers[feature_layer]

    def feature_layers(self) -> list[str]:
        """Layers Grad-CAM can be pointed at instead of the automatic choice (none without convolutions)."""
        from core.ml.saliency_graph import feature_map_candidates
        return [] if self.explainer.cam_unavailable else feature_map_candidates(self.predictor.model)


# ----------------------------------------------------------------------------- choosing a run

ARCHS_WITHOUT_GRADCAM = ("mlp", "logistic")  # no convolution, so no feature map to weight


def diagnosable_runs(store) -> list:
    """Runs with a saved model that are not queued or running (done, cancelled, interrupted, even
    failed after a best epoch was saved), newest first."""
    from core.store.run_folder import ACTIVE_STATES
    return [run for run in store.list() if run.state() not in ACTIVE_STATES and run.has_model()]


def run_quality(run) -> tuple:
    """Sort key: test AUC, then test macro-F1 (missing metrics rank last), then whether the model
    has Grad-CAM, then whether the run finished."""
    test = run.summary().get("test") or {}
    metrics = tuple(float(test[key]) if test.get(key) is not None else float("-inf") for key in ("auc", "macro_f1"))
    return (*metrics, has_gradcam(run), run.state() == "done")


def has_gradcam(run) -> bool:
    """Whether the run's architecture has convolutions for Grad-CAM (read from its config, no model load)."""
    return run.config().get("arch") not in ARCHS_WITHOUT_GRADCAM


def best_run(runs):
    """The run with the best test AUC (ties: macro-F1, a model with Grad-CAM, a finished run, then
    the newest), or None."""
    return max(runs, key=run_quality, default=None)  # runs are newest first and max keeps the first best


def state_note(run) -> str:
    """"" for a finished run, else its state for labels, e.g. "cancelled, best epoch 3"."""
    state = run.state()
    if state == "done":
        return ""
    epoch = run.summary().get("best_epoch")
    return state if epoch is None else f"{state}, best epoch {epoch}"


def thumbnail_data_url(image: Image.Image, size: int = 64) -> str:
    """A small PNG as a data: URL, for image columns in tables."""
    import base64
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
