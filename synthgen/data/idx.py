"""Import MNIST-style idx files into a labelled image folder.

The idx format (http://yann.lecun.com/exdb/mnist/) is a big-endian header --
two zero bytes, a dtype code, the number of dimensions, then one uint32 per
dimension -- followed by the raw array. MNIST and Fashion-MNIST ship one
images file and one labels file per split; `import_idx` turns them into
`out/<split>/<class>/<split>-<index>.png`, the layout the rest of synthgen reads.
"""

from __future__ import annotations

import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from synthgen.errors import SynthgenError

CLASS_NAMES: dict[str, list[str]] = {
    "fashion-mnist": [
        "T-shirt-top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot",
    ],
    "mnist": [str(digit) for digit in range(10)],
}

# idx dtype codes; multi-byte types are big-endian on disk.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> (images file stem, labels file stem), as distributed upstream.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_WORKERS = 2


def resolve_class_names(names: str) -> list[str]:
    """Return the class names for a preset ("fashion-mnist", "mnist") or a list "a,b,c"."""
    key = names.strip()
    if key in CLASS_NAMES:
        return list(CLASS_NAMES[key])
    if "," not in key:
        # A lone word is far more likely a mistyped preset than a one-class dataset.
        known = ", ".join(sorted(CLASS_NAMES))
        raise SynthgenError(
            f"unknown class-name preset {names!r}: use one of {known} or a comma-separated list like a,b,c"
        )
    result = [part.strip() for part in key.split(",")]
    for name in result:
        _check_class_name(name, names)
    # Compare case-insensitively: "Bag" and "bag" would share a folder on macOS/Windows.
    folded = [name.casefold() for name in result]
    duplicates = sorted({name for name in result if folded.count(name.casefold()) > 1})
    if duplicates:
        raise SynthgenError(f"duplicate class names in {names!r}: {', '.join(duplicates)}")
    return result


def _check_class_name(name: str, names: str) -> None:
    """Reject a class name that cannot be used as one folder name."""
    if not name:
        raise SynthgenError(f"empty class name in {names!r}")
    if "/" in name or "\\" in name or name.startswith("."):
        raise SynthgenError(
            f"bad class name {name!r} in {names!r}: names become folders, so no '/', '\\' or leading '.'"
        )


def read_idx(path: Path | str) -> np.ndarray:
    """Read an idx file (gzip-compressed if it ends in .gz) into an array of its shape."""
    path = Path(path)
    raw = _read_bytes(path)
    dtype, shape, offset = _parse_header(path, raw)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - offset
    if found != expected:
        problem = "truncated" if found < expected else "has trailing data"
        raise SynthgenError(
            f"{path}: {problem}: expected {expected} data bytes for shape {shape}, found {found}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is a .gz; damage becomes a SynthgenError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise SynthgenError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # A cut-off download usually shows up here rather than as a short header.
        raise SynthgenError(f"{path}: damaged or truncated gzip data ({exc})") from None
    except OSError as exc:
        raise SynthgenError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_header(path: Path, raw: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return (dtype, shape, data offset) from an idx header, validating it."""
    if len(raw) < 4:
        raise SynthgenError(f"{path}: truncated: expected a 4-byte idx header, found {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or ndim == 0:
        raise SynthgenError(
            f"{path}: not an idx file: magic 0x{magic:08x}, expected 0x00000803 (images) "
            "or 0x00000801 (labels)"
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise SynthgenError(f"{path}: truncated: expected {ndim} dimension sizes after the magic number")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return _DTYPES[raw[2]], shape, offset


def import_idx(src: Path, out: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """Write every split found in src as out/<split>/<class>/<split>-<index:05d>.png.

    Returns {split: {class: image count}}. Files already present are kept, so
    re-running an interrupted or finished import is cheap.
    """
    src, out = Path(src), Path(out)
    splits = _find_splits(src)
    # Load and check every split before writing, so a bad file leaves nothing behind.
    loaded = {split: _load_split(images, labels, names) for split, (images, labels) in splits.items()}
    counts: dict[str, dict[str, int]] = {}
    for split, (images, labels) in loaded.items():
        _write_split(out / split, split, images, labels, names)
        per_class = np.bincount(labels, minlength=len(names))
        counts[split] = {name: int(n) for name, n in zip(names, per_class)}
    return counts


def _find_file(src: Path, stem: str) -> Path | None:
    """The raw or gzipped file for stem in src, preferring the raw one."""
    for candidate in (src / stem, src / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_splits(src: Path) -> dict[str, tuple[Path, Path]]:
    """Map each split present in src to its (images, labels) files."""
    if not src.is_dir():
        raise SynthgenError(f"{src}: not a folder")
    splits: dict[str, tuple[Path, Path]] = {}
    for split, (image_stem, label_stem) in SPLIT_FILES.items():
        images, labels = _find_file(src, image_stem), _find_file(src, label_stem)
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            present, missing = (images, label_stem) if labels is None else (labels, image_stem)
            raise SynthgenError(f"{present}: found, but its partner {missing}(.gz) is missing from {src}")
        splits[split] = (images, labels)
    if not splits:
        expected = ", ".join(f"{stem}(.gz)" for pair in SPLIT_FILES.values() for stem in pair)
        raise SynthgenError(f"{src}: no idx split files found; expected {expected}")
    return splits


def _load_split(images_path: Path, labels_path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images (N, H, W) uint8 and labels (N,) and check they agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise SynthgenError(
            f"{images_path}: expected uint8 images of shape (N, H, W), found {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise SynthgenError(
            f"{labels_path}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise SynthgenError(
            f"{labels_path}: has {len(labels)} labels but {images_path.name} has {len(images)} images"
        )
    if len(labels) and int(labels.max()) >= len(names):
        raise SynthgenError(
            f"{labels_path}: label {int(labels.max())} is out of range for {len(names)} class names"
        )
    return images, labels.astype(np.int64)


def _write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """Write the PNGs of one split that are not on disk yet."""
    existing = {name: _prepare_class_dir(root / name, split) for name in names}
    todo = []
    for index, label in enumerate(labels.tolist()):
        filename = f"{split}-{index:05d}.png"
        if filename not in existing[names[label]]:
            todo.append((images[index], root / names[label] / filename))
    if not todo:
        return
    # PNG encoding and file I/O release the GIL, so two threads overlap usefully
    # (about 1.4x faster than one on a 2-core box; more threads would just compete).
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for _ in pool.map(lambda job: _write_png(*job), todo, chunksize=256):
            pass


def _prepare_class_dir(folder: Path, split: str) -> set[str]:
    """Create folder, drop temp files an interrupted run left, and list its PNGs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entries = os.listdir(folder)
    except OSError as exc:
        raise SynthgenError(f"{folder}: cannot create output folder ({exc.strerror or exc})") from None
    for entry in entries:
        if entry.startswith(f".{split}-") and ".tmp" in entry:
            (folder / entry).unlink(missing_ok=True)
    return {entry for entry in entries if entry.endswith(".png")}


def _write_png(pixels: np.ndarray, target: Path) -> None:
    """Save a grayscale PNG atomically: a crash never leaves a half-written target."""
    # Leading dot: image folder scanners skip hidden files, so a stray temp is never read as data.
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(pixels).save(tmp, format="PNG")  # 2-d uint8 -> mode "L"
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, permissions: the user can fix these
            raise SynthgenError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise
