"""The `domain` feature extractor: a small classifier trained on the run's own real images.

Inception knows ImageNet, not micrographs or defect photos, and runs at about
9 images/s on a 2-core CPU. A small CNN trained on the user's own images
knows their domain and runs thousands of images per second. Its penultimate
features feed KID, FID, coverage and near-duplicate checks; its class
probabilities give label fidelity.

It learns two tasks at once: the class (when there are several) and which of
four quarter-turns an image was rotated by (self-supervised, Gidaris et al.
2018). The rotation task gives it useful features even for a one-class
dataset, and rotated real images give the gate a natural "clearly wrong"
reference distance for such datasets.

Training uses albumentations (small shifts, scales, rotations, brightness and
contrast) so that features describe content rather than memorise pixels. A
tenth of each class is held out to measure how well it recognises real
images: the baseline that label fidelity of generated images is judged by.
Saved as safetensors plus JSON, trained once per run and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.fx.experimental.optimization import fuse

from synthgen.errors import SynthgenError
from synthgen.imaging import to_model, write_atomic
from synthgen.rng import rng_untouched

WEIGHTS_FILE, META_FILE = "domain.safetensors", "domain.json"
TRAINING = "class-balanced-1"  # saved with the weights: a classifier trained another way is retrained
INFERENCE = "bn-folded"  # how features are computed: part of the cache key, so features computed another way are not mixed in
ROTATIONS = 4  # quarter turns: 0, 90, 180, 270 degrees


@dataclass
class DomainSpec:
    """Everything needed to rebuild the network, stored as JSON beside its weights."""

    channels: int
    image_size: int
    class_names: list[str]
    width: int = 16
    feature_dim: int = 256
    max_size: int = 64  # larger images are area-downsampled to this first: the gate's cost stops growing with size

    @property
    def working_size(self) -> int:
        return min(self.image_size, self.max_size)


class DomainNet(nn.Module):
    """An area downsampling to at most 64 px, a stem, then stride-2 stages doubling the width down to about 4 px,
    a 1x1 to the feature size, global pooling, two heads.

    Why 64 px: the classifier's job is the gate's (class, coverage, diversity, near-copies), which 64 px
    resolves; at 128 px its one-time training took about 20 minutes on 2 cores, longer than most budgets.
    """

    def __init__(self, spec: DomainSpec):
        super().__init__()
        width, size = spec.width, spec.working_size
        shrink = [nn.AdaptiveAvgPool2d(size)] if spec.image_size > size else []  # = area interpolation; none at <= 64 px
        layers = [*shrink, *_conv_bn_relu(spec.channels, width, stride=1)]
        while size > 4:
            wider = min(width * 2, spec.feature_dim)
            layers += [*_conv_bn_relu(width, wider, stride=2), *_conv_bn_relu(wider, wider, stride=1)]
            width, size = wider, (size + 1) // 2
        layers += _conv_bn_relu(width, spec.feature_dim, stride=1, kernel=1)
        self.trunk = nn.Sequential(*layers)
        self.class_head = nn.Linear(spec.feature_dim, len(spec.class_names))
        self.rotation_head = nn.Linear(spec.feature_dim, ROTATIONS)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return h, self.class_head(h), self.rotation_head(h)


def _conv_bn_relu(cin: int, cout: int, stride: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def augmentation(hflip: bool) -> A.Compose:
    """Mild, label-preserving jitter; mirroring only where the recipe says mirrored images are valid."""
    steps = [
        A.Affine(translate_percent=(-0.06, 0.06), scale=(0.92, 1.08), rotate=(-8, 8), border_mode=0, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return A.Compose(steps, seed=0)


def _augment_batch(pipeline: A.Compose, images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> augmented uint8, one albumentations call per image (HWC numpy)."""
    out = [pipeline(image=image.permute(1, 2, 0).numpy())["image"] for image in images]
    array = np.stack([a if a.ndim == 3 else a[:, :, None] for a in out])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


class DomainClassifier:
    """A trained DomainNet plus what it was trained on; call it on uint8 images."""

    name = "domain"

    def __init__(self, net: DomainNet, spec: DomainSpec, real_accuracy: list[float], data_key: str, device="cpu"):
        self.net, self.spec, self.real_accuracy, self.data_key = net.eval(), spec, real_accuracy, data_key
        self.device = torch.device(device)
        # One memory layout whether trained here or loaded: the same weights then give bit-identical features.
        self.net.to(self.device, memory_format=torch.channels_last)
        # Inference runs on a copy with every batch norm folded into its conv (torch.fx): the same function up to
        # float rounding, a third less time per gated batch (BN was a separate pass over every activation).
        self.inference_net = fuse(self.net)

    @property
    def dim(self) -> int:
        return self.spec.feature_dim

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def identity(self) -> str:
        """Changes whenever the weights do: part of every feature-cache key."""
        digest = hashlib.sha256(json.dumps(asdict(self.spec)).encode() + INFERENCE.encode())
        for tensor in self.net.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"domain-{digest.hexdigest()[:16]}"

    @torch.inference_mode()
    def features_and_logits(self, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [N, C, H, W] -> (features [N, feature_dim], class logits [N, K]), float32 on the CPU."""
        self._check_shape(images)
        feats, logits = [], []
        for chunk in images.split(batch_size):
            h, class_logits, _ = self.inference_net(to_model(chunk.to(self.device)).contiguous(memory_format=torch.channels_last))
            feats.append(h.float().cpu())
            logits.append(class_logits.float().cpu())
        if not feats:
            return torch.zeros(0, self.dim), torch.zeros(0, len(self.class_names))
        return torch.cat(feats), torch.cat(logits)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[0]

    def _check_shape(self, images: torch.Tensor) -> None:
        expected = (self.spec.channels, self.spec.image_size, self.spec.image_size)
        if tuple(images.shape[1:]) != expected:
            raise SynthgenError(
                f"domain features: images are {tuple(images.shape[1:])} (C, H, W) but the classifier was trained on {expected}; "
                "compare images of the run's own size and channels"
            )

    # --- saving and loading: safetensors + JSON, never pickle ----------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, tmp)
        os.replace(tmp, folder / WEIGHTS_FILE)
        meta = {"spec": asdict(self.spec), "real_accuracy": self.real_accuracy, "data_key": self.data_key, "training": TRAINING}
        write_atomic(folder / META_FILE, json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, folder: Path, device="cpu") -> "DomainClassifier | None":
        """The classifier saved in `folder`, or None when there is none (or it is unreadable: retrain)."""
        try:
            meta = json.loads((folder / META_FILE).read_text())
            if meta.get("training") != TRAINING:
                return None  # trained by an older procedure: retrain
            spec = DomainSpec(**meta["spec"])
            net = DomainNet(spec)
            net.load_state_dict(load_file(folder / WEIGHTS_FILE))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None
        return cls(net, spec, meta["real_accuracy"], meta["data_key"], device)


def data_key(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A content hash of a dataset's pixels and labels: keys classifiers and cached features."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def held_out_count(class_size: int) -> int:
    """How many images of a class of this size are held out to measure the classifier's accuracy on it."""
    return class_size // 10 if class_size >= 30 else (1 if class_size >= 3 else 0)


def _held_out_split(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A tenth of every class (at least one image where the class has three or more) held out."""
    train, held = [], []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_held = held_out_count(len(members))
        held.append(members[:n_held])
        train.append(members[n_held:])
    return torch.cat(train), torch.cat(held)


def _class_balanced_draw(train_idx: torch.Tensor, labels: torch.Tensor, gen: torch.Generator):
    """Batches with every class equally likely, whatever its size.

    The gate judges every class with this classifier, the rare ones most of
    all; trained on uniform draws from a skewed set it learns to rarely
    predict a rare class (a 60-image class among 600-image ones was
    recognised 0% of the time), and the label-fidelity check goes blind.
    """
    members = [train_idx[labels[train_idx] == c] for c in labels[train_idx].unique()]
    sizes = torch.tensor([len(m) for m in members])
    offsets = torch.cumsum(sizes, 0) - sizes
    flat = torch.cat(members)

    def draw(batch_size: int) -> torch.Tensor:
        classes = torch.randint(len(members), (batch_size,), generator=gen)
        within = (torch.rand(batch_size, generator=gen) * sizes[classes]).long()
        return flat[offsets[classes] + within]

    return draw


def train_domain_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    steps: int = 1500,
    batch_size: int = 64,
    hflip: bool = False,
    seed: int = 0,
    device="cpu",
    progress=None,
) -> DomainClassifier:
    """Train on uint8 images [N, C, H, W] with labels; returns the classifier with its held-out accuracy.

    The caller's random state is left as it was: a GAN run that trains its classifier here draws the same
    noise afterwards as one that loads the classifier from the cache (or evaluates nothing), so its result
    does not depend on what was cached.
    """
    device = torch.device(device)
    with rng_untouched(device):
        torch.manual_seed(seed)  # the weights' initialisation: the same classifier every time
        return _fit(images, labels, class_names, steps, batch_size, hflip, seed, device, progress)


def _fit(images, labels, class_names, steps, batch_size, hflip, seed, device, progress) -> DomainClassifier:
    gen = torch.Generator().manual_seed(seed)
    spec = DomainSpec(channels=images.shape[1], image_size=images.shape[2], class_names=list(class_names))
    net = DomainNet(spec).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    key, originals = data_key(images, labels), images  # held-out accuracy goes through the full-size path
    images = _shrink(images, spec.working_size)  # augment and train at the working size; inference shrinks in the net
    train_idx, held_idx = _held_out_split(labels, len(class_names), gen)
    draw = _class_balanced_draw(train_idx, labels, gen)
    pipeline = augmentation(hflip)
    pipeline.set_random_seed(seed)
    conditional = len(class_names) > 1
    net.train()
    for step in range(steps):
        pick = draw(batch_size)
        x = to_model(_augment_batch(pipeline, images[pick])).to(device)
        turns = torch.randint(ROTATIONS, (batch_size,), generator=gen)
        rotated = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(x, turns)])
        # One forward pass: the upright half teaches the class, both halves the rotation.
        both = torch.cat([x, rotated]).contiguous(memory_format=torch.channels_last)
        _, class_logits, rotation_logits = net(both)
        rotation_target = torch.cat([torch.zeros(batch_size, dtype=torch.long), turns]).to(device)
        loss = F.cross_entropy(rotation_logits, rotation_target)
        if conditional:
            loss = loss + F.cross_entropy(class_logits[:batch_size], labels[pick].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress:
            progress(step + 1, steps)
    classifier = DomainClassifier(net.eval(), spec, [], key, device)
    classifier.real_accuracy = _per_class_accuracy(classifier, originals[held_idx], labels[held_idx], len(class_names))
    return classifier


def _shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] area-downsampled to size x size (unchanged when already that small), still uint8."""
    if images.shape[-1] <= size:
        return images
    return torch.cat([F.adaptive_avg_pool2d(chunk.float(), size).round().to(torch.uint8) for chunk in images.split(256)])


def _per_class_accuracy(classifier: DomainClassifier, images, labels, num_classes: int) -> list[float]:
    """Accuracy on held-out real images per class (1.0 for a one-class dataset; NaN when none held out)."""
    if num_classes == 1:
        return [1.0]
    if len(labels) == 0:
        return [float("nan")] * num_classes
    predicted = classifier.features_and_logits(images)[1].argmax(1)
    return [float((predicted[labels == c] == c).float().mean()) if (labels == c).any() else float("nan") for c in range(num_classes)]
