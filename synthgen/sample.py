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

An `ImageFilter` (the gate's `recognised_only`) judges images one by one
before their batch is checked: a refused image is drawn again from the
next seed of its own index (draw d enters the seed), so the files still
depend on nothing but (--seed, class, index).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from synthgen import checkpoint as ckpt
from synthgen.data.folders import class_counts, discover_labelled, target_count
from synthgen.errors import SynthgenError
from synthgen.imaging import SAVE_FORMATS, encode, make_durable, remove_stale_temporaries, to_uint8, write_atomic
from synthgen.manifest import MANIFEST, Manifest, continue_only_with
from synthgen.metrics.gate import Verdict, filters_images
from synthgen.train import METHODS
from synthgen.recipe import validate

GATE_REPORT = "gate_report.json"
MANIFEST_COLUMNS = ["file", "class", "seed", "checkpoint_sha256", "truncation", "attempt", "gate"]
SETTINGS = "sample.json"  # what a folder's images were made with; `sample` continues it only with the same


# --- the gate's plug -----------------------------------------------------------


class BatchCheck(Protocol):
    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict:
        """images: uint8 [N, C, H, W] about to be written for `class_name`."""


class SetCheck(Protocol):
    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict | None:
        """images: uint8 [N, C, H, W], everything written for `class_name` once it is complete; None: unchecked."""


class ImageFilter(Protocol):
    def __call__(self, class_name: str, images: torch.Tensor) -> torch.Tensor:
        """bool [N]: which of these uint8 images may be written as `class_name`; the others are drawn again."""


# An image the filter refuses is drawn again with the next seed of its index; a slot still refused after this
# many draws rejects its batch (a class whose images the filter keeps one time in 20 has such a slot in most batches).
MAX_DRAWS = 64


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
        self.method = METHODS[self.recipe.method]
        if self.method.produces != "images":
            raise SynthgenError(f"{self.run_dir}: a {self.recipe.method} run translates images; use synthgen translate IN OUT --weights {self.run_dir}")
        self.class_names: list[str] = checkpoint.class_names
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
        weights = checkpoint.generator_name
        self.checkpoint_sha256 = checkpoint.verified_sha256(weights)  # refuses a missing, damaged or replaced file
        self.generator = self.method.sampling_network(self.recipe, len(self.class_names))
        ckpt.restore_network(self.generator, checkpoint.weights(weights), checkpoint.path / f"{weights}.safetensors")
        self.generator.to(self.device).eval()
        self.step = checkpoint.step
        self.latent_options: dict = {}  # keyword arguments of the method's `latent` (InfoGAN: fixed codes)
        # A text-conditioned run (text2image) generates from prompts, encoded with the vocabulary of its captions.
        self.vocabulary = self.method.prompt_vocabulary(checkpoint) if getattr(self.method, "text_conditioned", False) else None
        self.prompts: dict[str, str] = {}  # output folder -> its prompt (plan_prompts)

    @property
    def text_conditioned(self) -> bool:
        return self.vocabulary is not None

    @property
    def manifest_columns(self) -> list[str]:
        return MANIFEST_COLUMNS + ["prompt"] if self.text_conditioned else MANIFEST_COLUMNS

    def fix_codes(self, assignments: list[str]) -> None:
        """`--code NAME=VALUE`: those latent codes take that value in every image (methods that declare codes)."""
        if not assignments:
            return
        with_codes = [name for name, method in METHODS.items() if hasattr(method, "parse_codes")]
        if not hasattr(self.method, "parse_codes"):
            raise SynthgenError(f"--code: {self.run_dir} is a run of method {self.recipe.method}, which has no latent codes (methods with codes: {', '.join(with_codes)})")
        self.latent_options = {"codes": self.method.parse_codes(self.recipe, assignments)}

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
        if self.text_conditioned:
            raise SynthgenError(f"{self.run_dir}: a {self.recipe.method} run generates from text; use synthgen sample --text PROMPT or --captions FILE")
        y = torch.full((len(seeds),), class_index, dtype=torch.long)
        return self._generate(seeds, truncation, y)

    def generate_prompt(self, prompt: str, seeds: list[int], truncation: float | None) -> torch.Tensor:
        """uint8 images of `prompt`, one per seed (words the run never saw are <unk>)."""
        ids = self.method.prompt_ids(self.recipe, self.vocabulary, [prompt])
        return self._generate(seeds, truncation, ids.expand(len(seeds), -1))

    def generate_named(self, name: str, seeds: list[int], truncation: float | None) -> torch.Tensor:
        """Images for the plan entry `name`: a class, or the output folder of a prompt."""
        if self.text_conditioned:
            return self.generate_prompt(self.prompts[name], seeds, truncation)
        return self.generate(self.class_index(name), seeds, truncation)

    def _generate(self, seeds: list[int], truncation: float | None, condition: torch.Tensor) -> torch.Tensor:
        # A generator with a `truncation` attribute truncates in its own latent space (StyleGAN's W, toward
        # the class's mean w); for every other one the method truncates z.
        if hasattr(self.generator, "truncation"):
            self.generator.truncation, truncation = truncation, None
        z = torch.stack([self.method.latent(self.recipe, seed, truncation, **self.latent_options) for seed in seeds]).to(self.device)
        with torch.inference_mode():  # no autograd bookkeeping at all
            images = to_uint8(self.generator(z, condition.to(self.device)))
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


def image_seed(seed: int, class_name: str, index: int, attempt: int = 0, draw: int = 0) -> int:
    """The seed of image `index` of a class; a retry after a rejected batch (attempt > 0) and a redraw of an image the
    filter refused (draw > 0) get fresh seeds."""
    key = f"{seed}/{class_name}/{index}" + (f"/retry{attempt}" if attempt else "") + (f"/draw{draw}" if draw else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


# --- plans: how many images of which class ---------------------------------------


def plan_classes(generator: TrainedGenerator, classes: list[str], n: int) -> dict[str, int]:
    for name in classes:
        generator.class_index(name)  # an unknown class is an error listing the known ones
    return {name: n for name in classes}


def plan_balanced(generator: TrainedGenerator, n: int) -> dict[str, int]:
    return {name: n for name in generator.class_names}


def plan_prompts(generator: TrainedGenerator, prompts: list[str], n: int, option: str = "--text") -> dict[str, int]:
    """n images of every prompt, each in its own folder (named after its words); the manifest records the prompt."""
    if not generator.text_conditioned:
        texts = [name for name, method in METHODS.items() if getattr(method, "text_conditioned", False)]
        raise SynthgenError(f"{option}: {generator.run_dir} is a run of method {generator.recipe.method}, which is not conditioned on text (text methods: {', '.join(texts)})")
    for prompt in prompts:
        generator.prompts.setdefault(prompt_folder(prompt), prompt)  # prompts with the same words are one prompt
    return {folder: n for folder in generator.prompts}


def prompt_folder(prompt: str, limit: int = 60) -> str:
    """The folder of a prompt's images: its words joined by '-' ('a red flower' -> a-red-flower), a hash added when cut short."""
    from synthgen.data.captions import words

    slug = "-".join(words(prompt)) or "prompt"
    if len(slug) > limit:
        slug = f"{slug[:limit].rstrip('-')}-{hashlib.sha256(slug.encode()).hexdigest()[:8]}"
    return slug


def read_prompts(path: Path) -> list[str]:
    """--captions FILE: one prompt per line, blank lines skipped."""
    try:
        prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthgenError(f"--captions {path}: cannot read ({exc.__class__.__name__}: {exc}); expected a text file, one prompt per line") from None
    if not prompts:
        raise SynthgenError(f"--captions {path}: no prompts (expected one prompt per line)")
    return prompts


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
    sets: dict[str, Verdict] = field(default_factory=dict)  # class -> the set check of everything written for it
    retried: dict[str, int] = field(default_factory=dict)  # class -> batches regenerated after a rejection
    drawn: dict[str, list[int]] = field(default_factory=dict)  # with an image filter: class -> [images drawn, images it kept]
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
    set_check: SetCheck | None = None,
    keep: ImageFilter | None = None,
) -> SampleResult:
    """Write plan[c] images of each class c under out/<c>/[subfolder/], continuing what is already there.

    `subfolder` and `manifest` let `balance` keep its synthetic part beside the real and augmented ones.
    A batch is encoded and written on the writer threads while the next one is generated and gated;
    its rows are journaled once its files are whole (manifest.py). Once every batch is written, `set_check`
    judges each complete class as a whole (everything written for it, earlier runs included): a class it
    fails is rejected too, its files kept and listed. `keep` filters images one by one before `check` sees
    their batch (see the module's docstring).
    """
    if fmt not in SAVE_FORMATS:
        raise SynthgenError(f"--format {fmt}: expected one of {', '.join(SAVE_FORMATS)}")
    out = check_output_folder(out)
    if out.is_dir():
        remove_stale_temporaries(out)  # half-written files of a killed run
    result = SampleResult(out)
    with open_manifest(out, manifest, generator.manifest_columns) as rows:
        present: dict[str, set[int]] = {}
        for row in rows.rows:
            present.setdefault(row["class"], set()).add(_index_of(row))
        short = {name: wanted - sum(i < wanted for i in present.get(name, ())) for name, wanted in plan.items()}
        check_free_space(out, generator, fmt, sum(short.values()))  # before listing what is missing: -n may be absurd
        batches = []
        for name, wanted in plan.items():
            result.existing[name], result.written[name], result.retried[name] = len(present.get(name, ())), 0, 0
            if keep is not None:
                result.drawn[name] = [0, 0]
            todo = [i for i in range(wanted) if i not in present.get(name, ())]
            batches += [(name, start, indices) for start, indices in _aligned_batches(todo, batch_size)]
        draw = _Draw(generator, batch_size, seed, truncation, check, keep)
        checked = _checked_batches(draw, batches, retries, result)
        with _Writes(rows, on_batch) as writes:
            for (name, start, indices), (batch, seeds, attempt, verdict) in checked:
                missing = [i - start for i in indices]
                relatives = [image_path(name, index, fmt, subfolder) for index in indices]
                new_rows = _rows(relatives, name, [seeds[k] for k in missing], generator, truncation, attempt, verdict)
                writes.submit(out, relatives, batch[missing], fmt, new_rows)
                result.written[name] += len(new_rows)
        if set_check is not None:
            _check_sets(set_check, out, rows.rows, [name for name in plan if name not in result.rejected], generator, result)
    return result


def _check_sets(set_check: SetCheck, out: Path, rows: list[dict], classes: list[str], generator: TrainedGenerator, result: SampleResult) -> None:
    """The set check of every complete class, read back from disk (so a continued folder is judged whole)."""
    from synthgen.imaging import UnreadableImage, load_image

    data = generator.recipe.data
    files: dict[str, list[str]] = {}
    for row in rows:
        files.setdefault(row["class"], []).append(row["file"])
    for name in classes:
        images = []
        for file in files.get(name, []):
            try:
                images.append(load_image(out / file, data.channels, data.image_size, "crop"))
            except UnreadableImage:  # removed or damaged since: the next run writes it again
                continue
        verdict = set_check(name, torch.stack(images)) if images else None
        if verdict is None:
            continue
        result.sets[name] = verdict
        if not verdict.accepted:
            result.rejected[name] = verdict.reason


def continue_only_with_same_images(out: Path, generator: TrainedGenerator, seed: int, truncation: float | None, fmt: str,
                                   gated: bool, codes: list[str] = ()) -> None:
    """`synthgen sample` into a folder it wrote before continues it only with what decides its images.

    Image i of a class is a function of these settings; with others, a folder would hold two kinds of image
    under one manifest (a re-run with another checkpoint or without the gate's filter would add to the old
    images, keep them, and report them as existing). `-n`, the classes and the batch size may change.
    """
    settings = {
        "checkpoint_sha256": generator.checkpoint_sha256, "seed": seed, "truncation": truncation, "format": fmt,
        "gate": gated, "recognised_only": gated and filters_images(generator.recipe.gate, generator.class_names), "codes": sorted(codes),
    }
    continue_only_with(check_output_folder(out), SETTINGS, settings, "holds images sampled")


def check_output_folder(out: Path, option: str = "--out") -> Path:
    """`out` is a folder, or nothing yet (it is created): a file there is a one-line error naming the option."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthgenError(f"{option} {out}: is a file, expected a folder (created when missing); pass another path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SynthgenError(f"{option} {out}: {parent} is a file, expected a folder; pass another path")
            break
    return out


# Bytes per pixel channel of a typical file, against the raw uint8 pixels: PNG's deflate gains little on
# generated images, JPEG/WebP at quality 95 keep about a third. Each file also takes whole blocks on disk.
BYTES_PER_RAW = {"png": 0.8, "jpg": 0.35, "webp": 0.35}
FILE_OVERHEAD = 200  # format headers
ROW_BYTES = 400  # a manifest row, in the journal and again in the compacted manifest


def estimated_bytes(images: int, channels: int, size: int, fmt: str, block: int = 4096) -> int:
    """About what `images` files of size x size x channels take on disk in `fmt`, their manifest rows included."""
    per_file = FILE_OVERHEAD + BYTES_PER_RAW[fmt] * channels * size * size
    on_disk = -(-int(per_file) // block) * block
    return images * (on_disk + ROW_BYTES)


def check_free_space(out: Path, generator: TrainedGenerator, fmt: str, images: int) -> None:
    """Refuse, before generating anything, a dataset that cannot fit on the disk of `out` (with the figures)."""
    if not images:
        return
    existing = next(p for p in (out, *out.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    block = os.statvfs(existing).f_frsize if hasattr(os, "statvfs") else 4096
    data = generator.recipe.data
    needed = estimated_bytes(images, data.channels, data.image_size, fmt, block)
    if needed > usage.free:
        raise SynthgenError(
            f"{out}: {images:,} {fmt} images of {data.image_size}x{data.image_size}x{data.channels} need about {_gb(needed)} "
            f"({needed // images:,} bytes each on disk, manifest included), but {existing} has {_gb(usage.free)} free; lower -n or free some space"
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def open_manifest(out: Path, name: str = MANIFEST, columns: list[str] = MANIFEST_COLUMNS) -> Manifest:
    """The sampling manifest of `out`, sorted by class and index when compacted."""
    return Manifest(out, name, columns, order=_order, keep=_has_index)


def _order(row: dict) -> tuple:
    return row["class"], _index_of(row)


@dataclass
class _Draw:
    """How one batch of a class is drawn: seeds, generator, the per-image filter, and the gate's check on its thread."""

    generator: TrainedGenerator
    batch_size: int
    seed: int
    truncation: float | None
    check: BatchCheck
    keep: ImageFilter | None

    def launch(self, job, attempt: int, result: SampleResult):
        """Generate the aligned batch of `job` for `attempt` (filtered image by image) and hand it to the gate thread."""
        name, start, _ = job
        seeds = [image_seed(self.seed, name, i, attempt) for i in range(start, start + self.batch_size)]
        batch = self.generator.generate_named(name, seeds, self.truncation)
        if self.keep is None:
            return job, attempt, seeds, batch, _GATE.submit(self.check, name, batch)
        refused = self._redraw_refused(name, start, attempt, seeds, batch, result.drawn[name])
        if refused:  # the gate need not look: this batch cannot be written whole
            share = result.drawn[name][1] / result.drawn[name][0]
            verdict = Verdict(False, f"{len(refused)} of {self.batch_size} images still not recognised as {name} after {MAX_DRAWS} draws each "
                                     f"(the domain classifier recognised {share:.0%} of the images drawn for it); train longer or sample without gate.recognised_only")
            future: Future = Future()
            future.set_result(verdict)
            return job, attempt, seeds, batch, future
        return job, attempt, seeds, batch, _GATE.submit(self.check, name, batch)

    def _redraw_refused(self, name, start, attempt, seeds, batch, tally) -> list[int]:
        """Replace (in place) every image the filter refuses by the next draw of its index; the slots still refused."""
        refused = (~self.keep(name, batch)).nonzero().flatten().tolist()
        tally[0] += len(seeds)
        for draw in range(1, MAX_DRAWS):
            if not refused:
                break
            fresh = [image_seed(self.seed, name, start + k, attempt, draw) for k in refused]
            images = self.generator.generate_named(name, fresh, self.truncation)
            kept = self.keep(name, images).tolist()
            tally[0] += len(fresh)
            for k, new_seed, image, ok in zip(refused, fresh, images, kept):
                if ok:
                    seeds[k], batch[k] = new_seed, image
            refused = [k for k, ok in zip(refused, kept) if not ok]
        tally[1] += len(seeds) - len(refused)
        return refused


def _checked_batches(draw: _Draw, batches, retries, result):
    """(batch, accepted images) for every (class, start, indices) in `batches`, in order; a class stops at its first failure.

    Batch j + 1 is generated while batch j is checked on the gate thread, so the generator seldom waits
    for the gate; only a class that fails outright costs one batch generated in vain.
    """
    ahead = None
    for job in [*batches, None]:
        launched = draw.launch(job, 0, result) if job and job[0] not in result.rejected else None
        if ahead is not None and ahead[0][0] not in result.rejected:
            accepted = _settle(draw, ahead, retries, result)
            if accepted is not None:
                yield ahead[0], accepted
        ahead = launched


def _settle(draw: _Draw, launched, retries, result):
    """The verdict on a launched batch; on rejection retry with fresh seeds. None when every attempt failed."""
    job, attempt, seeds, batch, verdict = launched
    name, start, _ = job
    while True:
        verdict = verdict.result()
        result.batches.append({"class": name, "start": start, "attempt": attempt, "accepted": verdict.accepted,
                               "figures": verdict.figures, "failed": verdict.failed})
        if verdict.accepted:
            return batch, seeds, attempt, verdict
        if attempt == retries:
            result.rejected[name] = f"{retries + 1} batches in a row rejected; last: {verdict.reason}"
            return None
        result.retried[name] += 1
        _, attempt, seeds, batch, verdict = draw.launch(job, attempt + 1, result)


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
def _writer_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2), thread_name_prefix="synthgen-write")


# The gate runs beside the generator with a quarter of the intra-op threads (one on 2 cores): the generator
# keeps the cores, the gate fills the gaps its forward leaves, and the two oversubscribe the cores little.
def _gate_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthgen-gate", initializer=_fewer_threads)


def _fewer_threads() -> None:
    # OpenMP's thread count is per thread, so the generator's stays; torch also keeps this as the default
    # of threads that start torch work later (the sampling thread has started long before: it generated first).
    torch.set_num_threads(max(1, torch.get_num_threads() // 4))


_WRITERS, _GATE = _writer_pool(), _gate_thread()
# A forked process has none of its parent's threads: the inherited pools would wait for them forever.
os.register_at_fork(after_in_child=lambda: globals().update(_WRITERS=_writer_pool(), _GATE=_gate_thread()))


def _write_one(path: Path, image: torch.Tensor, fmt: str) -> None:
    write_atomic(path, encode(image, fmt), durable=False)  # made durable per batch, before it is journaled


class _Writes:
    """Batches being written on the writer threads while the next is generated; each journaled once whole.

    At most `depth` batches are in flight (memory stays bounded); leaving the block waits for all of them,
    and a failed write is raised once the others have finished, so no thread writes after it returns.
    """

    def __init__(self, manifest: Manifest, on_batch: Callable[[int], None] | None, depth: int = 2):
        self.manifest, self.on_batch, self.depth = manifest, on_batch, depth
        self.pending: deque[tuple[list[Future], list[Path], list[dict]]] = deque()

    def submit(self, out: Path, relatives: list[str], images: torch.Tensor, fmt: str, rows: list[dict]) -> None:
        (out / relatives[0]).parent.mkdir(parents=True, exist_ok=True)
        paths = [out / relative for relative in relatives]
        futures = [_WRITERS.submit(_write_one, path, image, fmt) for path, image in zip(paths, images)]
        self.pending.append((futures, paths, rows))
        while self.pending and (len(self.pending) > self.depth or all(f.done() for f in self.pending[0][0])):
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        futures, paths, rows = self.pending.popleft()
        wait(futures)  # all of them, even after a failure: no thread may still write once this raises
        for future in futures:
            future.result()  # re-raises a failed write: the batch is not journaled
        make_durable(paths)  # a journaled row names a file on disk, even after a power cut
        self.manifest.append(rows)
        if self.on_batch:
            self.on_batch(len(rows))

    def __enter__(self) -> "_Writes":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        failure = None
        while self.pending:
            try:
                self._finish_oldest()
            except Exception as exc:  # noqa: BLE001 - keep finishing the others, raise the first failure below
                failure = failure or exc
        if failure is not None and error is None:
            raise failure


def _rows(relatives, name, seeds, generator, truncation, attempt, verdict) -> list[dict]:
    """The manifest rows of one batch."""
    return [
        {
            "file": relative,
            "class": name,
            "seed": str(seed),
            "checkpoint_sha256": generator.checkpoint_sha256,
            "truncation": "" if truncation is None else str(truncation),
            "attempt": str(attempt),
            "gate": "passed" if verdict.figures else verdict.reason,
            **({"prompt": generator.prompts[name]} if generator.text_conditioned else {}),
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
        if name in result.sets:
            entry["set"] = _set_entry(result.sets[name])
        if name in result.drawn:  # gate.recognised_only: how many images were drawn to write the recognised ones
            drawn, kept = result.drawn[name]
            entry["recognised_only"] = {"drawn": drawn, "kept": kept, "kept_share": kept / drawn if drawn else None}
        entry["batches"] = [b for b in result.batches if b["class"] == name]
        classes[name] = entry
    report = {"checkpoint_sha256": generator.checkpoint_sha256, "step": generator.step, "classes": classes}
    write_atomic(out / GATE_REPORT, json.dumps(report, indent=1).encode())
    return out / GATE_REPORT


def _set_entry(verdict: Verdict) -> dict:
    """The set check in gate_report.json: verdict, figures against their limits and real sets at the same N."""
    entry = {"accepted": verdict.accepted, "figures": verdict.figures, "limits": verdict.limits, "failed": verdict.failed, **verdict.details}
    if verdict.reason:
        entry["reason"] = verdict.reason
    return entry


def _has_index(row: dict) -> bool:
    try:
        _index_of(row)
    except ValueError:  # a row edited by hand: it does not count, its image is written again
        return False
    return True
