"""Adversarial losses by name, and the gradient penalties.

Each loss takes D's logits: `discriminator(real, fake)` is what D minimises,
`generator(fake)` what G minimises. Means are taken in float32 so bf16
autocast does not round the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    default_gp_weight: float = 0.0


def _bce_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()


LOSSES: dict[str, AdversarialLoss] = {
    # Goodfellow 2014: G minimises log(1 - D(G(z))), which saturates when D is confident.
    "minimax": AdversarialLoss(_bce_d, lambda fake: -F.softplus(fake.float()).mean()),
    # Same fixed point, G maximises log D(G(z)): strong gradients early on.
    "ns": AdversarialLoss(_bce_d, lambda fake: F.softplus(-fake.float()).mean()),
    # Mao et al. 2016.
    "lsgan": AdversarialLoss(
        lambda real, fake: 0.5 * ((real.float() - 1) ** 2).mean() + 0.5 * (fake.float() ** 2).mean(),
        lambda fake: 0.5 * ((fake.float() - 1) ** 2).mean(),
    ),
    # SNGAN / BigGAN.
    "hinge": AdversarialLoss(
        lambda real, fake: F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean(),
        lambda fake: -fake.float().mean(),
    ),
    # Gulrajani et al. 2017: the critic's Wasserstein estimate plus a gradient penalty.
    "wgan-gp": AdversarialLoss(
        lambda real, fake: fake.float().mean() - real.float().mean(),
        lambda fake: -fake.float().mean(),
        default_gp_weight=10.0,
    ),
}


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random points between real and fake images."""
    alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
    mixed = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).float().sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E ||grad D(x)||^2 on real images (the caller scales by gamma/2)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(dim=1).mean()
