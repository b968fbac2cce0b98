"""Find the images of a labelled folder: one subfolder per class, or one class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import SynthgenError
from synthgen.imaging import IMAGE_EXTENSIONS, is_image_file


@dataclass(frozen=True)
class LabelledFiles:
    root: Path
    class_names: list[str]
    files: list[Path]
    labels: list[int]

    @property
    def conditional(self) -> bool:
        return len(self.class_names) > 1


def _images_under(folder: Path) -> list[Path]:
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(folder).parts)  # noqa: E731
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and not hidden(p))


def holds_images(folder: str | Path) -> bool:
    """Whether `folder` has any (not hidden) image at any depth."""
    folder = Path(folder).expanduser()
    return folder.is_dir() and bool(_images_under(folder))


def discover_labelled(root: str | Path) -> LabelledFiles:
    """Class subfolders (class name = folder name, sorted) or, with none, the folder as one class.

    Images below a class folder count for that class at any depth, so a class
    may keep its own sub-structure.
    """
    if not str(root).strip():  # Path("") is ".", the current folder: catch it before converting
        raise SynthgenError("data.root: not set; give a folder of images")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SynthgenError(f"data.root: {root} is not a folder of images")
    found_in = {d: _images_under(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    class_dirs = [d for d, found in found_in.items() if found]  # a folder without images is not a class
    if class_dirs:
        loose = [p for p in root.iterdir() if is_image_file(p)]
        if loose:
            raise SynthgenError(
                f"{root}: has both class subfolders and {len(loose)} loose images (e.g. {loose[0].name}); "
                "move the loose images into a class folder"
            )
        names = [d.name for d in class_dirs]
        files, labels = [], []
        for label, folder in enumerate(class_dirs):
            found = found_in[folder]
            files += found
            labels += [label] * len(found)
        return LabelledFiles(root, names, files, labels)
    files = _images_under(root)
    if not files:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise SynthgenError(f"{root}: no images found (looked for {kinds})")
    return LabelledFiles(root, [root.resolve().name or "images"], files, [0] * len(files))


def class_counts(found: LabelledFiles) -> dict[str, int]:
    return {name: found.labels.count(i) for i, name in enumerate(found.class_names)}


def target_count(to: str | int, counts: dict[str, int], option: str = "--to") -> int:
    """Images per class wanted: `max` (as many as the largest class) or a positive number."""
    if str(to).strip() == "max":
        return max(counts.values())
    try:
        target = int(to)
    except ValueError:
        raise SynthgenError(f"{option} {to}: expected max or a number of images per class") from None
    if target < 1:
        raise SynthgenError(f"{option} {to}: expected a positive number of images per class")
    return target
