"""Captioned image folders (the Hugging Face `imagefolder` layout) and the word vocabulary of their captions.

A folder holds images at any depth and one metadata file at its root:
`metadata.jsonl` (one JSON object a line) or `metadata.csv`, each row naming
an image by `file_name` (relative to the folder) and giving its `text`. An
image may have several captions: several rows with its file_name, or (JSONL)
a list of strings as `text`. Images without a row are not used.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synthgen.data.folders import discover_labelled
from synthgen.data.loading import LabelledImages, load_files
from synthgen.errors import SynthgenError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 in every vocabulary


# --- words ------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case runs of letters and digits: 'T-shirt, bright!' -> ['t', 'shirt', 'bright']."""
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Word -> id, <pad> = 0 and <unk> = 1 first, then the training captions' words by frequency (ties: alphabetical)."""

    tokens: tuple[str, ...]

    @classmethod
    def build(cls, captions: list[str], min_count: int = 1) -> "Vocabulary":
        counts: dict[str, int] = {}
        for caption in captions:
            for word in words(caption):
                counts[word] = counts.get(word, 0) + 1
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls((PAD, UNK, *kept))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def encode(self, texts: list[str], max_words: int) -> torch.Tensor:
        """int64 [len(texts), max_words]: word ids (unknown words: <unk>), padded with 0; an empty text is one <unk>."""
        index, unk = self.index, self.tokens.index(UNK)
        ids = torch.zeros(len(texts), max_words, dtype=torch.int64)
        for row, text in enumerate(texts):
            encoded = [index.get(w, unk) for w in words(text)][:max_words] or [unk]
            ids[row, : len(encoded)] = torch.tensor(encoded)
        return ids

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [" ".join(self.tokens[i] for i in row.tolist() if i != 0) for row in ids]

    def to_json(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: list[str], where: str) -> "Vocabulary":
        if not isinstance(tokens, list) or tokens[:2] != [PAD, UNK] or not all(isinstance(t, str) for t in tokens):
            raise SynthgenError(f"{where}: vocabulary: expected a list of words starting with {PAD}, {UNK}")
        return cls(tuple(tokens))


# --- the metadata file --------------------------------------------------------------


def metadata_file(root: Path) -> Path:
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if not found:
        raise SynthgenError(f"{root}: no metadata.jsonl or metadata.csv (expected rows with file_name and text, the imagefolder layout)")
    if len(found) > 1:
        raise SynthgenError(f"{root}: has both metadata.jsonl and metadata.csv; keep one")
    return found[0]


def read_captions(root: str | Path) -> list[tuple[str, str]]:
    """(file_name, caption) pairs of a captioned folder, in file order; a bad row is a one-line error naming file and row."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SynthgenError(f"data.root: {root} is not a folder")
    path = metadata_file(root)
    rows = _jsonl_rows(path) if path.suffix == ".jsonl" else _csv_rows(path)
    pairs = []
    for where, row in rows:
        if not isinstance(row, dict) or "file_name" not in row or "text" not in row:
            raise SynthgenError(f"{where}: expected the columns file_name and text")
        name, texts = row["file_name"], row["text"] if isinstance(row["text"], list) else [row["text"]]
        if not isinstance(name, str) or not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
            raise SynthgenError(f"{where}: file_name {name!r}: expected a path relative to {root}")
        if not (root / name).is_file():
            raise SynthgenError(f"{where}: file_name {name!r}: no such file in {root}")
        for text in texts:
            if not isinstance(text, str) or not words(text):
                raise SynthgenError(f"{where}: text {text!r}: expected a caption with at least one word")
            pairs.append((name, text))
    if not pairs:
        raise SynthgenError(f"{path}: no captions (expected rows with file_name and text)")
    return pairs


def _jsonl_rows(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path} line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise SynthgenError(f"{path} line {number}: not JSON ({exc.msg})") from None


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            if None in row or None in row.values():
                raise SynthgenError(f"{path} line {number}: expected {len(reader.fieldnames or [])} columns ({', '.join(reader.fieldnames or [])})")
            yield f"{path} line {number}", row


# --- the dataset a text-conditioned method trains on ------------------------------------


@dataclass
class CaptionedImages(LabelledImages):
    """The images (one class), every caption with the image it describes, and the vocabulary built from them."""

    captions: list[str] = field(default_factory=list)
    caption_image: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # [M] image index per caption
    vocabulary: Vocabulary = field(default_factory=lambda: Vocabulary((PAD, UNK)))

    def describe(self) -> dict:
        return {**super().describe(), "num_captions": len(self.captions), "vocabulary_size": len(self.vocabulary)}


def load_captioned(root, image_size, channels, resize, min_count: int = 1) -> CaptionedImages:
    """The captioned folder's images (decoded through the cache) and captions; an unreadable image is refused."""
    root = Path(root).expanduser()
    pairs = read_captions(root)
    names = sorted({name for name, _ in pairs})
    images = load_files([root / n for n in names], [0] * len(names), ["captioned"], image_size, channels, resize)
    if images.unreadable:  # the captions name their images: skipping one would shift every caption after it
        more = f" (and {len(images.unreadable) - 1} more)" if len(images.unreadable) > 1 else ""
        raise SynthgenError(f"data.root {root}: unreadable image named in {metadata_file(root).name}: {images.unreadable[0]}{more}")
    position = {n: i for i, n in enumerate(names)}
    captions = [text for _, text in pairs]
    return CaptionedImages(
        images.images, images.labels, ["captioned"], images.unreadable,
        captions=captions,
        caption_image=torch.tensor([position[name] for name, _ in pairs], dtype=torch.int64),
        vocabulary=Vocabulary.build(captions, min_count),
    )


# --- test and benchmark data: captions a program can check -------------------------------


def attribute_of(image: torch.Tensor, threshold: float) -> str:
    """'bright' or 'dark': the image's mean intensity (0..255) against `threshold`."""
    return "bright" if float(image.float().mean()) >= threshold else "dark"


def caption_labelled_folder(src: Path, out: Path, per_class: int | None = None) -> dict[str, float]:
    """A captioned folder from a labelled one: out/<class>/<file> links and metadata.jsonl with two captions per image.

    Each caption names the class and whether the image is brighter than its class's median mean intensity
    ("a bright sneaker", "sneaker, bright"), so half of every class is bright and the attribute can be measured
    on generated images. `per_class`: the first N images of each class. Returns {class name: median threshold}.
    """
    found = discover_labelled(src)
    labelled = load_files(found.files, found.labels, found.class_names, "auto", 1, "crop")
    out.mkdir(parents=True, exist_ok=True)
    thresholds, lines = {}, []
    for c, name in enumerate(found.class_names):
        members = (labelled.labels == c).nonzero().flatten().tolist()[:per_class]
        thresholds[name] = float(torch.stack([labelled.images[i].float().mean() for i in members]).median())
        noun = " ".join(words(name))
        (out / name).mkdir(exist_ok=True)
        for i in members:
            relative = f"{name}/{found.files[i].name}"
            if not (out / relative).exists():
                (out / relative).symlink_to(found.files[i].resolve())
            attribute = attribute_of(labelled.images[i], thresholds[name])
            lines.append(json.dumps({"file_name": relative, "text": [f"a {attribute} {noun}", f"{noun}, {attribute}"]}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return thresholds
