"""Find the images of a translation dataset: paired (A/ + B/, or side-by-side AB) or unpaired (trainA/ + trainB/).

Paired layouts (pix2pix):
  root/A/<name>.<ext> with root/B/<name>.<any ext>   partners share their path below A/ and B/, minus the extension
                                                     (other folder names with data.dir_a / data.dir_b: label/ + image/)
  root/<name>.<ext>                                  one image per pair, A on the left half, B on the right
Unpaired layout (CycleGAN): root/trainA/, root/trainB/ and optionally root/testA/, root/testB/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthgen.data.folders import _images_under
from synthgen.errors import SynthgenError

SHOW = 5  # files named in an error before "and N more"


@dataclass(frozen=True)
class Pair:
    name: str  # path below A/ (or root) without extension: how reports refer to the pair
    a: Path
    b: Path | None  # None: `a` is one side-by-side AB image


@dataclass(frozen=True)
class PairedFiles:
    root: Path
    pairs: list[Pair]
    skipped: list[str] = field(default_factory=list)  # files without a partner (data.on_mismatch: skip)


@dataclass(frozen=True)
class UnpairedFiles:
    root: Path
    train_a: list[Path]
    train_b: list[Path]
    test_a: list[Path]
    test_b: list[Path]


def _root(root: str | Path) -> Path:
    if not str(root).strip():
        raise SynthgenError("data.root: not set; give a folder with A/ and B/, side-by-side AB images, or trainA/ and trainB/")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SynthgenError(f"data.root: {root} is not a folder")
    return root


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return ", ".join(items[:SHOW]) + more


def _by_stem(folder: Path) -> dict[str, Path]:
    """Images below `folder` keyed by relative path without extension; two files with one key are an error."""
    found: dict[str, Path] = {}
    for path in _images_under(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise SynthgenError(f"{folder}: {found[key].name} and {path.name} have the same name; a pair needs one file per side")
        found[key] = path
    return found


def discover_paired(root: str | Path, on_mismatch: str = "error", dirs: tuple[str, str] = ("A", "B")) -> PairedFiles:
    root = _root(root)
    if (root / dirs[0]).is_dir() and (root / dirs[1]).is_dir():
        return _paired_folders(root, on_mismatch, dirs)
    if (root / "trainA").is_dir() or (root / "trainB").is_dir():
        raise SynthgenError(f"{root}: has trainA/ and trainB/, an unpaired layout; pix2pix needs pairs (A/ + B/ or side-by-side AB images), or use method: cyclegan")
    files = _images_under(root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _images_under(d))
    loose = any(p.parent == root for p in files)
    if not files or (len(folders) >= 2 and not loose):  # e.g. image/ + label/: sides in folders of other names
        found = f" (found {', '.join(f'{name}/' for name in folders)}: name the sides with data.dir_a and data.dir_b)" if folders else ""
        raise SynthgenError(
            f"{root}: no pairs found; expected {dirs[0]}/ and {dirs[1]}/ folders with matching file names, or side-by-side AB images{found}"
        )
    return PairedFiles(root, [Pair(path.relative_to(root).with_suffix("").as_posix(), path, None) for path in files])


def _paired_folders(root: Path, on_mismatch: str, dirs: tuple[str, str]) -> PairedFiles:
    side_a, side_b = dirs
    a, b = _by_stem(root / side_a), _by_stem(root / side_b)
    lonely = [f"{side_a}/{a[k].relative_to(root / side_a)} (no {side_b}/{k}.*)" for k in sorted(a.keys() - b.keys())]
    lonely += [f"{side_b}/{b[k].relative_to(root / side_b)} (no {side_a}/{k}.*)" for k in sorted(b.keys() - a.keys())]
    if lonely and on_mismatch == "error":
        raise SynthgenError(
            f"{root}: {len(lonely)} files without a partner: {_listing(lonely)}; add or remove them, or set data.on_mismatch: skip"
        )
    pairs = [Pair(k, a[k], b[k]) for k in sorted(a.keys() & b.keys())]
    if not pairs:
        raise SynthgenError(f"{root}: {side_a}/ and {side_b}/ have no file names in common (e.g. {_listing(lonely)})")
    return PairedFiles(root, pairs, lonely)


def discover_unpaired(root: str | Path) -> UnpairedFiles:
    """trainA/ + trainB/ (+ testA/, testB/); A/ + B/ also serve, their pairing ignored."""
    root = _root(root)
    names = ("trainA", "trainB") if (root / "trainA").is_dir() or (root / "trainB").is_dir() else ("A", "B")
    sides = []
    for name in names:
        files = _images_under(root / name) if (root / name).is_dir() else []
        if not files:
            raise SynthgenError(f"{root}: no images in {name}/; an unpaired dataset needs trainA/ and trainB/ (testA/, testB/ optional)")
        sides.append(files)
    tests = [_images_under(root / t) if (root / t).is_dir() else [] for t in ("testA", "testB")]
    return UnpairedFiles(root, sides[0], sides[1], tests[0], tests[1])
