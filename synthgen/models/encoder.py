"""Networks of the families that learn an encoder E: x -> z beside G (BiGAN/ALI, VAE-GAN).

E is the backbone's D trunk (registry.py) with its own width, batch norm and no
spectral norm (it is trained like G, not like a critic), the class joined as
one-hot planes where the data has classes (E infers the style within a class),
and a linear head to z, or to a Gaussian's mean and log-variance (VAE-GAN, ALI).

BiGAN's D judges (image, latent) pairs: `JointDiscriminator` runs the image
trunk and a small latent MLP side by side, joins them in one more layer and
hands the joint features to the usual conditioning head (conditioning.py), so
projection / concat / AC-GAN work on pairs as they do on images.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.conditioning import CONDITIONINGS, join_label_planes
from synthgen.models.layers import spectral
from synthgen.models.registry import get_backbone


class Encoder(nn.Module):
    def __init__(self, cfg, image_size: int, channels: int, num_classes: int, width: int, stochastic: bool):
        super().__init__()
        self.num_classes, self.z_dim, self.stochastic = num_classes, cfg.z_dim, stochastic
        planes = num_classes if num_classes > 1 else 0
        trunk_cfg = cfg.model_copy(update={"d_channels": width, "spectral_norm": False, "minibatch_std": False, "d_norm": "batch", "pack": 1})
        self.trunk = get_backbone(cfg.backbone).trunk(trunk_cfg, image_size, channels + planes)
        self.head = nn.Linear(self.trunk.features, cfg.z_dim * (2 if stochastic else 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean [B, z_dim], log-variance [B, z_dim] or None for a deterministic encoder)."""
        if self.num_classes > 1:
            x = join_label_planes(x, y, self.num_classes)
        out = self.head(self.trunk(x))
        return (out[:, : self.z_dim], out[:, self.z_dim :]) if self.stochastic else (out, None)


def reparameterised(mean: torch.Tensor, logvar: torch.Tensor | None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2014); a deterministic encoder's z is its output."""
    if logvar is None:
        return mean
    eps = torch.randn_like(mean) if noise is None else noise
    return mean + torch.exp(0.5 * logvar) * eps


class JointDiscriminator(nn.Module):
    """D(x, z, y) of BiGAN/ALI: image trunk + latent MLP -> one joint layer -> the conditioning head; dropout as in ALI."""

    def __init__(self, trunk_factory, cfg, image_size: int, channels: int, num_classes: int, conditioning: str, hidden: int, dropout: float):
        super().__init__()
        if cfg.pack > 1:
            raise ValueError("model.pack: BiGAN's D judges (image, latent) pairs one at a time; use 1")
        method = CONDITIONINGS[conditioning if num_classes > 1 else "none"]
        sn = cfg.spectral_norm
        self.trunk = trunk_factory(cfg, image_size, channels + method.planes(num_classes))

        def layer(a: int, b: int) -> list[nn.Module]:
            return [spectral(nn.Linear(a, b), sn), nn.LeakyReLU(0.2), nn.Dropout(dropout)]

        self.latent = nn.Sequential(*layer(cfg.z_dim, hidden), *layer(hidden, hidden))
        self.joint = nn.Sequential(*layer(self.trunk.features + hidden, hidden))
        self.head = method(hidden, num_classes, 1, sn)

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor):
        """x [B, C, H, W], z [B, z_dim], y [B] -> (logits [B], class logits [B, 1, K] or None)."""
        h = torch.cat([self.trunk(self.head.prepare_input(x, y)), self.latent(z)], dim=1)
        return self.head(self.joint(h), y.view(-1, 1))
