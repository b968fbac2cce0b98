"""Classic augmentation of a labelled or paired folder with albumentations.

A pipeline is an albumentations `Compose`, stored in albumentations' own
serialization (`A.to_dict` as YAML), so a pipeline written here loads in any
albumentations script and vice versa. `POLICIES` are three ready-made ones.

Every output image is one *job*: (source image, copy number). Its random
seed is derived from (--seed, class, source, copy), so the result does not
depend on order or threads, a re-run gives byte-identical files, and a run
into an existing folder writes only what is missing. For a pair, both sides
go through one call (`image_b` is an additional target), so they get the
same geometry and the same colour changes and stay aligned.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import albumentations as A
import cv2
import numpy as np
import yaml

from synthgen.data.folders import discover_labelled, target_count
from synthgen.data.pairs import discover_paired
from synthgen.errors import SynthgenError
from synthgen.imaging import SAVE_FORMATS, UnreadableImage, encode_array, load_native, make_durable, remove_stale_temporaries, write_atomic
from synthgen.manifest import MANIFEST, Manifest, by_class_and_file

PIPELINE_FILE = "augment_pipeline.yaml"
MANIFEST_COLUMNS = ["file", "partner", "class", "source", "copy", "seed", "transforms"]
CHUNK = 64  # jobs between journal appends
MAX_REDRAWS = 8  # tries to draw parameters that change the image at all
REFLECT = cv2.BORDER_REFLECT_101  # shifted/rotated-in borders continue the image instead of a black wedge


# --- pipelines -------------------------------------------------------------------


def _flip(flip: bool) -> list:
    return [A.HorizontalFlip(p=0.5)] if flip else []


def light(flip: bool = True) -> A.Compose:
    """Small shifts, scales and rotations, mild brightness/contrast: safe for almost any data."""
    return A.Compose(_flip(flip) + [
        A.Affine(scale=(0.95, 1.05), translate_percent=(-0.04, 0.04), rotate=(-8, 8), border_mode=REFLECT, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ])


def medium(flip: bool = True) -> A.Compose:
    """The usual classification augmentation: affine jitter, colour jitter, occasional blur or noise."""
    return A.Compose(_flip(flip) + [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), shear=(-5, 5), border_mode=REFLECT, p=0.9),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.GaussNoise(std_range=(0.02, 0.06))], p=0.2),
    ])


def heavy(flip: bool = True) -> A.Compose:
    """Strong geometry and photometry plus cut-outs: for very small classes, at some cost in realism."""
    return A.Compose(_flip(flip) + [
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-25, 25), shear=(-10, 10), border_mode=REFLECT, p=1.0),
        A.Perspective(scale=(0.02, 0.06), border_mode=REFLECT, p=0.3),
        A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.03, 0.1)), A.ImageCompression(quality_range=(40, 90))], p=0.4),
        A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2), p=0.4),
    ])


POLICIES: dict[str, Callable[[bool], A.Compose]] = {"light": light, "medium": medium, "heavy": heavy}


def policy(name: str, flip: bool = True) -> A.Compose:
    if name not in POLICIES:
        raise SynthgenError(f"--policy {name}: expected one of {', '.join(POLICIES)}")
    return POLICIES[name](flip)


def choose_pipeline(policy_name: str | None, pipeline_file: Path | None, flip: bool = True) -> A.Compose:
    """`--pipeline FILE` or `--policy NAME` (default medium), never both."""
    if policy_name is not None and pipeline_file is not None:
        raise SynthgenError("choose one of --policy NAME or --pipeline FILE")
    return load_pipeline(pipeline_file) if pipeline_file is not None else policy(policy_name or "medium", flip)


def load_pipeline(path: Path) -> A.Compose:
    """An albumentations pipeline from its YAML serialization (`A.to_dict`), read with yaml.safe_load."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise SynthgenError(f"--pipeline {path}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise SynthgenError(f"--pipeline {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or "transform" not in data:
        raise SynthgenError(f"--pipeline {path}: expected albumentations' serialization (a mapping with a `transform` key, as A.to_dict writes)")
    try:
        pipeline = A.from_dict(data)
    except Exception as error:  # albumentations raises ValueError/KeyError/TypeError for unknown names and bad arguments
        raise SynthgenError(f"--pipeline {path}: albumentations cannot build it ({type(error).__name__}: {error})") from None
    if not isinstance(pipeline, A.Compose):
        pipeline = A.Compose([pipeline])
    return pipeline


def pipeline_yaml(pipeline: A.Compose) -> str:
    return yaml.safe_dump(_plain(A.to_dict(pipeline)), sort_keys=False)


def _plain(value):
    """Tuples -> lists, so the YAML is plain (safe_load-able) data."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# --- what to write -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One input image (or pair) and where its augmented copies go."""

    group: str  # class name; "" for paired data
    stem: str  # output name below its folder, without extension (keeps any sub-folders)
    image: Path
    partner: Path | None = None  # B side of an A/ + B/ pair
    side_by_side: bool = False  # one AB image: augment both halves alike
    folders: tuple[str, str] = ("", "")  # output folders of the A and B side

    def files(self, copy: int, fmt: str) -> tuple[str, str]:
        name = f"{self.stem}_aug{copy:03d}.{fmt}"
        a, b = self.folders
        return f"{a}{name}", (f"{b}{name}" if self.partner else "")


@dataclass(frozen=True)
class Job:
    source: Source
    copy: int


def labelled_sources(root: Path, subfolder: str = "") -> list[Source]:
    found = discover_labelled(root)
    sources = []
    for path, label in zip(found.files, found.labels):
        group = found.class_names[label]
        base = root / group if found.conditional else root
        stem = path.relative_to(base).with_suffix("").as_posix()
        folder = f"{group}/{subfolder}/" if subfolder else f"{group}/"
        sources.append(Source(group, stem, path, folders=(folder, "")))
    return sources


def paired_sources(root: Path) -> list[Source]:
    found = discover_paired(root)
    return [
        Source("", pair.name, pair.a, pair.b, side_by_side=pair.b is None, folders=("A/", "B/") if pair.b else ("", ""))
        for pair in found.pairs
    ]


def plan_copies(sources: list[Source], copies: int) -> list[Job]:
    return [Job(source, copy) for source in sources for copy in range(copies)]


def plan_per_class(sources: list[Source], per_class: int | str, seed: int) -> list[Job]:
    """Enough jobs that every class has `per_class` images (`max`: as many as the largest class), counting its sources."""
    counts = {group: len([s for s in sources if s.group == group]) for group in {s.group for s in sources}}
    target = target_count(per_class, counts, "--per-class")
    return plan_counts(sources, {group: max(0, target - n) for group, n in counts.items()}, seed)


def plan_counts(sources: list[Source], counts: dict[str, int], seed: int) -> list[Job]:
    """counts[c] jobs for class c. Its sources take turns in a seeded order, so each is augmented about equally often."""
    jobs = []
    for group in sorted(counts):
        members = sorted((s for s in sources if s.group == group), key=lambda s: _digest(f"{seed}/order/{group}/{s.stem}"))
        jobs += [Job(members[j % len(members)], j // len(members)) for j in range(counts[group])]
    return jobs


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def job_seed(seed: int, job: Job, attempt: int = 0) -> int:
    redraw = f"/redraw{attempt}" if attempt else ""
    return _digest(f"{seed}/{job.source.group}/{job.source.stem}/{job.copy}{redraw}") & 0x7FFF_FFFF


# --- writing -------------------------------------------------------------------------


@dataclass
class AugmentResult:
    out: Path
    planned: dict[str, int] = field(default_factory=dict)  # per class
    written: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # sources skipped: "path: why"


def augment(
    jobs: list[Job],
    out: Path,
    pipeline: A.Compose,
    root: Path,
    seed: int = 0,
    fmt: str = "png",
    manifest: str = MANIFEST,
    pipeline_file: str = PIPELINE_FILE,
    on_image: Callable[[int], None] | None = None,
) -> AugmentResult:
    """Write every job's image under `out`, skipping those already there; rows go to out/manifest."""
    if fmt not in SAVE_FORMATS:
        raise SynthgenError(f"--format {fmt}: expected one of {', '.join(SAVE_FORMATS)}")
    out = Path(out)
    if out.is_dir():
        remove_stale_temporaries(out)  # half-written files of a killed run
    _check_pipeline_matches(out / pipeline_file, pipeline)
    with Manifest(out, manifest, MANIFEST_COLUMNS, order=by_class_and_file) as rows:
        done = {row["file"] for row in rows.rows if not row["partner"] or (out / row["partner"]).exists()}
        result, todo = _todo(AugmentResult(out), jobs, done, fmt)
        _run(todo, _Worker(pipeline, out, root, seed, fmt), rows, result, on_image)
    result.unreadable = sorted(set(result.unreadable))
    return result


def _todo(result: AugmentResult, jobs: list[Job], done: set[str], fmt: str) -> tuple[AugmentResult, list[Job]]:
    """Count the planned and existing images per class; the jobs still to do."""
    todo = []
    for job in jobs:
        group, already = job.source.group, job.source.files(job.copy, fmt)[0] in done
        result.planned[group] = result.planned.get(group, 0) + 1
        result.existing[group] = result.existing.get(group, 0) + already
        result.written.setdefault(group, 0)
        if not already:
            todo.append(job)
    return result, todo


def _run(todo: list[Job], worker: "_Worker", rows: Manifest, result: AugmentResult, on_image) -> None:
    """Augment in chunks on a thread pool; each chunk's rows are journaled once its files are whole."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1), thread_name_prefix="synthgen-augment") as pool:
        for start in range(0, len(todo), CHUNK):
            chunk, new_rows = todo[start:start + CHUNK], []
            for job, row in zip(chunk, pool.map(worker, chunk)):
                if isinstance(row, str):
                    result.unreadable.append(row)
                    continue
                new_rows.append(row)
                result.written[job.source.group] += 1
            make_durable([worker.out / f for row in new_rows for f in (row["file"], row["partner"]) if f])
            rows.append(new_rows)
            if on_image:
                on_image(len(chunk))


def augment_folder(
    src: Path,
    out: Path,
    pipeline: A.Compose,
    copies: int | None = None,
    per_class: int | str | None = None,
    seed: int = 0,
    paired: bool = False,
    fmt: str = "png",
    on_image: Callable[[int], None] | None = None,
) -> AugmentResult:
    """`synthgen augment`: `copies` per source image, or enough for `per_class` images per class counting the sources.

    Only the augmented images are written to `out` (use `synthgen balance` for a dataset with the real ones too).
    """
    if (copies is None) == (per_class is None):
        raise SynthgenError("choose one of --copies K (per image) or --per-class N (images per class, counting the real ones)")
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise SynthgenError(f"{out}: is inside {src}; write the augmented images outside the dataset, which is never modified")
    sources = paired_sources(src) if paired else labelled_sources(src)
    jobs = plan_copies(sources, copies) if copies is not None else plan_per_class(sources, per_class, seed)
    return augment(jobs, out, pipeline, src, seed, fmt, on_image=on_image)


def _check_pipeline_matches(saved: Path, pipeline: A.Compose) -> None:
    """A re-run continues a folder only with the pipeline that started it, which is kept beside the manifest."""
    text = pipeline_yaml(pipeline)
    if saved.exists() and saved.read_text() != text:
        raise SynthgenError(f"{saved.parent}: was augmented with the pipeline in {saved}, not this one; write to a new folder or pass --pipeline {saved}")
    if not saved.exists():
        write_atomic(saved, text.encode())


class _Worker:
    """Augments one job; each thread has its own copy of the pipeline, because seeding it is not thread-safe."""

    def __init__(self, pipeline: A.Compose, out: Path, root: Path, seed: int, fmt: str):
        self.serialized = A.to_dict(pipeline)
        self.out, self.root, self.seed, self.fmt = out, root, seed, fmt
        self.local = threading.local()

    def pipeline(self) -> A.Compose:
        if not hasattr(self.local, "pipeline"):
            pipeline = A.from_dict(self.serialized)
            pipeline.add_targets({"image_b": "image"})
            pipeline.save_applied_params = True
            self.local.pipeline = pipeline
        return self.local.pipeline

    def transform(self, job: Job, a: np.ndarray, b: np.ndarray) -> tuple[int, dict]:
        """Apply the pipeline with the job's seed; a draw in which no transform fired (an exact copy) is redrawn."""
        pipeline = self.pipeline()
        for attempt in range(MAX_REDRAWS):
            seed = job_seed(self.seed, job, attempt)
            pipeline.set_random_seed(seed)
            result = pipeline(image=a, image_b=b)
            if result["applied_transforms"]:
                break
        return seed, result

    def __call__(self, job: Job) -> dict | str:
        source = job.source
        try:
            a, b = _read_sides(source)
        except UnreadableImage as error:  # names the file already
            return str(error)
        except (OSError, ValueError, SynthgenError) as error:
            return f"{source.image}: {error}"
        colour = max(a.shape[2], b.shape[2])  # a grey edge map beside a colour photo: augment both in colour
        seed, result = self.transform(job, _with_channels(a, colour), _with_channels(b, colour))
        out_a, out_b = _with_channels(result["image"], a.shape[2]), _with_channels(result["image_b"], b.shape[2])
        file_a, file_b = source.files(job.copy, self.fmt)
        # Not fsynced one by one: _run makes a chunk durable at once before journaling it.
        if source.side_by_side:
            write_atomic(self.out / file_a, encode_array(np.concatenate([out_a, out_b], axis=1), self.fmt), durable=False)
        else:
            write_atomic(self.out / file_a, encode_array(out_a, self.fmt), durable=False)
            if file_b:
                write_atomic(self.out / file_b, encode_array(out_b, self.fmt), durable=False)
        return {
            "file": file_a, "partner": file_b, "class": source.group,
            "source": _relative(source.image, self.root) + (f";{_relative(source.partner, self.root)}" if source.partner else ""),
            "copy": str(job.copy), "seed": str(seed), "transforms": _describe(result["applied_transforms"]),
        }


def _read_sides(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """The image and its partner (itself when unpaired) as uint8 [H, W, C], both the same size."""
    a = load_native(source.image)
    if source.side_by_side:
        half = a.shape[1] // 2
        return a[:, :half], a[:, half:2 * half]
    if source.partner is None:
        return a, a
    b = load_native(source.partner)
    if a.shape[:2] != b.shape[:2]:
        raise SynthgenError(f"its partner {source.partner.name} is {b.shape[1]}x{b.shape[0]}, not {a.shape[1]}x{a.shape[0]}; "
                            "a pair is augmented with one transform, so both sides need the same size")
    return a, b


def _with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return image.mean(axis=2, keepdims=True).round().astype(np.uint8)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _describe(applied: list) -> str:
    """The transforms that ran with their sampled parameters, as compact JSON (image shapes left out)."""
    steps = [{"transform": name, **{k: v for k, v in params.items() if k not in ("shape", "bbox_matrix", "output_shape")}} for name, params in applied]
    return json.dumps(_rounded(steps), separators=(",", ":"))


def _rounded(value):
    """JSON-ready: numpy -> Python, floats to 4 decimals (the parameters, not the pixels, are what a reader wants)."""
    if isinstance(value, dict):
        return {str(key): _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    if isinstance(value, np.ndarray):  # a noise map or a dropout mask is data, not a parameter: give its shape
        return _rounded(value.tolist()) if value.size <= 16 else f"array{list(value.shape)}"
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, (int, np.integer, bool, str)) or value is None:
        return value.item() if isinstance(value, np.generic) else value
    return str(value)
