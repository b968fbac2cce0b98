"""Class-balanced synthetic datasets from a trained run.

Each image i of class c has its own seed, derived from (--seed, c, i), so
the output does not depend on batching, a re-run gives byte-identical
files, and a run into an existing folder continues at the next index.

Every batch passes a `BatchCheck` before it is written: `synthgen sample`
passes the gate (metrics/gate.py), which compares the whole batch with real
images of its class. A rejected batch is regenerated with fresh seeds (the
attempt number enters the seed), up to `gate.retries` times; a class that
still fails is stopped with the reason while the other classes complete.
Batches are aligned to multiples of the batch size and always generated
whole, so a verdict never depends on what was already on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from synthgen import checkpoint as ckpt
from synthgen.data.folders import class_counts, discover_labelled, target_count
from synthgen.errors import SynthgenError
from synthgen.imaging import SAVE_FORMATS, encode, to_uint8, write_atomic
from synthgen.manifest import read_rows, write_rows
from synthgen.metrics.gate import Verdict
from synthgen.models.conditioning import build_models
from synthgen.recipe import validate

MANIFEST = "manifest.csv"
GATE_REPORT = "gate_report.json"
MANIFEST_COLUMNS = ["file", "class", "seed", "checkpoint_sha256", "truncation", "attempt", "gate"]


# --- the gate's plug -----------------------------------------------------------


class BatchCheck(Protocol):
    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict:
        """images: uint8 [N, C, H, W] about to be written for `class_name`."""


def accept_all(class_name: str, images: torch.Tensor) -> Verdict:  # noqa: ARG001
    return Verdict(True, "off")


# --- the trained generator -----------------------------------------------------


class TrainedGenerator:
    """The sampling generator of a run's checkpoint (EMA weights when trained with EMA).

    `checkpoint`: `best` (the one that scored best during training; the latest when none was recorded),
    `latest`, or a step number.
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", checkpoint: str = "best"):
        self.run_dir = Path(run_dir)
        checkpoint = ckpt.require_checkpoint(self.run_dir, checkpoint)
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

    def override_gate(self, overrides: list[str]) -> None:
        """Apply `gate.KEY=VALUE` overrides (sample --set) to the run's gate settings."""
        from synthgen.recipe import with_gate_overrides

        self.recipe = self.recipe.model_copy(update={"gate": with_gate_overrides(self.recipe.gate, overrides)})

    def gate(self, batch_size: int, real_root: str | Path | None = None, progress=None):
        """The gate for batches of `batch_size` of this run (metrics/gate.py)."""
        from synthgen.metrics.gate import gate_for_run

        return gate_for_run(self.run_dir, self.recipe, self.class_names, batch_size, real_root, self.device, progress)

    def class_index(self, name: str) -> int:
        if name not in self.class_names:
            raise SynthgenError(f"--class {name}: unknown class (known: {', '.join(self.class_names)})")
        return self.class_names.index(name)

    def generate(self, class_index: int, seeds: list[int], truncation: float | None) -> torch.Tensor:
        """uint8 images [len(seeds), C, H, W], one per seed, in fp32 for reproducible bytes."""
        z = torch.stack([latent(seed, self.recipe.model.z_dim, truncation) for seed in seeds]).to(self.device)
        y = torch.full((len(seeds),), class_index, dtype=torch.long, device=self.device)
        with torch.inference_mode():  # no autograd bookkeeping at all
            images = to_uint8(self.generator(z, y))
        return images.clone()  # an ordinary tensor again, for whatever checks the batch


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


def image_seed(seed: int, class_name: str, index: int, attempt: int = 0) -> int:
    """The seed of image `index` of a class; a retry after a rejected batch (attempt > 0) gets fresh seeds."""
    key = f"{seed}/{class_name}/{index}" + (f"/retry{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


# --- plans: how many images of which class ---------------------------------------


def plan_classes(generator: TrainedGenerator, classes: list[str], n: int) -> dict[str, int]:
    for name in classes:
        generator.class_index(name)  # an unknown class is an error listing the known ones
    return {name: n for name in classes}


def plan_balanced(generator: TrainedGenerator, n: int) -> dict[str, int]:
    return {name: n for name in generator.class_names}


def plan_fill_to(generator: TrainedGenerator, data_dir: Path, n: int | str) -> dict[str, int]:
    """Top every class of an existing dataset up to n images (`max`: the largest class), counting its real images."""
    real = class_counts(discover_labelled(data_dir))
    n = target_count(n, real, "--fill-to")
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
    retried: dict[str, int] = field(default_factory=dict)  # class -> batches regenerated after a rejection
    batches: list[dict] = field(default_factory=list)  # every verdict, for gate_report.json


def sample_dataset(
    generator: TrainedGenerator,
    plan: dict[str, int],
    out: Path,
    seed: int = 0,
    truncation: float | None = None,
    fmt: str = "png",
    batch_size: int = 64,
    check: BatchCheck = accept_all,
    retries: int = 0,
    on_batch: Callable[[int], None] | None = None,
    subfolder: str = "",
    manifest: str = MANIFEST,
) -> SampleResult:
    """Write plan[c] images of each class c under out/<c>/[subfolder/], continuing what is already there.

    `subfolder` and `manifest` let `balance` keep its synthetic part beside the real and augmented ones.
    """
    if fmt not in SAVE_FORMATS:
        raise SynthgenError(f"--format {fmt}: expected one of {', '.join(SAVE_FORMATS)}")
    out = Path(out)
    rows = read_manifest(out, manifest)
    result = SampleResult(out)
    for name, wanted in plan.items():
        present = {_index_of(row) for row in rows if row["class"] == name}
        missing = [i for i in range(wanted) if i not in present]
        result.existing[name], result.written[name], result.retried[name] = len(present), 0, 0
        for start, indices in _aligned_batches(missing, batch_size):
            accepted = _generate_checked(generator, name, start, batch_size, seed, truncation, check, retries, result)
            if accepted is None:
                break
            batch, seeds, attempt, verdict = accepted
            keep = [i - start for i in indices]
            relatives = [image_path(name, index, fmt, subfolder) for index in indices]
            new_rows = _write_images(out, relatives, name, batch[keep], [seeds[k] for k in keep], fmt, generator, truncation, attempt, verdict)
            rows += new_rows
            write_manifest(out, rows, manifest)
            result.written[name] += len(new_rows)
            if on_batch:
                on_batch(len(new_rows))
    return result


def _generate_checked(generator, name, start, batch_size, seed, truncation, check, retries, result):
    """Generate the aligned batch at `start`; on rejection retry with fresh seeds. None when every attempt failed."""
    for attempt in range(retries + 1):
        seeds = [image_seed(seed, name, i, attempt) for i in range(start, start + batch_size)]
        batch = generator.generate(generator.class_index(name), seeds, truncation)
        verdict = check(name, batch)
        result.batches.append({"class": name, "start": start, "attempt": attempt, "accepted": verdict.accepted,
                               "figures": verdict.figures, "failed": verdict.failed})
        if verdict.accepted:
            return batch, seeds, attempt, verdict
        result.retried[name] += attempt < retries
    result.rejected[name] = f"{retries + 1} batches in a row rejected; last: {verdict.reason}"
    return None


def _aligned_batches(indices: list[int], batch_size: int) -> list[tuple[int, list[int]]]:
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(i - i % batch_size, []).append(i)
    return sorted(groups.items())


def image_path(name: str, index: int, fmt: str, subfolder: str = "") -> str:
    """Where image `index` of class `name` goes, relative to the output folder."""
    folder = f"{name}/{subfolder}/" if subfolder else f"{name}/"
    return f"{folder}{name}_{index:06d}.{fmt}"


def _index_of(row: dict) -> int:
    return int(Path(row["file"]).stem.rsplit("_", 1)[-1])


# PNG/JPEG/WebP encoding (zlib, libjpeg) and the write + fsync release the GIL,
# so a few threads encode and write a batch in parallel with each other.
_WRITERS = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2), thread_name_prefix="synthgen-write")


def _write_one(path: Path, image: torch.Tensor, fmt: str) -> None:
    write_atomic(path, encode(image, fmt))


def _write_images(out, relatives, name, images, seeds, fmt, generator, truncation, attempt, verdict) -> list[dict]:
    """Encode and write a batch on the writer threads; returns once every file is on disk."""
    (out / relatives[0]).parent.mkdir(parents=True, exist_ok=True)
    list(_WRITERS.map(_write_one, [out / r for r in relatives], images, [fmt] * len(relatives)))  # re-raises a failed write
    return [
        {
            "file": relative,
            "class": name,
            "seed": str(seed),
            "checkpoint_sha256": generator.checkpoint_sha256,
            "truncation": "" if truncation is None else str(truncation),
            "attempt": str(attempt),
            "gate": "passed" if verdict.figures else verdict.reason,
        }
        for relative, seed in zip(relatives, seeds)
    ]


def write_gate_report(out: Path, result: SampleResult, generator: TrainedGenerator, gate=None) -> Path:
    """gate_report.json beside the manifest: per class the status, limits, real baselines and every batch verdict."""
    classes = {}
    for name in result.written:
        status = "rejected" if name in result.rejected else ("passed" if gate is not None else "off")
        entry = {"status": status, "existing": result.existing[name], "written": result.written[name], "retried": result.retried[name]}
        if name in result.rejected:
            entry["reason"] = result.rejected[name]
        if gate is not None:
            entry.update(gate.describe(name))
            if not entry["checked"]:
                entry["status"] = "unchecked"
        entry["batches"] = [b for b in result.batches if b["class"] == name]
        classes[name] = entry
    report = {"checkpoint_sha256": generator.checkpoint_sha256, "step": generator.step, "classes": classes}
    write_atomic(out / GATE_REPORT, json.dumps(report, indent=1).encode())
    return out / GATE_REPORT


def read_manifest(out: Path, name: str = MANIFEST) -> list[dict]:
    return read_rows(out, name)


def write_manifest(out: Path, rows: list[dict], name: str = MANIFEST) -> None:
    write_rows(out, name, rows, MANIFEST_COLUMNS, order=lambda row: (row["class"], _index_of(row)))
