"""Is this image unlike anything the model was trained on? A warning instead of a silent answer.

Two kinds of evidence:
  * feature distance: the Mahalanobis distance of the image's penultimate-layer features (the input
    of the "logits" layer) from the training split's features, flagged above the 99th percentile of
    the validation split's distances;
  * pixel statistics that chest X-rays never have: colour, no contrast, a tiny or very elongated
    picture.

Penultimate features can have thousands of dimensions (logistic: every pixel), so the covariance is
that of probabilistic PCA: the top `MAX_COMPONENTS` principal directions with their own variances,
plus one shared variance for everything outside them. The distance is then
    d^2 = sum_i z_i^2 / variance_i + |residual|^2 / residual_variance
and needs no D x D matrix. The statistics are computed once per run and saved as `ood.npz`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core.files import atomic_path
from core.store.run_folder import Run

OOD_FILE = "ood.npz"
PERCENTILE = 99.0
MAX_COMPONENTS = 256
# A first upload must not wait for features of the whole training set: a fixed random subset is
# plenty for the mean and covariance (and keeps the one-off cost to ~10 s for a 128 px CNN on CPU).
MAX_TRAIN_IMAGES = 1500
MAX_VAL_IMAGES = 1000
COLOURFULNESS_LIMIT = 20.0   # Hasler & Suesstrunk's metric; grayscale X-rays saved as RGB score ~0-3
FLAT_STD_LIMIT = 8.0         # grey-level standard deviation (0-255) below which an image is "flat"
SMALL_SIDE_LIMIT = 64        # pixels
ASPECT_LIMIT = 2.5           # long side / short side
NOISE_CORRELATION_LIMIT = 0.5  # neighbouring pixels of scans and photos correlate at 0.8-1.0, noise at ~0


# ----------------------------------------------------------------------------- the reference

@dataclass
class Reference:
    """The training features' distribution and the distance threshold calibrated on val."""
    mean: np.ndarray             # (D,)
    components: np.ndarray       # (k, D) orthonormal principal directions
    variances: np.ndarray        # (k,)
    residual_variance: float     # per-dimension variance outside the k directions
    threshold: float             # distance flagged as unusual (PERCENTILE of val distances)
    model_mtime: float = 0.0     # the model.keras these features came from

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of (N, D) features."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        projected = centred @ self.components.T
        residual = centred - projected @ self.components
        squared = (projected ** 2 / self.variances).sum(axis=1)
        if self.residual_variance > 0:
            squared += (residual ** 2).sum(axis=1) / self.residual_variance
        return np.sqrt(squared)

    def save(self, path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, mean=self.mean, components=self.components, variances=self.variances,
                         residual_variance=self.residual_variance, threshold=self.threshold,
                         model_mtime=self.model_mtime)

    @classmethod
    def load(cls, path) -> "Reference":
        with np.load(path, allow_pickle=False) as saved:
            return cls(mean=saved["mean"], components=saved["components"], variances=saved["variances"],
                       residual_variance=float(saved["residual_variance"]), threshold=float(saved["threshold"]),
                       model_mtime=float(saved["model_mtime"]))


def fit_reference(train_features: np.ndarray, val_features: np.ndarray, percentile: float = PERCENTILE,
                  max_components: int = MAX_COMPONENTS, model_mtime: float = 0.0) -> Reference:
    """Fit the feature distribution on train and set the threshold at `percentile` of val distances."""
    from sklearn.decomposition import PCA

    train = np.asarray(train_features, dtype=np.float64)
    if len(train) < 3 or len(val_features) == 0:
        raise ValueError(f"need at least 3 training and 1 validation images, got {len(train)} and "
                         f"{len(val_features)}")
    k = min(max_components, train.shape[1], len(train) - 1)
    pca = PCA(n_components=k, svd_solver="full" if train.shape[1] <= 512 else "randomized", random_state=0)
    projected = pca.fit_transform(train)
    residual = (train - pca.mean_) - projected @ pca.components_
    outside = train.shape[1] - k
    # Floors: dead units have zero variance, and an image that wakes them up must come out far,
    # not infinitely far.
    floor = 1e-6 * float(pca.explained_variance_.max(initial=0.0)) + 1e-12
    residual_variance = float((residual ** 2).sum() / (len(train) * outside)) if outside else 0.0
    reference = Reference(mean=pca.mean_, components=pca.components_,
                          variances=np.maximum(pca.explained_variance_, floor),
                          residual_variance=max(residual_variance, floor) if outside else 0.0,
                          threshold=0.0, model_mtime=model_mtime)
    reference.threshold = float(np.percentile(reference.distances(val_features), percentile))
    return reference


# ----------------------------------------------------------------------------- features

def features_model(model):
    """inputs -> [penultimate features (the input of "logits"), probabilities], in one pass."""
    import keras
    return keras.Model(model.inputs, [model.get_layer("logits").input, model.output], name=f"{model.name}_features")


def compute_features(model_with_features, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Penultimate features of uint8 (N, S, S, C) images."""
    features, _ = model_with_features.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype=np.float64).reshape(len(images), -1)


def reference_for_run(run: Run, model_with_features) -> Reference:
    """The run's saved reference, or one computed from its training data now (and saved)."""
    path = run.path / OOD_FILE
    model_mtime = run.model_path.stat().st_mtime
    if path.exists():
        try:
            reference = Reference.load(path)
        except (OSError, KeyError, ValueError):
            reference = None  # unreadable: rebuild it
        if reference is not None and reference.model_mtime == model_mtime:
            return reference
    reference = build_reference(run, model_with_features, model_mtime)
    reference.save(path)
    return reference


def build_reference(run: Run, model_with_features, model_mtime: float = 0.0) -> Reference:
    from core.ml.data_pipeline import load_data
    from core.settings.config import TrainConfig
    dataset, split = load_data(TrainConfig.from_dict(run.config()))
    train = compute_features(model_with_features, dataset.images[subsample(split.train, MAX_TRAIN_IMAGES)])
    val = compute_features(model_with_features, dataset.images[subsample(split.val, MAX_VAL_IMAGES)])
    return fit_reference(train, val, model_mtime=model_mtime)


def subsample(indices: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` of `indices`, a fixed random choice kept in order."""
    if len(indices) <= limit:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))


# ----------------------------------------------------------------------------- one image

@dataclass
class OODResult:
    unusual: bool
    reasons: list[str] = field(default_factory=list)
    distance: float | None = None     # None when no reference is available
    threshold: float | None = None

    def message(self) -> str:
        return ("This image looks unlike the training X-rays, so the prediction is unreliable: "
                + "; ".join(self.reasons) + ".")


def assess(image: Image.Image, features: np.ndarray | None = None, reference: Reference | None = None) -> OODResult:
    """Pixel checks on the decoded original plus, when available, the feature distance."""
    reasons = pixel_warnings(image)
    distance = threshold = None
    if reference is not None and features is not None:
        distance = float(reference.distances(np.asarray(features).reshape(1, -1))[0])
        threshold = reference.threshold
        if distance > threshold:
            reasons.append(f"its features are {distance / threshold:.1f}x farther from the training images "
                           f"than the usual limit (distance {distance:.1f}, limit {threshold:.1f})")
    return OODResult(unusual=bool(reasons), reasons=reasons, distance=distance, threshold=threshold)


def pixel_warnings(image: Image.Image) -> list[str]:
    """Plain-language reasons why `image` (as decoded, L or RGB) does not look like a chest X-ray."""
    width, height = image.size
    small = image.copy()
    small.thumbnail((256, 256))
    reasons = []
    if image.mode == "RGB" and colourfulness(np.asarray(small)) > COLOURFULNESS_LIMIT:
        reasons.append("it is in colour, and X-rays are grayscale")
    if float(np.asarray(small.convert("L"), dtype=np.float64).std()) < FLAT_STD_LIMIT:
        reasons.append("it has almost no contrast (nearly one flat colour)")
    elif neighbour_correlation(image) < NOISE_CORRELATION_LIMIT:
        reasons.append("it looks like random noise (neighbouring pixels are unrelated)")
    if min(width, height) < SMALL_SIDE_LIMIT:
        reasons.append(f"it is tiny ({width}x{height} pixels), so the model sees mostly invented detail")
    if max(width, height) > ASPECT_LIMIT * min(width, height):
        reasons.append(f"it is very elongated ({width}x{height}) and was squashed to a square")
    return reasons


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of a uint8 (H, W, 3) image; 0 for gray."""
    red, green, blue = (rgb[..., i].astype(np.float64) for i in range(3))
    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def neighbour_correlation(image: Image.Image, crop: int = 512) -> float:
    """Correlation of horizontally adjacent grey levels in a central crop at full resolution."""
    width, height = image.size
    left, top = max(0, (width - crop) // 2), max(0, (height - crop) // 2)
    grey = np.asarray(image.convert("L").crop((left, top, left + min(crop, width), top + min(crop, height))),
                      dtype=np.float64)
    if grey.shape[1] < 2 or grey[:, :-1].std() == 0 or grey[:, 1:].std() == 0:
        return 1.0  # too small or flat: nothing noise-like to measure
    return float(np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1])
