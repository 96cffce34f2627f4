"""A saliency map once computed (core/ml/explain.py): whether it is empty (no positive evidence at all),
the verdict of its randomisation sanity check (Adebayo et al., 2018), and how it is drawn over its
X-ray (resized to the image, jet colours, blended at a chosen opacity). numpy and Pillow only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.data.imaging import displayable


SANITY_RHO_LIMIT = 0.5  # a map that keeps a rank correlation this high with a randomised model's map is suspect


def is_empty_map(heatmap: np.ndarray) -> bool:
    """True for a map without any signal (all zero or constant, which `normalise_map` makes all zero)."""
    values = np.asarray(heatmap, dtype=np.float32)
    return values.size == 0 or float(values.max()) <= float(values.min())


def normalise_map(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a map with no positive evidence (all equal) becomes all zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return (values - low) / (high - low)


@dataclass(frozen=True)
class SanityCheck:
    """Adebayo et al. (2018), "Sanity checks for saliency maps": a map that explains what the model
    learned must change when the learned weights are replaced by random ones. rho is the Spearman rank
    correlation between the map and the same map of the model with a re-initialised classifier head;
    None when the randomised model's map is empty (it changed completely)."""
    rho: float | None

    @property
    def changed(self) -> bool:
        return self.rho is None or self.rho < SANITY_RHO_LIMIT

    def verdict(self) -> str:
        """'map changes when the model is randomised: yes (ρ = 0.12)'."""
        value = "the randomised model's map is empty" if self.rho is None else f"ρ = {self.rho:.2f}"
        return f"map changes when the model is randomised: {'yes' if self.changed else 'no'} ({value})"

    def sentence(self) -> str:
        """The verdict (markdown) and what it means, in one line."""
        verdict = self.verdict().replace(": yes", ": **yes**").replace(": no", ": **no**")
        meaning = ("it depends on what the model learned." if self.changed else
                   "it shows the image's structure more than what the model learned; do not read it as evidence.")
        return f"Sanity check: {verdict}: {meaning}"


DEFAULT_OPACITY = 0.45


def _jet_lut() -> np.ndarray:
    """The classic 256-entry jet colormap (blue - cyan - yellow - red) as uint8 RGB, no matplotlib."""
    x = np.linspace(0.0, 1.0, 256)
    channel = lambda centre: np.clip(1.5 - np.abs(4.0 * x - centre), 0.0, 1.0)  # noqa: E731
    return np.round(np.stack([channel(3.0), channel(2.0), channel(1.0)], axis=1) * 255).astype(np.uint8)


JET = _jet_lut()


def resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to `size` = (width, height)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[::-1] == tuple(size):
        return heatmap
    return np.asarray(Image.fromarray(heatmap, mode="F").resize(size, Image.Resampling.BILINEAR))


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to jet colours: uint8 (H, W, 3)."""
    return JET[np.clip(np.round(np.asarray(heatmap) * 255), 0, 255).astype(np.uint8)]


def overlay(image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Blend the coloured map over `image` (PIL or array, any size) at the image's own resolution."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    base = _as_rgb_array(image)
    colours = colorize(resize_map(heatmap, (base.shape[1], base.shape[0])))
    blended = (1.0 - opacity) * base.astype(np.float32) + opacity * colours.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = displayable(np.asarray(image))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array.astype(np.uint8)
