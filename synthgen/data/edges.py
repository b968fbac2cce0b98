"""Make a paired edges -> image dataset from any folder of images (the `make demo-translate` data).

A/ holds Canny edge maps (OpenCV, which albumentations brings), B/ the images
themselves as grayscale or RGB, matched by file name: the layout pix2pix reads.
Edges -> photo is the classic pix2pix task (edges2shoes, edges2handbags), and
any user's image folder yields such pairs without labelling anything.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from synthgen.data.folders import _images_under
from synthgen.errors import SynthgenError
from synthgen.imaging import encode, flatten_alpha, open_image, pil_to_tensor, to_8bit, write_atomic

LOW, HIGH = 50, 150  # Canny hysteresis thresholds for 8-bit images (OpenCV's tutorial values)


def canny_edges(image: Image.Image) -> Image.Image:
    """White edges on black, the size of the image."""
    gray = np.asarray(flatten_alpha(to_8bit(image)).convert("L"))
    return Image.fromarray(cv2.Canny(gray, LOW, HIGH))


def make_edge_pairs(src: str | Path, out: str | Path, holdout: int = 0, limit: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write out/train/{A,B}/<relative path>.png, and `holdout` random pairs to out/test/{A,B}/; returns counts."""
    src, out = Path(src), Path(out)
    files = _images_under(src) if src.is_dir() else []
    if not files:
        raise SynthgenError(f"{src}: no images found to make edge pairs from")
    random.Random(seed).shuffle(files)
    files = files[: limit or len(files)]
    if holdout >= len(files):
        raise SynthgenError(f"--holdout {holdout}: must be smaller than the number of images ({len(files)})")
    splits = {"test": files[:holdout], "train": files[holdout:]}
    for split, members in splits.items():
        for path in members:
            photo = flatten_alpha(to_8bit(open_image(path)))
            name = path.relative_to(src).with_suffix(".png")
            for side, picture in (("A", canny_edges(photo)), ("B", photo)):
                write_atomic(out / split / side / name, encode(pil_to_tensor(picture), "png"))
    return {split: len(members) for split, members in splits.items() if members}
