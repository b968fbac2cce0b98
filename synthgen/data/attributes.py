"""Images with several binary attributes each (StarGAN's CelebA setting), from a CSV.

The CSV's first column names an image (a path relative to data.root); every
other column is an attribute, 1 where the image has it and 0 (or CelebA's -1)
where it does not:

    file,Black_Hair,Blond_Hair,Male,Young
    000001.jpg,0,1,0,1

Images under data.root without a row are not used; a row naming a missing
file, a value other than 1, 0 or -1, or an attribute that never varies is a
one-line error naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synthgen.data.loading import LabelledImages, load_files
from synthgen.errors import SynthgenError

VALUES = {"1": 1.0, "0": 0.0, "-1": 0.0}  # -1: CelebA's list_attr_celeba "has not"


@dataclass
class AttributedImages(LabelledImages):
    """The images (drawn as one class: `labels` are all 0) and their attribute vectors; class_names are the attributes."""

    attributes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # float [N, A], 0 or 1

    def describe(self) -> dict:
        share = self.attributes.mean(dim=0).tolist() if len(self.attributes) else []
        return {**super().describe(), "attribute_share": {name: round(s, 4) for name, s in zip(self.class_names, share)}}


def read_attribute_table(path: Path, root: Path, names: list[str]) -> tuple[list[Path], list[str], torch.Tensor]:
    """(image files, attribute names, float [N, A] table) of the CSV; `names` picks columns (all when empty)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise SynthgenError(f"options.attributes: cannot read {path} ({exc.strerror or exc})") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise SynthgenError(f"{path}: expected a header (file, attribute, ...) and one row per image")
    header = [h.strip() for h in rows[0]]
    columns = header[1:]
    names = names or columns
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise SynthgenError(f"options.attribute_names: {', '.join(unknown)} not a column of {path} (its attributes: {', '.join(columns)})")
    picks = [header.index(n) for n in names]
    files, table = [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {number}"
        if len(row) != len(header):
            raise SynthgenError(f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(row)}")
        name = row[0].strip()
        if not name or Path(name).is_absolute() or ".." in Path(name).parts or not (root / name).is_file():
            raise SynthgenError(f"{where}: {name!r}: expected an image file relative to {root}")
        values = []
        for column in picks:
            cell = row[column].strip()
            if cell not in VALUES:
                raise SynthgenError(f"{where}: {header[column]} = {cell!r}: expected 1, 0 or -1")
            values.append(VALUES[cell])
        files.append(root / name)
        table.append(values)
    if not files:
        raise SynthgenError(f"{path}: no rows (expected one per image)")
    table = torch.tensor(table)
    share = table.mean(dim=0)
    for name, s in zip(names, share.tolist()):
        if s in (0.0, 1.0):
            raise SynthgenError(f"{path}: attribute {name} is {int(s)} for every image; StarGAN learns an attribute from images with and without it")
    return files, list(names), table


def attribute_csv(root: Path, option: str) -> Path:
    """options.attributes: absolute, or relative to data.root."""
    path = Path(option).expanduser()
    return path if path.is_absolute() else root / path


def load_attributed(root, csv_option: str, names: list[str], image_size, channels, resize) -> AttributedImages:
    """The CSV's images (decoded through the cache) and their attribute vectors; unreadable images are skipped and listed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SynthgenError(f"data.root: {root} is not a folder")
    files, names, table = read_attribute_table(attribute_csv(root, csv_option), root, names)
    # The label of each file is its row, so the rows of the images that decode are known after unreadable ones are dropped.
    images = load_files(files, list(range(len(files))), names, image_size, channels, resize)
    rows = images.labels
    return AttributedImages(images.images, torch.zeros_like(rows), names, images.unreadable, attributes=table[rows])
