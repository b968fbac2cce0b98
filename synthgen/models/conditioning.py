"""How the class label enters D: one class per conditioning method, chosen by name.

Every method sees D's trunk features h [B', F] and the labels y [B', pack]
(pack > 1 with PacGAN, where D judges `pack` samples at once) and returns
the adversarial logit [B'] plus, for AC-GAN, class logits [B', pack, K].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.layers import MinibatchDiscrimination, spectral


class Unconditional(nn.Module):
    """One class: D only judges real vs fake."""

    @staticmethod
    def planes(num_classes: int) -> int:  # noqa: ARG004
        """Extra input channels per image."""
        return 0

    def __init__(self, features: int, num_classes: int, pack: int, sn: bool):
        super().__init__()
        self.adversarial = spectral(nn.Linear(features, 1), sn)

    def prepare_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return x

    def forward(self, h: torch.Tensor, y: torch.Tensor):  # noqa: ARG002
        return self.adversarial(h).squeeze(1), None


class Concat(Unconditional):
    """cGAN (Mirza & Osindero 2014): one-hot label planes joined to D's input."""

    def __init__(self, features: int, num_classes: int, pack: int, sn: bool):
        super().__init__(features, num_classes, pack, sn)
        self.num_classes = num_classes

    @staticmethod
    def planes(num_classes: int) -> int:
        return num_classes

    def prepare_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return join_label_planes(x, y, self.num_classes)


def join_label_planes(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """x [B, C, H, W] with one constant one-hot plane per class joined: [B, C + num_classes, H, W]."""
    one_hot = F.one_hot(y, num_classes).to(x.dtype)[:, :, None, None]
    return torch.cat([x, one_hot.expand(-1, -1, *x.shape[2:])], dim=1).contiguous(memory_format=_layout(x))


class Projection(Unconditional):
    """Projection discriminator (Miyato & Koyama 2018): logit = psi(h) + <embed(y), h>.

    With packing each slot of the pack has its own embedding table, so D knows
    which label belongs to which packed sample.
    """

    def __init__(self, features: int, num_classes: int, pack: int, sn: bool):
        super().__init__(features, num_classes, pack, sn)
        self.num_classes = num_classes
        self.embed = spectral(nn.Embedding(num_classes * pack, features), sn)

    def forward(self, h: torch.Tensor, y: torch.Tensor):
        slots = torch.arange(y.shape[1], device=y.device) * self.num_classes
        projection = (self.embed(y + slots).sum(dim=1) * h).sum(dim=1)
        return self.adversarial(h).squeeze(1) + projection, None


class ACGAN(Unconditional):
    """AC-GAN (Odena et al. 2016): an auxiliary head classifies every (packed) sample."""

    def __init__(self, features: int, num_classes: int, pack: int, sn: bool):
        super().__init__(features, num_classes, pack, sn)
        self.pack, self.num_classes = pack, num_classes
        self.classifier = spectral(nn.Linear(features, pack * num_classes), sn)

    def forward(self, h: torch.Tensor, y: torch.Tensor):  # noqa: ARG002
        logits = self.classifier(h).view(len(h), self.pack, self.num_classes)
        return self.adversarial(h).squeeze(1), logits


CONDITIONINGS: dict[str, type[Unconditional]] = {
    "none": Unconditional,
    "concat": Concat,
    "projection": Projection,
    "acgan": ACGAN,
}


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else torch.contiguous_format


class Discriminator(nn.Module):
    """Trunk + conditioning head, with PacGAN packing before the trunk and minibatch discrimination after it.

    Both anti-collapse options live here, not in a backbone, so every trunk
    (dcgan, resnet, r3 and any registered later) gets them: minibatch
    discrimination reads the trunk's feature vector, as Salimans et al.'s own
    code read D's last features before its output layer.
    """

    def __init__(self, trunk_factory, cfg, image_size: int, channels: int, num_classes: int, conditioning: str):
        super().__init__()
        method = CONDITIONINGS[conditioning if num_classes > 1 else "none"]
        self.pack = cfg.pack
        planes = method.planes(num_classes)
        self.trunk = trunk_factory(cfg, image_size, (channels + planes) * cfg.pack)
        mbd = cfg.minibatch_discrimination
        self.minibatch = (
            MinibatchDiscrimination(self.trunk.features, mbd.kernels, mbd.dims, cfg.spectral_norm) if mbd.kernels else nn.Identity()
        )
        features = self.trunk.features + mbd.kernels
        self.head = method(features, num_classes, cfg.pack, cfg.spectral_norm)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        """x [B, C, H, W], y [B] -> (logits [B / pack], class logits [B / pack, pack, K] or None)."""
        return self.judge(self.trunk_features(x, y), y)

    def judge(self, h: torch.Tensor, y: torch.Tensor):
        """The head's outputs for trunk features h (with the minibatch-discrimination features joined when on)."""
        return self.head(self.minibatch(h), y.view(-1, self.pack))

    def trunk_features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The trunk's features [B / pack, F] of (packed) images, which the head judges (and InfoGAN's Q reads)."""
        x = self.head.prepare_input(x, y)
        if self.pack > 1:
            b, c, h, w = x.shape
            x = x.reshape(b // self.pack, self.pack * c, h, w)
        return self.trunk(x)


def build_models(recipe, num_classes: int):
    """G and D for a recipe and a number of classes."""
    from synthgen.models.registry import get_backbone

    backbone = get_backbone(recipe.model.backbone)
    size, channels = recipe.data.image_size, recipe.data.channels
    generator = backbone.generator(recipe.model, size, channels, num_classes)
    discriminator = Discriminator(backbone.trunk, recipe.model, size, channels, num_classes, recipe.conditioning.type)
    return generator, discriminator
