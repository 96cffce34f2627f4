"""Every kind of bad or odd upload, through the decoder and through the Diagnoser the Diagnose page
calls: each is either diagnosed (odd but valid images) or refused with a clear message, and the
Diagnoser keeps working afterwards."""
import io

import numpy as np
import pytest
from PIL import Image

from core.data.imaging import MAX_PIXELS, ImageError
from core.ml import diagnosis as dx
from tests.conftest import copy_run

# the "huge image" case is meant to trip Pillow's warning on its way to our own refusal
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def xray_like(width: int = 256, height: int = 256) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray((120 + 80 * np.sin(x / 23.0) * np.cos(y / 31.0)).astype(np.uint8))


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", **extra) -> bytes:
    """A minimal uncompressed DICOM file (explicit VR little endian) around 16-bit pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- refused, with a reason

def truncated_jpeg() -> bytes:
    data = encode(xray_like(), "JPEG")
    return data[: len(data) // 2]


def huge_png() -> bytes:
    # above our own limit but below Pillow's bomb guard (2x the limit): our message
    return encode(Image.new("1", (8000, 6000)))


def bomb_png() -> bytes:
    # beyond twice the limit, Pillow itself refuses it as a decompression bomb before decoding
    return encode(Image.new("1", (12000, 8000)))


REFUSED = {
    "text with a .jpg name": ("notes.jpg", lambda: b"Patient notes, definitely not a JPEG.\n" * 20,
                              "not an image"),
    "truncated JPEG": ("cut.jpg", truncated_jpeg, "damaged or truncated"),
    "zero bytes": ("empty.png", lambda: b"", "empty"),
    "huge image": ("huge.png", huge_png, "too large"),
    "decompression bomb": ("bomb.png", bomb_png, "decompression bomb"),
    "broken DICOM": ("scan.dcm", lambda: b"\0" * 128 + b"DICM" + b"\x01\x02garbage" * 10, "DICOM"),
    "DICOM without pixels": ("nopixels.dcm", lambda: dicom_bytes(np.zeros((4, 4)))[:-40], "DICOM"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_files_are_refused_with_a_clear_message(case):
    name, make, expected = REFUSED[case]
    with pytest.raises(ImageError, match=expected):
        dx.decode_upload(make(), name)


def test_the_limits_are_those_of_core_imaging():
    assert 8000 * 6000 > MAX_PIXELS and 12000 * 8000 > 2 * MAX_PIXELS
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


# ----------------------------------------------------------------------------- odd but valid

def rgba_png() -> bytes:
    image = xray_like().convert("RGBA")
    image.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))))
    return encode(image)


def palette_png() -> bytes:
    return encode(xray_like().convert("RGB").quantize(colors=16))


def png16() -> bytes:
    values = (np.asarray(xray_like(), dtype=np.uint16) * 16).astype(np.uint16)  # 12-bit range in 16 bits
    return encode(Image.fromarray(values))


def cmyk_jpeg() -> bytes:
    return encode(xray_like().convert("RGB").convert("CMYK"), "JPEG")


ACCEPTED = {
    "RGBA PNG": ("alpha.png", rgba_png, "RGB"),
    "palette PNG": ("palette.png", palette_png, "RGB"),
    "16-bit grayscale PNG": ("deep.png", png16, "L"),
    "CMYK JPEG": ("print.jpg", cmyk_jpeg, "RGB"),
    "1x1 pixel": ("dot.png", lambda: encode(Image.new("L", (1, 1), 200)), "L"),
    "wide panorama": ("pano.jpg", lambda: encode(xray_like(4000, 300), "JPEG"), "L"),
    "16-bit DICOM": ("chest.dcm", lambda: dicom_bytes(np.asarray(xray_like(), dtype=np.uint16) * 16), "L"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_odd_but_valid_images_decode_to_l_or_rgb(case):
    name, make, mode = ACCEPTED[case]
    image = dx.decode_upload(make(), name)
    assert image.mode == mode
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.max() > array.min() or case == "1x1 pixel"


def test_16_bit_png_uses_the_whole_grey_range():
    array = np.asarray(dx.decode_upload(png16(), "deep.png"))
    assert array.min() == 0 and array.max() == 255


def test_dicom_applies_rescale_window_and_monochrome1_inversion():
    ramp = np.tile(np.arange(0, 4000, 4000 / 64, dtype=np.float64), (64, 1)).astype(np.uint16)
    plain = np.asarray(dx.decode_upload(dicom_bytes(ramp), "a.dcm"), dtype=int)
    assert plain[0, 0] == 0 and plain[0, -1] == 255 and (np.diff(plain[0]) >= 0).all()
    inverted = np.asarray(dx.decode_upload(dicom_bytes(ramp, "MONOCHROME1"), "b.dcm"), dtype=int)
    assert np.array_equal(inverted, 255 - plain)
    # a window on the lower half saturates everything above it
    windowed = np.asarray(dx.decode_upload(dicom_bytes(ramp, WindowCenter=1000, WindowWidth=2000), "c.dcm"))
    assert windowed[0, -1] == 255 and (windowed[0] == 255).sum() > 20
    # DICOM is recognised by its "DICM" marker even without the extension
    assert dx.decode_upload(dicom_bytes(ramp), "export").mode == "L"


# ----------------------------------------------------------------------------- through the Diagnoser

@pytest.fixture(scope="module")
def diagnoser(tiny_run, tmp_path_factory):
    """A Diagnoser on a copy of the session's tiny run (it writes its ood.npz into the run)."""
    return dx.Diagnoser(copy_run(tiny_run, tmp_path_factory.mktemp("diagnose-runs")).path)


def test_every_bad_file_becomes_an_error_result_and_the_diagnoser_keeps_working(diagnoser):
    for case, (name, make, expected) in REFUSED.items():
        result = diagnoser.diagnose(make(), name)
        assert not result.ok and expected.lower() in result.error.lower(), case
        assert result.row()["error"] == result.error
    assert diagnoser.diagnose(encode(xray_like()), "fine.png").ok


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_odd_images_are_diagnosed_and_explained_at_their_own_size(diagnoser, case):
    from core.ml.maps import overlay
    name, make, _ = ACCEPTED[case]
    result = diagnoser.diagnose(make(), name)
    assert result.ok, result.error
    assert result.pixels.shape == (32, 32, 1) and result.predicted in diagnoser.class_names
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    heat = diagnoser.heatmap(result, "gradcam")
    assert np.isfinite(heat).all()
    assert overlay(result.image, heat).shape == (result.image.height, result.image.width, 3)


def test_tiny_and_panorama_images_carry_a_warning(diagnoser):
    dot = diagnoser.diagnose(encode(Image.new("L", (1, 1), 200)), "dot.png")
    assert dot.ood.unusual and any("tiny" in reason for reason in dot.ood.reasons)
    pano = diagnoser.diagnose(encode(xray_like(4000, 300), "JPEG"), "pano.jpg")
    assert pano.ood.unusual and any("elongated" in reason for reason in pano.ood.reasons)
