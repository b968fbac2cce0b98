"""Awkward and broken image files, made on the fly (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 40000) -> bytes:
    """A 100-byte PNG whose header claims side x side pixels: Pillow refuses it on opening."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    return ((x + y) / 2).astype(np.uint8)


# name -> (bytes, readable?). Unreadable ones must be listed and skipped, readable ones loaded right.
def make(folder: Path) -> dict[str, bool]:
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.fromarray(gradient(30, 20))
    png = _png_bytes(good)
    files: dict[str, tuple[bytes, bool]] = {
        "truncated.png": (png[: len(png) // 2], False),
        "zero-bytes.png": (b"", False),
        "not-an-image.png": (b"name,class\nx.png,cat\n", False),
        "bomb.png": (bomb_png(), False),
        "png-named.jpg": (png, True),  # wrong extension: read by content
        "tiny-1x1.png": (_png_bytes(Image.new("L", (1, 1), 200)), True),
        "huge-3000x2000.png": (_png_bytes(Image.fromarray(gradient(3000, 2000))), True),
        "sixteen-bit.png": (_png_bytes(Image.fromarray(gradient(30, 20).astype(np.uint16) * 257)), True),  # mode I;16
    }
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gradient(30, 20)] * 3)).convert("CMYK").save(buffer, format="JPEG")
    files["cmyk.jpg"] = (buffer.getvalue(), True)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    Image.fromarray(np.dstack([gradient(30, 20)] * 3)).save(buffer, format="JPEG", exif=exif)
    files["exif-rotated.jpg"] = (buffer.getvalue(), True)
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = (buffer.getvalue(), True)
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: readable for name, (_, readable) in files.items()}


UNREADABLE_REASONS = {
    "truncated.png": "truncated",
    "zero-bytes.png": "empty file",
    "not-an-image.png": "not a readable image",
    "bomb.png": "decompression bomb",
}
