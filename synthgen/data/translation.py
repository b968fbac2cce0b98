"""Translation datasets as uint8 tensors: decoded once (cached), then cropped and flipped per step.

Images of any size are brought to a square `load` size (image_size * jitter,
with the recipe's data.resize policy); every training step takes a random
image_size crop and, with data.hflip, a random mirror: pix2pix's "random
jitter". For a pair, albumentations applies the same crop and flip to both
sides (its additional_targets), so A and B stay aligned. Each side keeps its
own channels: edges (gray) -> photos (RGB) is one dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synthgen.data.loading import DAMAGED_CACHE, all_grayscale, cache_dir, image_headers, median_short_side, round_down_to
from synthgen.data.pairs import Pair, discover_paired, discover_unpaired
from synthgen.errors import SynthgenError
from synthgen.imaging import UnreadableImage, fit, load_image, open_image, pil_to_tensor, to_channels, to_model

CACHE_VERSION = 1
AUTO_SIZES = (32, 64, 128, 256)  # `auto`: the images' median short side rounded down to one of these
GRID_IMAGES = 6  # rows in a training grid


@dataclass
class TranslationImages:
    a: torch.Tensor  # uint8 [Na, Ca, L, L], L = load size >= image_size
    b: torch.Tensor  # uint8 [Nb, Cb, L, L]; paired: b[i] is a[i]'s partner
    paired: bool
    image_size: int
    test_a: torch.Tensor  # uint8 [n, Ca, S, S] held-out images for grids (testA/); may be empty
    test_b: torch.Tensor
    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # none: translation is not class-conditional

    def __len__(self) -> int:
        return len(self.a) if self.paired else len(self.a) + len(self.b)

    @property
    def channels(self) -> dict[str, int]:
        return {"A": self.a.shape[1], "B": self.b.shape[1]}

    def describe(self) -> dict:
        """What the run records about its data (run.json and every checkpoint's state.json)."""
        return {
            "class_names": self.class_names,
            "num_images": len(self),
            "unreadable": self.unreadable,
            "paired": self.paired,
            "domains": {side: {"images": len(t), "channels": t.shape[1]} for side, t in (("A", self.a), ("B", self.b))},
            "skipped": self.skipped,
        }


# --- decoding ---------------------------------------------------------------------


def resolve_size(files: list[Path], image_size: int | str, halves: bool = False) -> int:
    """`auto`: the median short side (of one half, for side-by-side images) rounded down to 32..256."""
    if image_size != "auto":
        return int(image_size)
    return round_down_to(median_short_side(image_headers(files), halves), AUTO_SIZES)


def resolve_channels(files: list[Path], channels: int | str) -> int:
    """`auto`: 1 when every image (of up to 256 looked at) is grayscale, else 3."""
    if channels != "auto":
        return int(channels)
    return 1 if all_grayscale(image_headers(files)) else 3


def _decode_pair(pair: Pair, channels: tuple[int, int], size: int, policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    if pair.b is not None:
        return load_image(pair.a, channels[0], size, policy), load_image(pair.b, channels[1], size, policy)
    image = open_image(pair.a)  # side by side: A left, B right
    w, h = image.size
    halves = image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, 2 * (w // 2), h))
    return tuple(pil_to_tensor(fit(to_channels(half, c), size, policy)) for half, c in zip(halves, channels))


def _decode_each(paths: list[Path], channels: int, size: int, policy: str, unreadable: list[str]) -> torch.Tensor:
    images = []
    for path in paths:
        try:
            images.append(load_image(path, channels, size, policy))
        except UnreadableImage as exc:
            unreadable.append(str(exc))
    return torch.stack(images) if images else torch.zeros(0, channels, size, size, dtype=torch.uint8)


def _cache_key(files: list[Path], settings: str) -> str:
    digest = hashlib.sha256(f"translation-v{CACHE_VERSION}|{settings}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _cached(key: str, build) -> tuple[dict[str, torch.Tensor], list[str]]:
    """build() -> (tensors, unreadable), from the cache when it holds `key` (best effort, like loading.py)."""
    tensors_path, meta_path = cache_dir() / f"{key}.safetensors", cache_dir() / f"{key}.json"
    if tensors_path.exists() and meta_path.exists():
        try:
            return load_file(tensors_path), json.loads(meta_path.read_text())["unreadable"]
        except DAMAGED_CACHE:
            pass  # a damaged cache entry is decoded again
    tensors, unreadable = build()
    try:
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tensors_path.with_suffix(f".tmp-{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, tensors_path)
        meta_tmp = meta_path.with_suffix(f".tmp-{os.getpid()}")
        meta_tmp.write_text(json.dumps({"unreadable": unreadable}))
        os.replace(meta_tmp, meta_path)
    except OSError:
        pass
    return tensors, unreadable


def load_size(image_size: int, jitter: float) -> int:
    return max(image_size, round(image_size * jitter))


def load_paired(cfg) -> TranslationImages:
    """data.root as pairs (A/ + B/ or side-by-side AB), at load size; unreadable pairs are skipped and listed."""
    found = discover_paired(cfg.root, cfg.on_mismatch, (cfg.dir_a, cfg.dir_b))
    side_by_side = found.pairs[0].b is None
    files_a = [p.a for p in found.pairs]
    files_b = files_a if side_by_side else [p.b for p in found.pairs]
    size = resolve_size(files_a, cfg.image_size, halves=side_by_side)
    channels = (resolve_channels(files_a, cfg.channels), resolve_channels(files_b, cfg.channels))
    load = load_size(size, cfg.jitter)

    def build():
        a, b, unreadable = [], [], []
        for pair in found.pairs:
            try:
                x, y = _decode_pair(pair, channels, load, cfg.resize)
            except UnreadableImage as exc:
                unreadable.append(str(exc))  # names the file of the pair that failed
                continue
            a.append(x), b.append(y)
        if not a:
            raise SynthgenError(f"{found.root}: none of the {len(found.pairs)} pairs could be read ({unreadable[0]})")
        return {"a": torch.stack(a), "b": torch.stack(b)}, unreadable

    key = _cache_key(files_a + ([] if side_by_side else files_b), f"paired|{channels}|{load}|{cfg.resize}")
    tensors, unreadable = _cached(key, build)
    grid = _spread(len(tensors["a"]))  # paired layouts have no test split: show pairs from across the set
    test_a, test_b = (_centre(tensors[k][grid], size) for k in ("a", "b"))
    return TranslationImages(tensors["a"], tensors["b"], True, size, test_a, test_b, unreadable, list(found.skipped))


def load_unpaired(cfg) -> TranslationImages:
    """trainA/ + trainB/ at load size; testA/, testB/ (when present) at image size for grids."""
    found = discover_unpaired(cfg.root)
    size = resolve_size(found.train_a + found.train_b, cfg.image_size)
    channels = (resolve_channels(found.train_a, cfg.channels), resolve_channels(found.train_b, cfg.channels))
    load = load_size(size, cfg.jitter)
    tests = [t[:GRID_IMAGES] for t in (found.test_a, found.test_b)]

    def build():
        unreadable: list[str] = []
        tensors = {
            "a": _decode_each(found.train_a, channels[0], load, cfg.resize, unreadable),
            "b": _decode_each(found.train_b, channels[1], load, cfg.resize, unreadable),
            "test_a": _decode_each(tests[0], channels[0], size, cfg.resize, unreadable),
            "test_b": _decode_each(tests[1], channels[1], size, cfg.resize, unreadable),
        }
        for side in ("a", "b"):
            if not len(tensors[side]):
                raise SynthgenError(f"{found.root}: none of the train{side.upper()} images could be read ({unreadable[0]})")
        return tensors, unreadable

    files = found.train_a + found.train_b + tests[0] + tests[1]
    settings = f"unpaired|{channels}|{load}|{size}|{cfg.resize}|{len(found.train_a)}|{len(tests[0])}"
    tensors, unreadable = _cached(_cache_key(files, settings), build)
    test_a = tensors["test_a"] if len(tensors["test_a"]) else _centre(tensors["a"][_spread(len(tensors["a"]))], size)
    test_b = tensors["test_b"] if len(tensors["test_b"]) else _centre(tensors["b"][_spread(len(tensors["b"]))], size)
    return TranslationImages(tensors["a"], tensors["b"], False, size, test_a, test_b, unreadable)


def _spread(n: int) -> torch.Tensor:
    """Indices of up to GRID_IMAGES images spread evenly over n (sorted files: one of each kind, not the first kind only)."""
    return torch.linspace(0, n - 1, min(n, GRID_IMAGES)).round().long()


def _centre(images: torch.Tensor, size: int) -> torch.Tensor:
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size].contiguous()


# --- drawing batches ----------------------------------------------------------------


class TranslationBatches:
    """Batches for step `step`, drawn from a generator seeded by (seed, step): a resumed run draws the same."""

    def __init__(self, data: TranslationImages, batch_size: int, hflip: bool, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        size = data.image_size
        transforms = [A.RandomCrop(size, size)] + ([A.HorizontalFlip(p=0.5)] if hflip else [])
        self.augment = A.Compose(transforms, additional_targets={"target": "image"})

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, step, stream)) & 0x7FFF_FFFF_FFFF_FFFF)

    def _jitter(self, gen: torch.Generator, image: torch.Tensor, target: torch.Tensor | None = None):
        self.augment.set_random_seed(int(torch.randint(2**31 - 1, (), generator=gen)))
        sides = {"image": image.permute(1, 2, 0).numpy()}
        if target is not None:
            sides["target"] = target.permute(1, 2, 0).numpy()
        out = self.augment(**sides)
        return [torch.from_numpy(np.ascontiguousarray(out[k])).permute(2, 0, 1) for k in sides]

    def pairs(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned (A, B) batches in [-1, 1]: the same crop and flip on both sides of each pair."""
        gen = self._generator(step, 0)
        index = torch.randint(len(self.data.a), (self.batch_size,), generator=gen)
        crops = [self._jitter(gen, self.data.a[i], self.data.b[i]) for i in index.tolist()]
        a, b = (torch.stack(side) for side in zip(*crops))
        return to_model(a).to(device), to_model(b).to(device)

    def unpaired(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Independent batches of A and B images in [-1, 1]."""
        batches = []
        for stream, images in enumerate((self.data.a, self.data.b), start=1):
            gen = self._generator(step, stream)
            index = torch.randint(len(images), (self.batch_size,), generator=gen)
            batches.append(torch.stack([self._jitter(gen, images[i])[0] for i in index.tolist()]))
        return to_model(batches[0]).to(device), to_model(batches[1]).to(device)
