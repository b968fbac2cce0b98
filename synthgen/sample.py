"""Class-balanced synthetic datasets from a trained run.

Each image i of class c has its own seed, derived from (--seed, c, i), so
the output does not depend on batching, a re-run gives byte-identical
files, and a run into an existing folder continues at the next index.
Every batch passes a `BatchCheck` before it is written: the metrics-and-gate
issue plugs its verdicts in there; the default accepts everything.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from synthgen import checkpoint as ckpt
from synthgen.data.folders import discover_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import SAVE_FORMATS, encode, to_uint8, write_atomic
from synthgen.models.conditioning import build_models
from synthgen.recipe import validate

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["file", "class", "seed", "checkpoint_sha256", "truncation"]


# --- the gate's plug -----------------------------------------------------------


@dataclass
class Verdict:
    accepted: bool
    reason: str = ""


class BatchCheck(Protocol):
    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict:
        """images: uint8 [N, C, H, W] about to be written for `class_name`."""


def accept_all(class_name: str, images: torch.Tensor) -> Verdict:  # noqa: ARG001
    return Verdict(True)


# --- the trained generator -----------------------------------------------------


class TrainedGenerator:
    """The sampling generator of a run's latest checkpoint (EMA weights when trained with EMA)."""

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.run_dir = Path(run_dir)
        checkpoint = ckpt.require_checkpoint(self.run_dir)
        self.recipe = validate(checkpoint.recipe, source=f"{checkpoint.path}/state.json")
        if self.recipe.method != "cgan":
            raise SynthgenError(f"{self.run_dir}: a {self.recipe.method} run translates images; use synthgen translate IN OUT --weights {self.run_dir}")
        self.class_names: list[str] = checkpoint.class_names
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        weights = "G_ema" if (checkpoint.path / "G_ema.safetensors").exists() else "G"
        self.generator, _ = build_models(self.recipe, len(self.class_names))
        ckpt.restore_network(self.generator, checkpoint.weights(weights), checkpoint.path / f"{weights}.safetensors")
        self.generator.to(self.device).eval()
        self.checkpoint_sha256 = checkpoint.sha256(weights)
        self.step = checkpoint.step

    def class_index(self, name: str) -> int:
        if name not in self.class_names:
            raise SynthgenError(f"--class {name}: unknown class (known: {', '.join(self.class_names)})")
        return self.class_names.index(name)

    @torch.no_grad()
    def generate(self, class_index: int, seeds: list[int], truncation: float | None) -> torch.Tensor:
        """uint8 images [len(seeds), C, H, W], one per seed, in fp32 for reproducible bytes."""
        z = torch.stack([latent(seed, self.recipe.model.z_dim, truncation) for seed in seeds]).to(self.device)
        y = torch.full((len(seeds),), class_index, dtype=torch.long, device=self.device)
        return to_uint8(self.generator(z, y))


def latent(seed: int, z_dim: int, truncation: float | None) -> torch.Tensor:
    """z ~ N(0, I); with truncation psi, entries with |z| > psi are redrawn (BigGAN)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(z_dim, generator=gen)
    if truncation is not None:
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
            outside = z.abs() > truncation
    return z


def image_seed(seed: int, class_name: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{class_name}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


# --- plans: how many images of which class ---------------------------------------


def plan_classes(generator: TrainedGenerator, classes: list[str], n: int) -> dict[str, int]:
    for name in classes:
        generator.class_index(name)  # an unknown class is an error listing the known ones
    return {name: n for name in classes}


def plan_balanced(generator: TrainedGenerator, n: int) -> dict[str, int]:
    return {name: n for name in generator.class_names}


def plan_fill_to(generator: TrainedGenerator, data_dir: Path, n: int) -> dict[str, int]:
    """Top every class of an existing dataset up to n images, counting its real images."""
    found = discover_labelled(data_dir)
    real = {name: found.labels.count(i) for i, name in enumerate(found.class_names)}
    missing = [name for name in real if name not in generator.class_names]
    if missing:
        raise SynthgenError(f"--data {data_dir}: classes {missing} are not known to the model (known: {', '.join(generator.class_names)})")
    return {name: max(0, n - real.get(name, 0)) for name in generator.class_names}


# --- writing a dataset ------------------------------------------------------------


@dataclass
class SampleResult:
    out: Path
    written: dict[str, int] = field(default_factory=dict)  # new files per class
    existing: dict[str, int] = field(default_factory=dict)  # already there before this run
    rejected: dict[str, str] = field(default_factory=dict)  # class -> why the gate stopped it


def sample_dataset(
    generator: TrainedGenerator,
    plan: dict[str, int],
    out: Path,
    seed: int = 0,
    truncation: float | None = None,
    fmt: str = "png",
    batch_size: int = 64,
    check: BatchCheck = accept_all,
    on_batch: Callable[[int], None] | None = None,
) -> SampleResult:
    """Write plan[c] images of each class c under out/<c>/, continuing what is already there."""
    if fmt not in SAVE_FORMATS:
        raise SynthgenError(f"--format {fmt}: expected one of {', '.join(SAVE_FORMATS)}")
    out = Path(out)
    rows = read_manifest(out)
    result = SampleResult(out)
    for name, wanted in plan.items():
        present = {_index_of(row) for row in rows if row["class"] == name}
        missing = [i for i in range(wanted) if i not in present]
        result.existing[name], result.written[name] = len(present), 0
        for start, indices in _aligned_batches(missing, batch_size):
            # Batches are aligned to multiples of batch_size, so every index is
            # always generated in the same batch, whatever was there before.
            seeds = [image_seed(seed, name, i) for i in range(start, start + batch_size)]
            batch = generator.generate(generator.class_index(name), seeds, truncation)
            keep = [i - start for i in indices]
            images = batch[keep]
            verdict = check(name, images)
            if not verdict.accepted:
                result.rejected[name] = verdict.reason
                break
            new_rows = _write_images(out, name, images, indices, [seeds[k] for k in keep], fmt, generator, truncation)
            rows += new_rows
            write_manifest(out, rows)
            result.written[name] += len(new_rows)
            if on_batch:
                on_batch(len(new_rows))
    return result


def _aligned_batches(indices: list[int], batch_size: int) -> list[tuple[int, list[int]]]:
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(i - i % batch_size, []).append(i)
    return sorted(groups.items())


def _index_of(row: dict) -> int:
    return int(Path(row["file"]).stem.rsplit("_", 1)[-1])


def _write_images(out, name, images, indices, seeds, fmt, generator, truncation) -> list[dict]:
    rows = []
    for image, index, seed in zip(images, indices, seeds):
        relative = f"{name}/{name}_{index:06d}.{fmt}"
        write_atomic(out / relative, encode(image, fmt))
        rows.append(
            {
                "file": relative,
                "class": name,
                "seed": str(seed),
                "checkpoint_sha256": generator.checkpoint_sha256,
                "truncation": "" if truncation is None else str(truncation),
            }
        )
    return rows


def read_manifest(out: Path) -> list[dict]:
    path = out / MANIFEST
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # A row only counts when its file is there (a file deleted by hand is regenerated).
    return [row for row in rows if (out / row["file"]).exists()]


def write_manifest(out: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda row: (row["class"], _index_of(row))))  # canonical order
    write_atomic(out / MANIFEST, buffer.getvalue().encode())
