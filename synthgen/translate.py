"""Translate folders of images with a trained pix2pix, CycleGAN or StarGAN run, and score it on held-out pairs.

Every image under IN is translated at its own size (reflect-padded to the
network's stride and cropped back; sides over TILE_ABOVE px in overlapping
tiles, blended) and written to OUT under the same relative path and name, in
its own format and mode: grayscale stays grayscale, alpha is carried over,
palette images get a palette of the output's colours. Where the network
changes the number of channels (edges -> photo), the colour follows the
network and alpha and format still follow the file.
Images whose padded sizes match are translated in one batch; an unreadable
file is reported and skipped; existing outputs are kept unless `overwrite`,
so a stopped run continues where it stopped. Outputs are written under a
temporary name and renamed. OUT/manifest.csv lists every output with its
source and the checkpoint that made it (journaled per batch, manifest.py), and
OUT/metadata.jsonl is its copy for `datasets.load_dataset("imagefolder")`.
"""

from __future__ import annotations

import ctypes
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from synthgen import checkpoint as ckpt
from synthgen.data.folders import _images_under
from synthgen.data.pairs import Pair, discover_paired
from synthgen.errors import SynthgenError
from synthgen.imaging import (
    UnreadableImage, open_image, opened, pil_to_tensor, remove_stale_temporaries, to_channels, to_model, to_uint8, write_atomic,
)
from synthgen.manifest import MANIFEST, Manifest, journal_path
from synthgen.metrics.msssim import ssim
from synthgen.models.registry import build_translator
from synthgen.precision import resolve_device, resolve_precision
from synthgen.recipe import translates, validate

TILE_ABOVE = 1024  # images with a side longer than this are translated in tiles (memory stays bounded)
TILE, OVERLAP = 512, 64  # tile side (rounded up to the stride) and the overlap blended between tiles
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
SAVE_AS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
           ".bmp": ("BMP", {}), ".webp": ("WEBP", {"quality": 95}), ".tif": ("TIFF", {}), ".tiff": ("TIFF", {}), ".gif": ("GIF", {})}


# --- the trained translator ---------------------------------------------------------

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # glibc's defaults
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: return nothing to the OS below 2 GiB of free heap


def hold_freed_memory(hold: bool = True) -> bool:
    """Keep memory that tensors free inside the process (glibc), so the next forward reuses it.

    Why: glibc serves every allocation over 32 MiB (its largest mmap threshold) with a fresh mmap
    and unmaps it on free, and trims the heap top above 128 KiB. A U-Net forward at 768x512 frees
    and re-allocates ~0.5 GB of activations per image that way: every page is faulted in and
    zeroed again by the kernel, which showed up as system time above user time in `translate`
    (profiled with perf: clear_page / do_anonymous_page; strace: 12,000 mmap/munmap for 12 images).
    With mmap off and the trim threshold raised, after the first batch there are no page faults
    (bench_translate.py prints them). Returns False where the C library has no mallopt (not glibc).
    `hold=False` restores glibc's defaults (the benchmark's baseline).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mmap_max, trim = (0, KEEP_TRIM_THRESHOLD) if hold else (GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD)
    return bool(mallopt(M_MMAP_MAX, mmap_max)) and bool(mallopt(M_TRIM_THRESHOLD, trim))



def open_translator(run_dir: str | Path, direction: str | None = None, to_class: str | None = None, device: str = "auto", precision: str = "auto",
                    attributes: dict[str, float] | None = None) -> "Translator":
    """A stargan run's G into `to_class` (a class name or `all`) or, for a multi-label run, with `attributes` set
    ({name: 0 or 1}); or a pix2pix / CycleGAN run's G for `direction`."""
    checkpoint = ckpt.require_checkpoint(Path(run_dir))
    method = checkpoint.recipe.get("method")
    if method == CLASS_TRANSLATOR and _learnt_attributes(checkpoint.recipe):
        return AttributeTranslator(run_dir, to_class, attributes, device, precision)
    if attributes:
        raise SynthgenError(f"--attr: {run_dir} is a {method} run without attributes; --attr needs a stargan run trained with options.attributes")
    if method == CLASS_TRANSLATOR:
        return ClassTranslator(run_dir, to_class, device, precision)
    if to_class is not None:
        raise SynthgenError(f"--to-class {to_class}: {run_dir} is a {method} run, which translates one way; --to-class needs a stargan run")
    return Translator(run_dir, direction, device, precision)


def _learnt_attributes(recipe: dict) -> bool:
    options = recipe.get("options")
    return isinstance(options, dict) and bool(str(options.get("attributes") or "").strip())


def parse_attribute_edits(values: list[str]) -> dict[str, float]:
    """--attr NAME=1 / NAME=0 (repeatable) -> {name: 1.0 or 0.0}."""
    edits = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name.strip() or setting.strip() not in ("0", "1"):
            raise SynthgenError(f"--attr {value}: expected NAME=1 or NAME=0")
        edits[name.strip()] = float(setting.strip())
    return edits


CLASS_TRANSLATOR = "stargan"  # the method whose G takes a target class
ALL_CLASSES = "all"  # --to-class all: OUT/<class>/... for every class of the run


class Translator:
    """The generator of a pix2pix or CycleGAN run's latest checkpoint, for one direction."""

    def __init__(self, run_dir: str | Path, direction: str | None = None, device: str = "auto", precision: str = "auto"):
        checkpoint = self._open(run_dir)
        method = self.recipe.method
        if method == CLASS_TRANSLATOR:
            known = ", ".join(checkpoint.class_names)
            raise SynthgenError(f"{self.run_dir}: a stargan run translates into a class; add --to-class NAME (one of {known}) or --to-class all")
        if direction not in (None, "AtoB", "BtoA"):
            raise SynthgenError(f"--direction {direction}: expected AtoB or BtoA")
        if method == "pix2pix":
            trained = self.recipe.data.direction
            if direction and direction != trained:
                raise SynthgenError(f"--direction {direction}: this pix2pix run was trained {trained} and translates only that way")
            self.direction, weights = trained, "G"
        else:
            self.direction = direction or "AtoB"
            weights = "G_AB" if self.direction == "AtoB" else "G_BA"
        source, target = ("A", "B") if self.direction == "AtoB" else ("B", "A")
        domains = checkpoint.state["domains"]
        self.in_channels, self.out_channels = domains[source]["channels"], domains[target]["channels"]
        generator = build_translator(self.recipe.model, self.recipe.data.image_size, self.in_channels, self.out_channels)
        self._load(checkpoint, weights, generator, device, precision)

    def _open(self, run_dir: str | Path) -> ckpt.Checkpoint:
        self.run_dir = Path(run_dir)
        checkpoint = ckpt.require_checkpoint(self.run_dir)
        self.recipe = validate(checkpoint.recipe, source=f"{checkpoint.path}/state.json")
        if not translates(self.recipe):
            raise SynthgenError(f"{self.run_dir}: a {self.recipe.method} run generates images from class labels; translate needs a pix2pix, cyclegan or stargan run")
        return checkpoint

    def _load(self, checkpoint: ckpt.Checkpoint, weights: str, generator: torch.nn.Module, device: str, precision: str) -> None:
        """The checkpoint's `weights` into `generator`, placed on the device in eval mode."""
        self.sha256 = checkpoint.verified_sha256(weights)
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise SynthgenError(f"--precision {precision}: expected auto, fp32, bf16 or fp16")
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.generator = generator
        ckpt.restore_network(self.generator, checkpoint.weights(weights), checkpoint.path / f"{weights}.safetensors")
        self.generator.to(self.device, memory_format=self.precision.memory_format).eval()
        if self.device.type == "cpu":
            hold_freed_memory()
        self.stride, self.step, self.weights = self.generator.stride, checkpoint.step, weights

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image is translated at; images of one padded size share a batch (tiled: never)."""
        if max(height, width) > TILE_ABOVE:
            return (-1, -1)
        return _round_up(height, self.stride), _round_up(width, self.stride)

    @torch.no_grad()
    def translate(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 [in_channels, H, W] images (one padded size, or one image to tile) -> uint8 [out_channels, H, W]."""
        if len(images) == 1 and max(images[0].shape[-2:]) > TILE_ABOVE:
            return [to_uint8(self._tiled(to_model(images[0][None])))[0]]
        batch = torch.cat([pad_to_multiple(to_model(image[None]), self.stride) for image in images])
        outputs = to_uint8(self._forward(batch))
        return [out[:, : image.shape[-2], : image.shape[-1]] for out, image in zip(outputs, images)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=self.precision.memory_format)
        with self.precision.autocast():
            return self.generator(x).float()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Overlapping tiles, each blended in with weights that fall off towards its edges (no seams)."""
        tile = _round_up(TILE, self.stride)
        height, width = x.shape[-2:]
        out = torch.zeros(1, self.out_channels, height, width)
        weight = torch.zeros(1, 1, height, width)
        for top in _starts(height, tile, OVERLAP):
            for left in _starts(width, tile, OVERLAP):
                piece = x[..., top : top + tile, left : left + tile]
                h, w = piece.shape[-2:]
                result = self._forward(pad_to_multiple(piece, self.stride)).cpu()[..., :h, :w]
                window = _ramp(h, OVERLAP)[:, None] * _ramp(w, OVERLAP)[None, :]
                out[..., top : top + h, left : left + w] += result * window
                weight[..., top : top + h, left : left + w] += window
        return out / weight


class ClassTranslator(Translator):
    """A StarGAN run's G translating into one class of its training folder; `into(name)` switches the class.

    Everything else (padding to the stride, tiling, modes, names) is Translator's.
    """

    def __init__(self, run_dir: str | Path, to_class: str | None, device: str = "auto", precision: str = "auto"):
        from synthgen.models.stargan import build_stargan

        checkpoint = self._open(run_dir)
        self.class_names = list(checkpoint.class_names)
        known = ", ".join(self.class_names)
        if to_class is None:
            raise SynthgenError(f"{self.run_dir}: a stargan run translates into a class; add --to-class NAME (one of {known}) or --to-class all")
        if to_class != ALL_CLASSES and to_class not in self.class_names:
            raise SynthgenError(f"--to-class {to_class}: not a class of {self.run_dir} (its classes: {known}; or all)")
        self.targets = self.class_names if to_class == ALL_CLASSES else [to_class]
        self.in_channels = self.out_channels = self.recipe.data.channels
        generator = build_stargan(self.recipe, self.in_channels, len(self.class_names))[0]
        self._load(checkpoint, checkpoint.generator_name, generator, device, precision)
        self.into(self.targets[0])

    def into(self, name: str) -> None:
        self.target, self.direction = self.class_names.index(name), f"into {name}"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=self.precision.memory_format)
        target = torch.full((len(x),), self.target, dtype=torch.long, device=self.device)
        with self.precision.autocast():
            return self.generator(x, target).float()


class AttributeTranslator(Translator):
    """A multi-label StarGAN run's G: every input keeps the attributes D's domain head reads off it,
    except the ones set (`--attr Smiling=1`), as the paper edits CelebA faces one attribute at a time.

    Reading the input's attributes with D's head (trained on the real images, sigmoid > 0.5) means a
    user needs no labels for the images translated; a tiled image is read tile by tile.
    """

    def __init__(self, run_dir: str | Path, to_class: str | None, edits: dict[str, float] | None, device: str = "auto", precision: str = "auto"):
        from synthgen.models.stargan import build_stargan

        checkpoint = self._open(run_dir)
        self.attribute_names = list(checkpoint.class_names)
        known = ", ".join(self.attribute_names)
        if to_class is not None:
            raise SynthgenError(f"--to-class {to_class}: {self.run_dir} learnt attributes ({known}), not classes, so it translates into no class "
                                "(--to-class, balance --mix translate); use translate --attr NAME=1 or NAME=0")
        if not edits:
            raise SynthgenError(f"{self.run_dir}: a multi-label stargan run changes attributes; add --attr NAME=1 or NAME=0 (its attributes: {known})")
        unknown = [name for name in edits if name not in self.attribute_names]
        if unknown:
            raise SynthgenError(f"--attr {unknown[0]}: not an attribute of {self.run_dir} (its attributes: {known})")
        self.targets = [None]  # one way: the edits
        self.in_channels = self.out_channels = self.recipe.data.channels
        generator, self.reader = build_stargan(self.recipe, self.in_channels, len(self.attribute_names))
        checkpoint.verified_sha256("D")
        ckpt.restore_network(self.reader, checkpoint.weights("D"), checkpoint.path / "D.safetensors")
        self._load(checkpoint, checkpoint.generator_name, generator, device, precision)
        self.reader.to(self.device, memory_format=self.precision.memory_format).eval()
        self.columns = [self.attribute_names.index(name) for name in edits]
        self.values = torch.tensor(list(edits.values()), device=self.device)
        self.direction = ", ".join(f"{name}={int(value)}" for name, value in edits.items())

    def attributes_of(self, x: torch.Tensor) -> torch.Tensor:
        """0/1 [B, A]: the attributes D's domain head reads off model-range images."""
        with self.precision.autocast():
            return (self.reader(x)[1].float() > 0).float()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=self.precision.memory_format)
        target = self.attributes_of(x)
        target[:, self.columns] = self.values
        with self.precision.autocast():
            return self.generator(x, target).float()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def _ramp(n: int, overlap: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32)
    return torch.minimum((i + 1) / (overlap + 1), (n - i) / (overlap + 1)).clamp(max=1.0)


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad bottom and right to multiples of `stride` by reflection (repeated while the pad exceeds the image)."""
    need_h, need_w = -x.shape[-2] % stride, -x.shape[-1] % stride
    if min(x.shape[-2:]) < 2:  # nothing to reflect: repeat the edge
        return F.pad(x, (0, need_w, 0, need_h), mode="replicate")
    while need_h or need_w:
        h, w = min(need_h, x.shape[-2] - 1), min(need_w, x.shape[-1] - 1)
        x = F.pad(x, (0, w, 0, h), mode="reflect")
        need_h, need_w = need_h - h, need_w - w
    return x


# --- files: modes in and out ------------------------------------------------------------


@dataclass
class Original:
    """What a file's output must keep: its mode and alpha channel."""

    mode: str
    alpha: Image.Image | None


def read_for_model(path: Path, channels: int) -> tuple[torch.Tensor, Original]:
    """A file as uint8 [channels, H, W] (alpha composited like in training) plus what its output must keep."""
    image = open_image(path)
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"  # transparent palette images come back as RGBA
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA", "PA") else None
    return pil_to_tensor(to_channels(image, channels)), Original(mode, alpha)


def output_mode(original: str, gray: bool) -> str:
    """The mode of a translated file: the original's, unless the network changed gray <-> colour."""
    if original == "P":
        return "P"
    if gray:
        if original in ("1", "L", "LA", "I;16", "I"):
            return original
        return "LA" if original in ("RGBA", "PA") else "L"
    if original in ("RGB", "RGBA", "CMYK"):
        return original
    return "RGBA" if original in ("LA", "PA") else "RGB"


def to_original_mode(image: torch.Tensor, original: Original, in_channels: int, out_channels: int) -> Image.Image:
    """uint8 [C, H, W] network output -> a PIL image in the original file's mode, alpha re-attached."""
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    # The network decides gray vs colour only when it changes the channel count (edges -> photo).
    gray = out_channels == 1 if in_channels != out_channels else original.mode in GRAY_MODES
    mode = output_mode(original.mode, gray)
    base = pil.convert("L" if gray else "RGB")
    if mode in ("LA", "RGBA"):
        base.putalpha(original.alpha if original.alpha is not None else Image.new("L", base.size, 255))
        return base
    if mode == "P":
        return base.convert("RGB").quantize(256)  # an adaptive palette of the output's own colours
    if mode in ("I;16", "I"):  # 16-bit originals: the 8-bit output spread over the 16-bit range
        wide = Image.fromarray(np.asarray(base, dtype=np.uint16) * 257)  # uint16 -> I;16
        return wide if mode == "I;16" else wide.convert(mode)
    if mode == "1":
        return base.convert("1", dither=Image.Dither.NONE)
    return base.convert(mode)


def encode_like(image: Image.Image, path: Path) -> bytes:
    """File bytes in the format the output's extension names."""
    fmt, options = SAVE_AS.get(path.suffix.lower(), ("PNG", {}))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store: the nearest one it can
        buffer = io.BytesIO()
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- a folder -----------------------------------------------------------------------------


@dataclass
class TranslateResult:
    out: Path
    translated: list[str] = field(default_factory=list)  # relative paths written by this run
    existing: list[str] = field(default_factory=list)  # kept: already translated (no --overwrite)
    unreadable: list[str] = field(default_factory=list)  # "path: why"

    @property
    def total(self) -> int:
        return len(self.translated) + len(self.existing) + len(self.unreadable)


def list_images(src: Path, out: Path) -> list[Path]:
    """Every image under src (or src itself), leaving out anything under out (a re-run must not translate its outputs)."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise SynthgenError(f"{src}: no such folder or image")
    out = out.resolve()
    if out == src.resolve():
        raise SynthgenError(f"{out}: the output folder must not be the input folder (nothing is ever overwritten in place)")
    return [p for p in _images_under(src) if out != p.resolve().parent and out not in p.resolve().parents]


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) as displayed, from the header alone (EXIF rotations 5-8 swap the sides)."""
    with opened(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return height, width


def translate_folder(
    translator: Translator,
    src: str | Path,
    out: str | Path,
    overwrite: bool = False,
    batch_size: int = 8,
    on_image: Callable[[str], None] | None = None,
    strict: bool = False,
) -> TranslateResult:
    """Translate every image under src into out (same relative paths and names); see the module docstring.

    `strict`: an unreadable file stops the run (UnreadableImage) instead of being listed and skipped.
    """
    return _translate_indexed(translator, src, Path(out), [None], overwrite, batch_size, on_image, strict)[None]


def translate_into_classes(translator: "ClassTranslator", src: str | Path, out: str | Path, **options) -> dict[str, TranslateResult]:
    """Every image under src into each of the translator's target classes: OUT/<class>/<same path> (one class: OUT/<same path>)."""
    if len(translator.targets) == 1:
        return {translator.targets[0]: translate_folder(translator, src, out, **options)}
    return _translate_indexed(translator, src, Path(out), translator.targets, **options)


def _translate_indexed(translator, src, out: Path, targets: list, overwrite=False, batch_size=8, on_image=None, strict=False) -> dict:
    """Each target (a class, or None: the translator's one way) into out/<target>, all listed in one index at out."""
    src = Path(src)
    files = list_images(src, out)
    if out.is_dir():
        remove_stale_temporaries(out)  # half-written files of a killed run
    root = src if src.is_dir() else src.parent
    relatives = [path.relative_to(root).as_posix() for path in files]
    prefixes = {target: f"{target}/" if target is not None else "" for target in targets}
    redone = {prefix + relative for prefix in prefixes.values() for relative in relatives} if overwrite else set()
    results = {}
    before_index = _written_before_the_index(out)
    with open_translation_index(out, translator, keep=lambda row: row["file"] not in redone) as index:
        if not before_index and (redone or not (out / MANIFEST).exists()):
            # On disk from the start (and without the rows --overwrite drops): from now on an output without a row is one a kill left unlisted.
            index.compact()
        for target, prefix in prefixes.items():
            if target is not None:
                translator.into(target)
            results[target] = _translate_files(translator, files, root, out / prefix, index, prefix, overwrite, batch_size, on_image, strict, before_index)
    return results


def _translate_files(translator, files, root, out, index, prefix, overwrite, batch_size, on_image, strict, before_index) -> TranslateResult:
    """One target's outputs. An output already there is kept when the index lists it; in a folder written
    `before_index`, it is kept and listed with its checkpoint unknown; otherwise (a kill between the file
    and its row) it is translated again, to the same bytes."""
    result = TranslateResult(out)
    listed = {row["file"] for row in index.rows}
    groups: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for path in files:
        relative = path.relative_to(root).as_posix()
        if (out / relative).exists() and not overwrite and (before_index or prefix + relative in listed):
            result.existing.append(relative)
            if prefix + relative not in listed:
                index.append([translation_row(translator, prefix + relative, relative, known=False)])
            _tell(on_image, relative)
            continue
        try:
            groups[translator.padded_size(*_header_size(path))].append(path)
        except UnreadableImage as exc:
            if strict:
                raise
            result.unreadable.append(str(exc))
            _tell(on_image, relative)
    for size, members in groups.items():
        step = 1 if size == (-1, -1) else batch_size  # tiled images go one at a time
        for i in range(0, len(members), step):
            written = _translate_batch(translator, members[i : i + step], root, out, result, on_image, strict)
            index.append([translation_row(translator, prefix + relative, relative) for relative in written])
    return result


# --- the index of an output folder: manifest.csv and its imagefolder copy, metadata.jsonl ---

TRANSLATE_COLUMNS = ["file", "source", "direction", "checkpoint_sha256", "step"]


def translation_columns(translator: Translator) -> list[str]:
    """A class translator's outputs also name their class (the imagefolder label of OUT/<class>/... and of --to-class NAME)."""
    return ["file", "class", *TRANSLATE_COLUMNS[1:]] if isinstance(translator, ClassTranslator) else TRANSLATE_COLUMNS


def translation_row(translator: Translator, file: str, source: str, known: bool = True) -> dict:
    row = {"file": file, "source": source, "direction": translator.direction,
           "checkpoint_sha256": translator.sha256 if known else "", "step": str(translator.step) if known else ""}
    if isinstance(translator, ClassTranslator):
        row["class"] = translator.class_names[translator.target]
    return row


def open_translation_index(out: Path, translator: Translator, keep: Callable[[dict], bool]) -> Manifest:
    """OUT/manifest.csv: one row per output, its source path (relative to IN) and the checkpoint that made it.

    Journaled per batch like sample's manifest, so a killed run's index lists what it wrote;
    `keep` drops the rows of outputs this run writes again (--overwrite).
    """
    return Manifest(out, MANIFEST, translation_columns(translator), order=_by_file, keep=keep)


def _written_before_the_index(out: Path) -> bool:
    """Outputs there and no index (manifest or journal): a folder translated by a version that wrote none."""
    if (out / MANIFEST).exists() or journal_path(out, MANIFEST).exists() or not out.is_dir():
        return False
    return bool(_images_under(out))


def _by_file(row: dict) -> tuple:
    return (row["file"],)


def _translate_batch(translator: Translator, paths: list[Path], root: Path, out: Path, result: TranslateResult, on_image, strict: bool) -> list[str]:
    """Translate and write one batch; returns the relative paths written."""
    images, originals, kept = [], [], []
    for path in paths:
        try:
            image, original = read_for_model(path, translator.in_channels)
        except UnreadableImage as exc:
            if strict:
                raise
            result.unreadable.append(str(exc))
            _tell(on_image, path.relative_to(root).as_posix())
            continue
        images.append(image), originals.append(original), kept.append(path)
    if not images:
        return []
    written = []
    for path, output, original in zip(kept, translator.translate(images), originals):
        relative = path.relative_to(root).as_posix()
        pil = to_original_mode(output, original, translator.in_channels, translator.out_channels)
        write_atomic(out / relative, encode_like(pil, path))
        result.translated.append(relative)
        written.append(relative)
        _tell(on_image, relative)
    return written


def _tell(on_image, relative: str) -> None:
    if on_image:
        on_image(relative)


# --- held-out evaluation -------------------------------------------------------------


@dataclass
class Scores:
    l1: float  # mean |output - target|, intensities in [0, 1]
    psnr: float  # dB, peak 1
    ssim: float  # Wang et al. 2004, 11x11 gaussian window (sigma 1.5), K1 0.01, K2 0.03


@dataclass
class PairedEvaluation:
    pairs: int
    model: Scores
    identity: Scores  # the input itself taken as the output: what the model must beat
    extra: dict[str, float] = field(default_factory=dict)  # feature metrics from the hook (FID/KID, metrics stream)


def image_scores(output: torch.Tensor, target: torch.Tensor) -> Scores:
    """uint8 [C, H, W] images -> L1, PSNR and SSIM."""
    x, y = output.double() / 255, target.double() / 255
    mse = float(((x - y) ** 2).mean())
    psnr = 10 * math.log10(1 / max(mse, 1e-10))
    side = min(x.shape[-2:])
    window = 11 if side >= 11 else side - (1 - side % 2)  # tiny images: the largest odd window that fits
    return Scores(float((x - y).abs().mean()), psnr, float(ssim(output[None], target[None], window)))


def _read_pair(pair: Pair, direction: str, in_channels: int, out_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, ground truth) as uint8 tensors at their own size."""
    a = open_image(pair.a)
    if pair.b is None:
        w, h = a.size
        a, b = a.crop((0, 0, w // 2, h)), a.crop((w // 2, 0, 2 * (w // 2), h))
    else:
        b = open_image(pair.b)
    x, y = (a, b) if direction == "AtoB" else (b, a)
    if x.size != y.size:
        raise SynthgenError(f"{pair.a}: input {x.size[0]}x{x.size[1]} and target {y.size[0]}x{y.size[1]} differ in size")
    return pil_to_tensor(to_channels(x, in_channels)), pil_to_tensor(to_channels(y, out_channels))


def _as_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """The identity baseline's output: the input in the target's channels (gray repeated, or RGB to luma)."""
    if image.shape[0] == channels:
        return image
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    return pil_to_tensor(pil.convert("L" if channels == 1 else "RGB"))


def evaluate_paired(
    run: str | Path,
    test_pairs: str | Path,
    direction: str | None = None,
    feature_metrics: dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], float]] | None = None,
) -> PairedEvaluation:
    """Score a run's outputs on held-out pairs (A/ + B/ or AB images) against the ground truth, beside the identity baseline.

    `feature_metrics` (name -> fn(outputs, targets), uint8 [C, H, W] lists) is the
    hook for distribution metrics such as FID/KID of the outputs (metrics stream).
    """
    translator = Translator(run, direction)
    data = translator.recipe.data
    pairs = discover_paired(test_pairs, dirs=(data.dir_a, data.dir_b)).pairs
    model, identity, outputs, targets = [], [], [], []
    for pair in pairs:
        x, y = _read_pair(pair, translator.direction, translator.in_channels, translator.out_channels)
        output = translator.translate([x])[0]
        model.append(image_scores(output, y))
        identity.append(image_scores(_as_channels(x, translator.out_channels), y))
        if feature_metrics:
            outputs.append(output), targets.append(y)
    mean = lambda scores: Scores(*(float(np.mean([getattr(s, k) for s in scores])) for k in ("l1", "psnr", "ssim")))  # noqa: E731
    extra = {name: fn(outputs, targets) for name, fn in (feature_metrics or {}).items()}
    return PairedEvaluation(len(pairs), mean(model), mean(identity), extra)
