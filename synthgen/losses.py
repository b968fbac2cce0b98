"""Adversarial losses by name, and the gradient penalties.

Each loss takes D's logits: `discriminator(real, fake)` is what D minimises,
`generator(fake, real)` what G minimises (`real` is used by relativistic
losses only; the others take None). Means are taken in float32 so bf16
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
    generator: Callable[[Tensor, Tensor | None], Tensor]
    default_gp_weight: float = 0.0
    relativistic: bool = False  # G's loss needs D's logits on real images of the same step
    # D's logits mean something only relative to each other (a pair's difference; a WGAN critic has no fixed
    # offset), so "D calls this real" is the sign of D(real) - D(fake), not of D(real): what ADA's r_t reads.
    offset_free: bool = False


def _bce_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()


LOSSES: dict[str, AdversarialLoss] = {
    # Goodfellow 2014: G minimises log(1 - D(G(z))), which saturates when D is confident.
    "minimax": AdversarialLoss(_bce_d, lambda fake, real=None: -F.softplus(fake.float()).mean()),
    # Same fixed point, G maximises log D(G(z)): strong gradients early on.
    "ns": AdversarialLoss(_bce_d, lambda fake, real=None: F.softplus(-fake.float()).mean()),
    # Mao et al. 2016.
    "lsgan": AdversarialLoss(
        lambda real, fake: 0.5 * ((real.float() - 1) ** 2).mean() + 0.5 * (fake.float() ** 2).mean(),
        lambda fake, real=None: 0.5 * ((fake.float() - 1) ** 2).mean(),
    ),
    # SNGAN / BigGAN.
    "hinge": AdversarialLoss(
        lambda real, fake: F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean(),
        lambda fake, real=None: -fake.float().mean(),
    ),
    # Gulrajani et al. 2017: the critic's Wasserstein estimate plus a gradient penalty.
    "wgan-gp": AdversarialLoss(
        lambda real, fake: fake.float().mean() - real.float().mean(),
        lambda fake, real=None: -fake.float().mean(),
        default_gp_weight=10.0,
        offset_free=True,
    ),
    # Relativistic pairing (Jolicoeur-Martineau 2018; R3GAN, Huang et al. 2024): each fake is judged
    # against a real of the same batch. With R1 + R2 (loss.r1_gamma, loss.r2_gamma) it provably has
    # no mode-dropping local minima; without both penalties it diverges.
    "rpgan": AdversarialLoss(
        lambda real, fake: F.softplus(fake.float() - real.float()).mean(),
        lambda fake, real: F.softplus(real.float() - fake.float()).mean(),
        relativistic=True,
        offset_free=True,
    ),
}


def gp_weight(loss_section) -> float:
    """The recipe's loss.gp_weight, or its loss's default when left empty (10 for wgan-gp, else 0)."""
    weight = loss_section.gp_weight
    return LOSSES[loss_section.type].default_gp_weight if weight is None else weight


def penalises_gradients(loss_section) -> bool:
    """Whether D's loss has a gradient penalty (WGAN-GP, R1 or R2): its backward differentiates a gradient again,
    which torch.compile's graphs do not support ("aot_autograd does not currently support double backward")."""
    return gp_weight(loss_section) > 0 or loss_section.r1_gamma > 0 or loss_section.r2_gamma > 0


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random points between real and fake images."""
    alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
    mixed = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).float().sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def zero_centred_penalty(logits: Tensor, images: Tensor) -> Tensor:
    """E ||grad_x D(x)||^2 at `images` (the caller scales by gamma/2).

    On real images this is R1 (Mescheder et al. 2018), on generated ones R2;
    R3GAN uses both.
    """
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(dim=1).mean()

