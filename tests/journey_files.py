"""Files a person might drop on the Diagnose page, written for the browser journey: a real X-ray
from the built-in set, a colourful photo, and broken or unusual files (empty, text named .jpg,
truncated JPEG, 16-bit PNG, RGBA PNG, a decompression bomb)."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BOMB_SIDE = 20_000  # 400 megapixels of one colour: a few tens of KB as a 1-bit PNG


def real_xray(folder: Path) -> Path:
    """The first PNEUMONIA JPEG of the built-in set, as its own file."""
    from core.data.sources import BUILTIN_ZIP
    with zipfile.ZipFile(BUILTIN_ZIP) as archive:
        name = next(n for n in sorted(archive.namelist()) if "/PNEUMONIA/" in n and n.endswith(".jpeg"))
        path = folder / Path(name).name
        path.write_bytes(archive.read(name))
    return path


def photo(folder: Path, seed: int = 0) -> Path:
    """A colourful street scene: blue sky, a green lawn, coloured buildings with lit windows, noise."""
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    sky = np.linspace([70, 130, 230], [180, 215, 255], height // 2).astype(np.uint8)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2] = sky[:, None, :]
    pixels[height // 2:] = (60, 160, 60)
    scene = Image.fromarray(pixels)
    draw = ImageDraw.Draw(scene)
    colours = [(200, 60, 50), (240, 190, 40), (90, 90, 200), (230, 120, 170), (120, 70, 40)]
    x = 10
    while x < width - 40:
        building_width, top = int(rng.integers(50, 110)), int(rng.integers(80, 220))
        draw.rectangle([x, top, x + building_width, height - 60], fill=colours[x % len(colours)])
        for wy in range(top + 10, height - 80, 25):
            for wx in range(x + 8, x + building_width - 12, 18):
                draw.rectangle([wx, wy, wx + 8, wy + 12], fill=(255, 250, 200))
        x += building_width + int(rng.integers(5, 20))
    draw.ellipse([540, 30, 600, 90], fill=(255, 230, 80))  # the sun
    noisy = np.asarray(scene, np.int16) + rng.integers(-12, 13, (height, width, 3))
    path = folder / "street_photo.jpg"
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.png"
    path.write_bytes(b"")
    return path


def text_named_jpg(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("This is a text file, not a picture.\n")
    return path


def truncated_jpeg(folder: Path, xray: Path) -> Path:
    """The real X-ray's first half: a valid header, then the data stops."""
    data = xray.read_bytes()
    path = folder / "truncated.jpeg"
    path.write_bytes(data[: len(data) // 2])
    return path


def png_16bit(folder: Path, xray: Path) -> Path:
    """The real X-ray as a 16-bit grayscale PNG (as scanners export)."""
    grey = np.asarray(Image.open(xray).convert("L"), np.uint16) * 257
    path = folder / "xray_16bit.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I"), Image.open(path).mode
    return path


def png_rgba(folder: Path, xray: Path) -> Path:
    """The real X-ray as an RGBA PNG with a half-transparent border."""
    rgba = Image.open(xray).convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:20], alpha[-20:], alpha[:, :20], alpha[:, -20:] = 128, 128, 128, 128
    rgba.putalpha(Image.fromarray(alpha))
    path = folder / "xray_rgba.png"
    rgba.save(path)
    return path


def decompression_bomb(folder: Path, side: int = BOMB_SIDE) -> Path:
    """A side x side 1-bit PNG of one colour, written row by row (never held in memory whole)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte, then the packed pixels
    body = io.BytesIO()
    for _ in range(side):
        body.write(compressor.compress(row))
    body.write(compressor.flush())
    path = folder / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + _chunk(b"IDAT", body.getvalue()) + _chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
