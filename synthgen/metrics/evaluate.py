"""Evaluate a folder of generated images against real ones: every metric beside its real-vs-real baseline.

FID is strongly biased at small N, so no figure is reported alone: the real
images are split in two halves (A, B) per class, the generated set and B are
cut to the same N, and every metric is computed for (generated vs A) and
(B vs A). The second column is what a perfect generator would score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from synthgen.data.folders import discover_labelled
from synthgen.data.loading import LabelledImages, image_headers, load_labelled, median_short_side
from synthgen.errors import SynthgenError
from synthgen.metrics.domain import DomainClassifier
from synthgen.metrics.features import DOMAIN_FOLDER, EXTRACTORS, cached_features
from synthgen.metrics.fid import fid
from synthgen.metrics.gate import Gate, Verdict
from synthgen.metrics.inception import inception_score
from synthgen.metrics.kid import kid
from synthgen.metrics.msssim import mean_pairwise_ms_ssim
from synthgen.metrics.prdc import prdc
from synthgen.recipe import GateConfig, with_gate_overrides

INCEPTION_MAX_SIZE = 512  # the network resizes to 299 anyway; larger inputs only cost decoding


@dataclass
class Evaluation:
    features: str
    n: int  # images per side in every comparison
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {"generated": x, "real": y}
    per_class: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"features": self.features, "n": self.n, "metrics": self.metrics, "per_class": self.per_class}


@dataclass
class Folders:
    """Real and generated images at one size, generated labels mapped onto the real class list."""

    real: LabelledImages
    fake: LabelledImages
    classifier_folder: Path | None
    settings: GateConfig


def load_folders(
    real_dir: Path, fake_dir: Path, run: Path | None = None, features: str = "domain", overrides: list[str] = (), pooled: bool = False
) -> Folders:
    """Both folders decoded at the run's size and channels (or the real images' own, `auto`); gate settings with overrides.

    `pooled`: every image of each folder counts as one class, whatever its subfolders (translated image sets).
    """
    settings, folder = GateConfig(), None
    size, channels, resize = "auto", "auto", "crop"
    if run is not None:
        recipe, _ = _run_recipe(run)
        size, channels, resize, settings = recipe.data.image_size, recipe.data.channels, recipe.data.resize, recipe.gate
        folder = Path(run) / DOMAIN_FOLDER
    elif features == "inception":
        size = _median_short_side(real_dir)
    settings = with_gate_overrides(settings, list(overrides))
    real = load_labelled(real_dir, size, channels, resize)
    _, channels, size, _ = real.images.shape
    fake = load_labelled(fake_dir, size, channels, resize)
    if pooled:
        real, fake = _pool(real), _pool(fake)
    unknown = [name for name in fake.class_names if name not in real.class_names]
    if unknown and len(real.class_names) > 1:
        raise SynthgenError(f"--fake {fake_dir}: classes {unknown} are not in --real {real_dir} (classes: {', '.join(real.class_names)})")
    mapping = torch.tensor([real.class_names.index(n) if n in real.class_names else 0 for n in fake.class_names])
    fake = LabelledImages(fake.images, mapping[fake.labels], real.class_names, fake.unreadable)
    return Folders(real, fake, folder, settings)


def _pool(data: LabelledImages) -> LabelledImages:
    return LabelledImages(data.images, torch.zeros_like(data.labels), ["images"], data.unreadable)


def _run_recipe(run: Path):
    from synthgen import checkpoint as ckpt
    from synthgen.recipe import validate

    checkpoint = ckpt.require_checkpoint(Path(run))
    return validate(checkpoint.recipe, source=f"{checkpoint.path}/state.json"), checkpoint.class_names


def _median_short_side(folder: Path) -> int:
    side = median_short_side(image_headers(discover_labelled(folder).files))
    return min(side, INCEPTION_MAX_SIZE) if side else 64


def extractor_for(folders: Folders, features: str, inception_weights: str | None = None, device="cpu"):
    if features not in EXTRACTORS:
        raise SynthgenError(f"--features {features}: expected one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[features](folders.real, folders.classifier_folder, folders.settings.domain_steps, inception_weights, device)


def _halves(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint halves of the real images, split within every class."""
    gen = torch.Generator().manual_seed(seed)
    a, b = [], []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        a.append(members[: len(members) // 2])
        b.append(members[len(members) // 2 :])
    return torch.cat(a), torch.cat(b)


def evaluate(folders: Folders, extractor, per_class: bool = False, seed: int = 0) -> Evaluation:
    """Every metric for (generated vs real half A) beside (real half B vs A), at equal N."""
    real, fake = folders.real, folders.fake
    real_features, real_logits = cached_features(extractor, real.images, real.labels)
    fake_features, fake_logits = cached_features(extractor, fake.images, fake.labels)
    half_a, half_b = _halves(real.labels, seed)
    n = min(len(half_b), len(fake))
    if n < 2:
        raise SynthgenError(f"evaluation needs at least 4 real and 2 generated images (got {len(real)} and {len(fake)})")
    gen = torch.Generator().manual_seed(seed)
    half_b = half_b[torch.randperm(len(half_b), generator=gen)[:n]]
    pick = torch.randperm(len(fake), generator=gen)[:n]
    sides = {
        "generated": (fake.images[pick], fake.labels[pick], fake_features[pick], None if fake_logits is None else fake_logits[pick]),
        "real": (real.images[half_b], real.labels[half_b], real_features[half_b], None if real_logits is None else real_logits[half_b]),
    }
    reference = real_features[half_a]
    result = Evaluation(extractor.name, n)
    for side, (images, labels, features, logits) in sides.items():
        for name, value in _metrics(reference, images, labels, features, logits, len(real.class_names)).items():
            result.metrics.setdefault(name, {})[side] = value
    if per_class:
        result.per_class = _per_class(real, half_a, sides, real_features)
    return result


def _metrics(reference, images, labels, features, logits, num_classes) -> dict[str, float]:
    # Subsets of m = min(N, 1000) would all be the whole set below 1,000 images (std 0); half-size subsets give a
    # real spread at the same expected value (the estimator is unbiased at any subset size).
    kid_mean, kid_std = kid(reference, features, subset_size=min(1000, max(2, len(features) // 2)))
    values = {"fid": fid(reference, features), "kid": kid_mean, "kid_std": kid_std, **prdc(reference, features)}
    values["ms_ssim"] = _within_class_ms_ssim(images, labels)
    if logits is not None and num_classes > 1:
        values["inception_score_domain"] = inception_score(logits, splits=min(10, max(1, len(logits) // 50)))[0]
        values["label_fidelity"] = float((logits.argmax(1) == labels).double().mean())
    return values


def _within_class_ms_ssim(images: torch.Tensor, labels: torch.Tensor) -> float:
    """AC-GAN diversity: mean MS-SSIM of random same-class pairs, averaged over classes (lower = more diverse)."""
    scores = [mean_pairwise_ms_ssim(images[labels == c], pairs=128) for c in labels.unique() if int((labels == c).sum()) >= 2]
    return sum(scores) / len(scores) if scores else float("nan")


def _per_class(real: LabelledImages, half_a, sides, real_features) -> dict:
    table = {}
    for c, name in enumerate(real.class_names):
        reference = real_features[half_a[real.labels[half_a] == c]]
        row = {}
        for side, (images, labels, features, _) in sides.items():
            mine = features[labels == c]
            if len(mine) >= 2 and len(reference) >= 2:
                row.setdefault("fid", {})[side] = fid(reference, mine) if len(mine) > 2 else float("nan")
                row.setdefault("kid", {})[side] = kid(reference, mine)[0]
                row.setdefault("ms_ssim", {})[side] = mean_pairwise_ms_ssim(images[labels == c], pairs=128)
                row.setdefault("n", {})[side] = float(len(mine))
        if row:
            table[name] = row
    return table


# --- the gate on a folder -------------------------------------------------------------


def gate_folder(folders: Folders, classifier: DomainClassifier, batch_size: int = 64) -> tuple[dict[str, list[Verdict]], dict[str, Verdict]]:
    """Every class of the generated folder through the gate: (class -> verdict per batch, class -> the set check of all its images)."""
    gate = Gate(classifier, folders.real.images, folders.real.labels, batch_size, folders.settings)
    fake = folders.fake
    verdicts: dict[str, list[Verdict]] = {}
    sets: dict[str, Verdict] = {}
    for c in fake.labels.unique().tolist():
        name = fake.class_names[c]
        members = (fake.labels == c).nonzero().flatten()
        batches = [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
        verdicts[name] = [gate(name, fake.images[b]) for b in batches if len(b) >= 2]
        whole = gate.check_set(name, fake.images[members])
        if whole is not None:
            sets[name] = whole
    return verdicts, sets
