"""`synthgen encode` and `synthgen vary`: latents of real images, and variations of them, from a run with an encoder.

A run whose method `encodes` (train/encoding.py: BiGAN/ALI, VAE-GAN) holds E
beside G. `encode` writes E(x) (the mean, for a Gaussian encoder) of every image
to one safetensors file. `vary` makes variations of given real images: encode,
perturb z by `spread` x N(0, I), decode, like `sample` writes:

    OUT/<class>/<source name>_varNNN.png    readable by torchvision's ImageFolder
    OUT/manifest.csv                        file, class, source, source_class, variation, seed, spread, sha256s, attempt, gate
    OUT/vary.json                           the settings; a re-run with others is refused
    OUT/gate_report.json                    the verdicts

Every variation has its own seed from (--seed, source class, source, index), so
a re-run gives byte-identical files and continues a folder (a larger -n adds,
deleted files are written again, nothing is duplicated). `--to-class K` decodes
under class K instead (IcGAN-style attribute change: the same style, another class).

The gate: a set of variations of a few images is by design not a sample of its
class, so the batch-level checks of `sample` (KID, coverage, diversity,
near-copies) would reject it. What a variation must keep is its class: the
run's domain classifier must put about as many of them in the class as it
puts real images of the class there (the fidelity check of the gate, its limit
from the classifier's held-out accuracy: metrics/gate.py `fidelity_limit`).
A rejected batch is drawn again with fresh seeds up to `gate.retries` times; a
source that still fails is reported, the others complete. A one-class run has
no class to keep: its variations are written unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save

from synthgen import augment as aug
from synthgen import checkpoint as ckpt
from synthgen.data.folders import discover_labelled
from synthgen.errors import SynthgenError
from synthgen.imaging import SAVE_FORMATS, UnreadableImage, encode as encode_image, load_image, remove_stale_temporaries, to_model, to_uint8, write_atomic
from synthgen.manifest import Manifest, by_class_and_file, continue_only_with
from synthgen.metrics.gate import Verdict
from synthgen.recipe import validate
from synthgen.sample import GATE_REPORT, MANIFEST, TrainedGenerator, check_output_folder
from synthgen.train import METHODS

SETTINGS = "vary.json"
MANIFEST_COLUMNS = ["file", "class", "source", "source_class", "variation", "seed", "spread", "checkpoint_sha256", "encoder_sha256", "attempt", "gate"]


def encoding_methods() -> list[str]:
    """The training methods whose runs have an encoder (the `encodes` capability of the method class)."""
    return [name for name, method in METHODS.items() if getattr(method, "encodes", False)]


class TrainedEncoder(TrainedGenerator):
    """A run's encoder E and its sampling generator (EMA weights when trained with EMA) as the decoder."""

    def __init__(self, run_dir: str | Path, device: str = "auto", checkpoint: str = "best"):
        found = ckpt.require_checkpoint(Path(run_dir), checkpoint)
        method_name = validate(found.recipe, source=f"{found.path}/{ckpt.STATE_FILE}").method
        if not getattr(METHODS[method_name], "encodes", False):
            raise SynthgenError(f"{run_dir}: a {method_name} run has no encoder; encode and vary need a run of a method with one ({', '.join(encoding_methods())})")
        super().__init__(run_dir, device, checkpoint)
        self.encoder_sha256 = found.verified_sha256("E")
        self.encoder = self.method.encoder_network(self.recipe, len(self.class_names))
        ckpt.restore_network(self.encoder, found.weights("E"), found.path / "E.safetensors")
        self.encoder.to(self.device).eval()

    @property
    def z_dim(self) -> int:
        return self.recipe.model.z_dim

    def encode(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] of classes `labels` -> E's latents [N, z_dim] (a Gaussian encoder's mean), float32 on the CPU."""
        with torch.inference_mode():
            mean, _ = self.encoder(to_model(images).to(self.device), labels.to(self.device))
        return mean.float().cpu().clone()

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Latents [N, z_dim] -> uint8 images decoded under classes `labels`, in fp32 for reproducible bytes."""
        with torch.inference_mode():
            images = to_uint8(self.generator(z.to(self.device), labels.to(self.device)))
        return images.clone()


# --- which images, of which class ------------------------------------------------------------


def image_sources(src: Path, encoder: TrainedEncoder, class_name: str | None = None) -> list[aug.Source]:
    """The images of SRC (one image, a labelled folder or a folder of images), each with the run class it belongs to.

    Class subfolders name each image's class (`class_name` then keeps that class alone); one image or a folder
    without class folders is of `class_name`, which a run with classes needs. Output stems keep sub-folders.
    """
    src = Path(src)
    known = encoder.class_names
    if class_name is not None:
        encoder.class_index(class_name)  # unknown: one line listing the known ones
    only = class_name or (known[0] if len(known) == 1 else None)
    if src.is_file():
        return [aug.Source(_required(only, src, known), src.stem, src)]
    if not src.exists():
        raise SynthgenError(f"{src}: no such image or folder")
    found = discover_labelled(src)
    if found.conditional and len(known) > 1:
        sources = aug.labelled_sources(src)
        unknown = sorted({s.group for s in sources} - set(known))
        if unknown:
            raise SynthgenError(f"{src}: class folders {unknown} are not classes of the run (it knows {', '.join(known)})")
        return [s for s in sources if class_name is None or s.group == class_name]
    group = _required(only, src, known)
    return [aug.Source(group, path.relative_to(src).with_suffix("").as_posix(), path) for path in found.files]


def _required(class_name: str | None, src: Path, known: list[str]) -> str:
    if class_name is None:
        raise SynthgenError(f"{src}: has no class folders and the run has classes ({', '.join(known)}); say which with --class NAME")
    return class_name


def _load(sources: list[aug.Source], encoder: TrainedEncoder) -> tuple[list[aug.Source], torch.Tensor, list[str]]:
    """(readable sources, their uint8 images at the run's size, 'path: why' for the unreadable ones)."""
    d = encoder.recipe.data
    kept, images, unreadable = [], [], []
    for source in sources:
        try:
            images.append(load_image(source.image, d.channels, d.image_size, d.resize))
            kept.append(source)
        except UnreadableImage as exc:
            unreadable.append(str(exc))
    return kept, (torch.stack(images) if images else torch.zeros(0, d.channels, d.image_size, d.image_size, dtype=torch.uint8)), unreadable


# --- encode ------------------------------------------------------------------------------


@dataclass
class EncodeResult:
    out: Path
    encoded: int
    unreadable: list[str]


def encode_folder(encoder: TrainedEncoder, src: Path, out: Path, class_name: str | None = None, batch_size: int = 256) -> EncodeResult:
    """E(x) of every image under SRC into one safetensors file: `latents` [N, z_dim], `labels` [N] (run class index).

    Its metadata lists the source files (relative to SRC, in the order of the rows), the run's class names, the
    checkpoint step and the encoder's sha256.
    """
    out = Path(out)
    if out.is_dir():
        raise SynthgenError(f"--out {out}: is a folder, expected a file name such as latents.safetensors")
    sources, images, unreadable = _load(image_sources(src, encoder, class_name), encoder)
    if not sources:
        raise SynthgenError(f"{src}: no readable image to encode")
    labels = torch.tensor([encoder.class_index(s.group) for s in sources])
    latents = torch.cat([encoder.encode(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(sources), batch_size)])
    metadata = {
        "files": json.dumps([_relative(s.image, Path(src)) for s in sources]),
        "class_names": json.dumps(encoder.class_names),
        "run": str(encoder.run_dir), "step": str(encoder.step), "encoder_sha256": encoder.encoder_sha256,
    }
    write_atomic(out, save({"latents": latents.contiguous(), "labels": labels}, metadata))
    return EncodeResult(out, len(sources), unreadable)


def _relative(path: Path, src: Path) -> str:
    return path.name if src.is_file() else path.relative_to(src).as_posix()


# --- vary ------------------------------------------------------------------------------------


class VariationCheck:
    """The gate's fidelity check on a batch of variations: the share of them the run's domain classifier puts in the class."""

    def __init__(self, classifier, settings, held_out: list[int]):
        self.classifier, self.settings, self.held_out = classifier, settings, held_out
        self.limits: dict[tuple[int, int], float] = {}  # (class, batch size) -> limit: its null is drawn once, not per batch

    def limit(self, index: int, batch_size: int) -> float:
        from synthgen.metrics.gate import fidelity_limit

        if (index, batch_size) not in self.limits:
            self.limits[index, batch_size] = fidelity_limit(self.classifier.real_accuracy[index], self.held_out[index], batch_size, self.settings)
        return self.limits[index, batch_size]

    def __call__(self, class_name: str, images: torch.Tensor) -> Verdict:
        index = self.classifier.class_names.index(class_name)
        limit = self.limit(index, len(images))
        _, logits = self.classifier.features_and_logits(images)
        share = float((logits.argmax(1) == index).double().mean())
        passed = share >= limit
        reason = "" if passed else (f"failed fidelity {share:.3g} (limit {limit:.3g}, real {self.classifier.real_accuracy[index]:.3g}): "
                                    f"the variations do not look like {class_name} to the domain classifier; lower --spread")
        return Verdict(passed, reason, {"fidelity": share}, {"fidelity": limit}, [] if passed else ["fidelity"])


def variation_check(encoder: TrainedEncoder, real_root: str | Path | None = None, progress=None) -> VariationCheck | None:
    """The fidelity check of the run (its domain classifier, trained once on its real images); None for a one-class run."""
    from synthgen.metrics.domain import held_out_count
    from synthgen.metrics.gate import run_domain_classifier

    if len(encoder.class_names) < 2:
        return None
    data, classifier = run_domain_classifier(encoder.run_dir, encoder.recipe, encoder.class_names, real_root, encoder.device, progress)
    held_out = [held_out_count(int((data.labels == c).sum())) for c in range(len(encoder.class_names))]
    return VariationCheck(classifier, encoder.recipe.gate, held_out)


@dataclass
class VaryResult:
    out: Path
    written: dict[str, int] = field(default_factory=dict)  # new files per output class
    existing: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # source -> why the check stopped it
    unreadable: list[str] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)  # every verdict, for gate_report.json


def vary_folder(
    encoder: TrainedEncoder, src: Path, out: Path, n: int, spread: float = 0.3, seed: int = 0, class_name: str | None = None,
    to_class: str | None = None, fmt: str = "png", batch_size: int = 64, check=None, retries: int = 0, on_image=None,
) -> VaryResult:
    """`synthgen vary`: n variations of every image under SRC into OUT (see the module doc)."""
    sources = image_sources(src, encoder, class_name)
    settings = {"source": str(Path(src).resolve()), "spread": spread, "seed": seed, "to_class": to_class, "decoder_sha256": encoder.checkpoint_sha256}
    continue_only_with(check_output_folder(out), SETTINGS, settings, "holds variations made")
    return vary(encoder, aug.plan_copies(sources, n), out, spread, seed, to_class, fmt, batch_size, check, retries, root=Path(src), on_image=on_image)


def vary(
    encoder: TrainedEncoder, jobs: list[aug.Job], out: Path, spread: float, seed: int = 0, to_class: str | None = None,
    fmt: str = "png", batch_size: int = 64, check=None, retries: int = 0, root: Path | None = None,
    subfolder: str = "", manifest: str = MANIFEST, on_image=None,
) -> VaryResult:
    """Write variation `job.copy` of every job's source under OUT/<class>/[subfolder/]; `balance` passes its own jobs.

    Variations of one source are made in aligned chunks of `batch_size` indices, always whole, so a verdict
    never depends on what is already on disk or on -n.
    """
    if fmt not in SAVE_FORMATS:
        raise SynthgenError(f"--format {fmt}: expected one of {', '.join(SAVE_FORMATS)}")
    if to_class is not None:
        encoder.class_index(to_class)
    out = Path(out)
    if out.is_dir():
        remove_stale_temporaries(out)
    result = VaryResult(out)
    wanted: dict[aug.Source, set[int]] = {}
    for job in jobs:
        wanted.setdefault(job.source, set()).add(job.copy)
    with Manifest(out, manifest, MANIFEST_COLUMNS, order=by_class_and_file) as rows:
        done = {row["file"] for row in rows.rows}
        todo = {}
        for source, copies in wanted.items():
            target = to_class or source.group
            files = {k: variation_file(target, source.stem, k, fmt, subfolder) for k in copies}
            result.existing[target] = result.existing.get(target, 0) + sum(f in done for f in files.values())
            result.written.setdefault(target, 0)
            missing = {k: f for k, f in files.items() if f not in done}
            if missing:
                todo[source] = missing
        readable, images, result.unreadable = _load(list(todo), encoder)
        for source, image in zip(readable, images):
            _vary_one(encoder, source, image, todo[source], out, spread, seed, to_class or source.group, fmt, batch_size, check, retries, rows, result, root)
            if on_image:
                on_image(len(todo[source]))
    return result


def variation_file(class_name: str, stem: str, index: int, fmt: str, subfolder: str = "") -> str:
    folder = f"{class_name}/{subfolder}/" if subfolder else f"{class_name}/"
    return f"{folder}{stem}_var{index:03d}.{fmt}"


def _vary_one(encoder, source, image, missing: dict[int, str], out, spread, seed, target, fmt, batch_size, check, retries, rows, result, root) -> None:
    """Encode one source, then decode, check and write its missing variations chunk by chunk."""
    z0 = encoder.encode(image[None], torch.tensor([encoder.class_index(source.group)]))[0]
    y = torch.full((batch_size,), encoder.class_index(target))
    for start in sorted({k - k % batch_size for k in missing}):
        indices = range(start, start + batch_size)
        for attempt in range(retries + 1):
            seeds = [aug.job_seed(seed, aug.Job(source, k), attempt) for k in indices]
            noise = torch.stack([torch.randn(encoder.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
            batch = encoder.decode(z0 + spread * noise, y)
            verdict = check(target, batch) if check else Verdict(True, "unchecked: one class, no class to keep" if len(encoder.class_names) == 1 else "off")
            result.batches.append({"class": target, "source": source.image.as_posix(), "start": start, "attempt": attempt,
                                   "accepted": verdict.accepted, "figures": verdict.figures, "failed": verdict.failed})
            if verdict.accepted:
                break
        else:
            result.rejected[source.image.as_posix()] = f"{retries + 1} batches in a row rejected; last: {verdict.reason}"
            return
        new_rows = []
        for k, variation_seed, variation in zip(indices, seeds, batch):
            if k in missing:
                write_atomic(out / missing[k], encode_image(variation, fmt))
                new_rows.append({
                    "file": missing[k], "class": target, "source": _relative(source.image, root) if root else source.image.as_posix(),
                    "source_class": source.group, "variation": str(k), "seed": str(variation_seed), "spread": str(spread),
                    "checkpoint_sha256": encoder.checkpoint_sha256, "encoder_sha256": encoder.encoder_sha256,
                    "attempt": str(attempt), "gate": "passed" if verdict.figures else verdict.reason,
                })
        rows.append(new_rows)
        result.written[target] += len(new_rows)


def write_vary_report(out: Path, result: VaryResult, encoder: TrainedEncoder, check) -> Path:
    """gate_report.json: per output class the counts, the check's limit, and every batch verdict; the rejected sources."""
    classes = {name: {"status": "checked" if check else "unchecked", "existing": result.existing[name], "written": result.written[name],
                      "batches": [b for b in result.batches if b["class"] == name]} for name in result.written}
    report = {"checkpoint_sha256": encoder.checkpoint_sha256, "encoder_sha256": encoder.encoder_sha256, "step": encoder.step,
              "classes": classes, "rejected_sources": result.rejected}
    write_atomic(out / GATE_REPORT, json.dumps(report, indent=1).encode())
    return out / GATE_REPORT
