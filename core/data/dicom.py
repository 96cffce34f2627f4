"""DICOM decoding, one computation for the Diagnose page's dropped files and DICOM training sets:
the modality LUT (rescale slope/intercept), the VOI LUT (window centre/width), then MONOCHROME1
inverted so bone is bright, as in every other image.

    image, patient = read_dicom(data)   # PIL 'L' or 'RGB', and the PatientID tag ('' when absent)
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.imaging import MAX_PIXELS, ImageError, open_image, stretch_to_uint8

DICOM_EXTENSIONS = (".dcm", ".dicom")


def is_dicom(data: bytes, name: str = "") -> bool:
    """A .dcm/.dicom name, or the "DICM" marker that follows DICOM's 128-byte preamble."""
    return Path(name).suffix.lower() in DICOM_EXTENSIONS or data[128:132] == b"DICM"


def is_dicom_name(name: str) -> bool:
    return Path(name).suffix.lower() in DICOM_EXTENSIONS and not Path(name).name.startswith(".")


def decode_upload(data: bytes, name: str = "") -> Image.Image:
    """Decode uploaded bytes into a PIL image ('L' or 'RGB'); raises ImageError with a clear message."""
    if is_dicom(data, name):
        return decode_dicom(data)
    return open_image(bytes(data))


def decode_dicom(data: bytes) -> Image.Image:
    """The first frame of a DICOM file as 'L' (grayscale, windowed) or 'RGB'."""
    return read_dicom(data)[0]


def read_dicom(data: bytes) -> tuple[Image.Image, str]:
    """(the first frame as 'L' or 'RGB', the PatientID tag or '' when it has none)."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageError("DICOM files need the pydicom package (pip install pydicom); "
                         "export the image as PNG or JPEG instead") from None
    if len(data) == 0:
        raise ImageError("the file is empty (0 bytes)")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise ImageError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if rows * columns > MAX_PIXELS:
        raise ImageError(f"the image is too large ({columns}x{rows} pixels; the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels)")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing pixel data, or a codec pydicom lacks
        raise ImageError(f"the DICOM pixel data cannot be decoded ({exc}); compressed DICOM needs extra "
                         f"codecs (pylibjpeg), or export the image as PNG") from None
    image = _dicom_pixels_to_image(dataset, pixels, apply_modality_lut, apply_voi_lut)
    return image, str(dataset.get("PatientID", "") or "").strip()


def _dicom_pixels_to_image(dataset, pixels: np.ndarray, apply_modality_lut, apply_voi_lut) -> Image.Image:
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]  # a multi-frame series: the first frame
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space
            pixels = convert_color_space(pixels, photometric, "RGB")
        return Image.fromarray(stretch_to_uint8(pixels), mode="RGB")
    image = stretch_to_uint8(apply_voi_lut(apply_modality_lut(pixels, dataset), dataset))
    if photometric == "MONOCHROME1":
        image = 255 - image  # MONOCHROME1 stores bone as dark: invert to the usual look
    return Image.fromarray(image, mode="L")
