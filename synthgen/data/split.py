"""Stratified train/test split of a labelled folder (copies or hard links; the source is never modified)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from synthgen.data.folders import discover_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import copy_atomic


def split_dataset(data: Path, out: Path, test_fraction: float, seed: int = 0, link: bool = False) -> dict[str, dict[str, int]]:
    """OUT/train/<class>/ and OUT/test/<class>/ with `test_fraction` of every class (at least one image each
    when a class has two or more) in test. The order within a class is a seeded hash of the file's path, so
    the split does not depend on the file system's listing order. Returns images per split and class."""
    if not 0 < test_fraction < 1:
        raise SynthgenError(f"--test-fraction {test_fraction}: expected a number between 0 and 1")
    data, out = Path(data), Path(out)
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise SynthgenError(f"{out}: is inside {data}; write the split elsewhere")
    found = discover_labelled(data)
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    linked = link
    for label, name in enumerate(found.class_names):
        base = data / name if found.conditional else data
        files = sorted((p for p, y in zip(found.files, found.labels) if y == label),
                       key=lambda p: hashlib.sha256(f"{seed}/{p.relative_to(base).as_posix()}".encode()).digest())
        n_test = max(1, round(len(files) * test_fraction)) if len(files) >= 2 else 0
        for split, chunk in (("test", files[:n_test]), ("train", files[n_test:])):
            for path in chunk:
                target = out / split / name / path.relative_to(base)
                if not (target.exists() and target.stat().st_size == path.stat().st_size):
                    linked = copy_atomic(path, target, linked)
            counts[split][name] = len(chunk)
    return counts
