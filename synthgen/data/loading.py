"""Decode a labelled folder once into a uint8 tensor cache; training reads only the cache.

The cache key covers every file's path, size and mtime plus the conversion
settings, so any change to the folder or the recipe's data keys re-decodes,
and a second run on the same folder starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from synthgen.data.folders import _images_under, discover_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import UnreadableImage, load_image, opened

CACHE_VERSION = 1
DAMAGED_CACHE = (OSError, ValueError, KeyError, SafetensorError)


@dataclass
class LabelledImages:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    class_names: list[str]
    unreadable: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def describe(self) -> dict:
        """What the run records about its data (run.json and every checkpoint's state.json)."""
        return {"class_names": self.class_names, "num_images": len(self), "unreadable": self.unreadable}


def cache_dir() -> Path:
    base = os.environ.get("SYNTHGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synthgen"
    )
    return Path(base)


def cache_key(files: list[Path], labels: list[int], image_size: int, channels: int, resize: str) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}|{channels}|{resize}".encode())
    for path, label in zip(files, labels):
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{label}".encode())
    return digest.hexdigest()[:32]


AUTO_SIZES = (28, 32, 48, 64)  # `auto` never picks more than 64 px: larger is slow on a CPU
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def image_headers(files: list[Path], limit: int = 256) -> list[tuple[int, int, bool]]:
    """(width, height, grayscale) of up to `limit` files spread over the list, read from headers; unreadable files skipped."""
    headers = []
    for path in files[:: max(1, len(files) // limit)]:
        try:
            with opened(path) as image:
                headers.append((*image.size, image.mode in GRAYSCALE_MODES))
        except UnreadableImage:
            continue
    return headers


def median_short_side(headers: list[tuple[int, int, bool]], halves: bool = False) -> int | None:
    """The median short side (of one half, for side-by-side pairs), or None when nothing was readable."""
    sides = sorted(min(w // 2 if halves else w, h) for w, h, _ in headers)
    return sides[len(sides) // 2] if sides else None


def round_down_to(size: int | None, sizes: tuple[int, ...]) -> int:
    """The largest of `sizes` not above `size` (the smallest when none is; the largest when size is unknown)."""
    if size is None:
        return sizes[-1]
    return max([s for s in sizes if s <= size], default=sizes[0])


def all_grayscale(headers: list[tuple[int, int, bool]]) -> bool:
    return bool(headers) and all(gray for _, _, gray in headers)


def resolve_auto(files: list[Path], image_size: int | str, channels: int | str) -> tuple[int, int]:
    """Replace `auto` size and channels with what the images are (judged from up to 256 headers)."""
    headers = image_headers(files)
    if channels == "auto":
        channels = 1 if all_grayscale(headers) else 3
    if image_size == "auto":
        image_size = round_down_to(median_short_side(headers), AUTO_SIZES)
    return int(image_size), int(channels)


def load_labelled(root: str | Path, image_size: int | str, channels: int | str, resize: str, progress=None) -> LabelledImages:
    """All images of a labelled folder as uint8 tensors, from the cache when it is current.

    `auto` size or channels are resolved from the images; the tensors' shape says what was chosen.
    """
    found = discover_labelled(root)
    return load_files(found.files, found.labels, found.class_names, image_size, channels, resize, progress)


def load_unlabelled(root: str | Path, image_size: int, channels: int, resize: str, progress=None) -> LabelledImages:
    """Every image below `root`, at any depth and in any folder layout, as one class (folder names are ignored)."""
    root = Path(root).expanduser()
    files = _images_under(root) if root.is_dir() else []
    if not files:
        raise SynthgenError(f"{root}: no images found (expected a folder of unlabelled images, any layout)")
    return load_files(files, [0] * len(files), ["unlabelled"], image_size, channels, resize, progress)


def load_files(files: list[Path], labels: list[int], class_names: list[str], image_size, channels, resize, progress=None) -> LabelledImages:
    """`files` decoded (or read from the cache when it is current) with their labels."""
    image_size, channels = resolve_auto(files, image_size, channels)
    key = cache_key(files, labels, image_size, channels, resize)
    tensors_path = cache_dir() / f"{key}.safetensors"
    meta_path = cache_dir() / f"{key}.json"
    if tensors_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(tensors_path)
            return LabelledImages(tensors["images"], tensors["labels"], meta["class_names"], meta["unreadable"])
        except DAMAGED_CACHE:
            pass  # a damaged cache entry (disk trouble, edited by hand) is decoded again
    data = decode_all(files, labels, class_names, image_size, channels, resize, progress)
    write_cache(tensors_path, meta_path, data)
    return data


def refuse_unreadable(root: str | Path, unreadable: list[str], strict: bool) -> None:
    """data.strict: a dataset with any unreadable file is refused (by default they are skipped and listed in run.json)."""
    if strict and unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise SynthgenError(f"data.root {root}: {len(unreadable)} unreadable file(s), refused because data.strict is true: {unreadable[0]}{more}")


def decode_all(files, labels, class_names, image_size, channels, resize, progress=None) -> LabelledImages:
    def decode(path: Path):
        try:
            return load_image(path, channels, image_size, resize)
        except UnreadableImage as exc:
            return str(exc)

    images, kept, unreadable = [], [], []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for (result, label) in zip(pool.map(decode, files, chunksize=64), labels):
            if isinstance(result, str):
                unreadable.append(result)
            else:
                images.append(result)
                kept.append(label)
            if progress:
                progress()
    if not images:
        raise SynthgenError(f"{files[0].parent}: none of the {len(files)} images could be read ({unreadable[0]})")
    return LabelledImages(torch.stack(images), torch.tensor(kept, dtype=torch.int64), class_names, unreadable)


def write_cache(tensors_path: Path, meta_path: Path, data: LabelledImages) -> None:
    """Best effort: a read-only cache folder only costs the next run a decode."""
    try:
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tensors_path.with_suffix(f".tmp-{os.getpid()}")
        save_file({"images": data.images.contiguous(), "labels": data.labels}, tmp)
        os.replace(tmp, tensors_path)
        meta = {"class_names": data.class_names, "unreadable": data.unreadable}
        meta_tmp = meta_path.with_suffix(f".tmp-{os.getpid()}")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_path)
    except OSError:
        pass
