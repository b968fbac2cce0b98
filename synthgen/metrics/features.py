"""Feature extractors by name, the domain classifier of a dataset, and the real-feature cache.

| name        | network                                                         | use                        |
|-------------|-----------------------------------------------------------------|----------------------------|
| `domain`    | a small classifier trained on the real images (metrics/domain.py) | the gate; eval by default  |
| `inception` | the standard FID Inception (pool3), TF1-style preprocessing       | FID comparable with papers |

Features of real images are cached by content (pixels, labels and the
extractor's weights), so the second evaluation against the same data is instant.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from synthgen.data.loading import LabelledImages, cache_dir
from synthgen.metrics.domain import DomainClassifier, data_key, train_domain_classifier

DOMAIN_FOLDER = "domain"  # beside a run's checkpoints: weights/<run>/domain/


def extractor_identity(extractor) -> str:
    """A string that changes whenever the extractor's outputs could."""
    if isinstance(extractor, DomainClassifier):
        return extractor.identity
    return f"{extractor.name}-{extractor.weights_sha256[:16]}-{extractor.precision}"


def features_and_logits(extractor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, class logits or None) of uint8 images; only the domain classifier has class logits."""
    if isinstance(extractor, DomainClassifier):
        return extractor.features_and_logits(images)
    return extractor(images).float().cpu(), None


def cached_features(extractor, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """features_and_logits of a real dataset, through the on-disk cache."""
    labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels
    key = hashlib.sha256(f"{data_key(images, labels)}|{extractor_identity(extractor)}".encode()).hexdigest()[:32]
    path = cache_dir() / "features" / f"{key}.safetensors"
    if path.exists():
        try:
            stored = load_file(path)
            return stored["features"], stored.get("logits")
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable cache entry: recompute and overwrite
    features, logits = features_and_logits(extractor, images)
    _write_cache(path, {"features": features, **({"logits": logits} if logits is not None else {})})
    return features, logits


def _write_cache(path: Path, tensors: dict) -> None:
    """Best effort, atomic: a read-only cache only costs the next run a recomputation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass


def domain_classifier(data: LabelledImages, folder: Path | None, steps: int, hflip: bool = False, device="cpu", progress=None) -> DomainClassifier:
    """The domain classifier of `data`: loaded when one was trained on these very images, else trained and saved.

    It is looked for in `folder` (a run's own copy), then in the cache, keyed by the data's content and how it
    was trained: a second run on the same images (another recipe, a benchmark row) does not train it again.
    """
    key = data_key(data.images, data.labels)
    shared = cache_dir() / "domain" / f"{key}-{steps}{'-hflip' if hflip else ''}"
    places = ([folder] if folder else []) + [shared]
    for place in places:
        existing = DomainClassifier.load(place, device)
        if existing is not None and existing.data_key == key and existing.class_names == data.class_names:
            if place != folder and folder is not None:
                _save_quietly(existing, folder)
            return existing
    classifier = train_domain_classifier(data.images, data.labels, data.class_names, steps=steps, hflip=hflip, device=device, progress=progress)
    for place in places:
        _save_quietly(classifier, place)
    return classifier


def _save_quietly(classifier: DomainClassifier, folder: Path) -> None:
    try:
        classifier.save(folder)
    except OSError:
        pass  # a read-only run folder or cache: it is retrained next time


def inception_extractor(weights: str | None = None, device="cpu", precision: str = "fp32"):
    from synthgen.metrics.inception import InceptionFeatures

    return InceptionFeatures(weights, device=device, precision=precision)


# name -> how to build it: (real data, domain folder, settings) -> extractor
EXTRACTORS: dict[str, Callable[..., object]] = {
    "domain": lambda data, folder, steps, inception_weights=None, device="cpu": domain_classifier(data, folder, steps, device=device),
    "inception": lambda data, folder, steps, inception_weights=None, device="cpu": inception_extractor(inception_weights, device),
}
