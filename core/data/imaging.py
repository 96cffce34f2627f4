"""Decode any image file into the exact pixel array a model was trained on.

Dataset loading, the predict CLI and the Diagnose page all go through `to_model_array`, so an
image is preprocessed the same way at training and at prediction time.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own pixel limit, well below Pillow's decompression-bomb guard (about 179 Mpx raises).
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, in words a user understands."""


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Open and fully decode an image from a path or bytes, as 'L' (grayscale) or 'RGB'."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("the file is empty (0 bytes)")
        stream = io.BytesIO(source)
    else:
        if os.path.getsize(source) == 0:
            raise ImageError("the file is empty (0 bytes)")
        stream = open(source, "rb")
    # Our own pixel limit below decides; Pillow's bomb warning for 40-80 Mpx images would be noise.
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(stream)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"the image is too large ({width}x{height} pixels; the limit is "
                                 f"{MAX_PIXELS // 1_000_000} megapixels)")
            img.load()
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise ImageError("not an image file Pillow can read (is it really a JPEG/PNG?)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"the image data is damaged or truncated ({exc})") from None
    return _normalise_mode(ImageOps.exif_transpose(img))


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Bring every Pillow mode (16-bit, float, palette, alpha, CMYK, 1-bit) to 'L' or 'RGB'."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(stretch_to_uint8(np.asarray(img)), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # X-ray backgrounds are black, so transparent pixels become black, not white.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max map any intensities (12/16-bit PNG, DICOM Hounsfield, float arrays) onto 0-255;
    NaN counts as 0 and a constant image becomes all zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def resize_to_model(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """Convert to 1 or 3 channels and resize to a square (aspect not kept, as the dataset was)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def to_model_array(source: str | os.PathLike | bytes, image_size: int, channels: int) -> np.ndarray:
    """Decode `source` and return uint8 (image_size, image_size, channels) pixels 0-255."""
    return resize_to_model(open_image(source), image_size, channels)


def displayable(image: np.ndarray) -> np.ndarray:
    """(S, S, 1) grayscale -> (S, S), the shape st.image and PIL take; RGB and 2-D stay as they are."""
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not Path(name).name.startswith(".")
