"""Exponential moving average of G, the generator used for grids and sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn

from synthgen.models.layers import batch_norms


class EMA:
    """The average G. Either a decay per step (ramped up), or a half-life in images
    (StyleGAN2, R3GAN) capped at `rampup` x the images seen so far, which means the
    same averaging at any batch size."""

    def __init__(self, generator: nn.Module, decay: float, halflife_kimg: float | None = None, rampup: float = 0.05, batch_size: int = 64):
        self.decay, self.halflife_kimg, self.rampup, self.batch_size = decay, halflife_kimg, rampup, batch_size
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @classmethod
    def from_recipe(cls, generator: nn.Module, train) -> "EMA | None":
        """The recipe's average of `generator` (train.ema_*), or None where train.ema is off."""
        return cls(generator, train.ema_decay, train.ema_halflife_kimg, train.ema_rampup, train.batch_size) if train.ema else None

    def beta(self, step: int) -> float:
        """How much of the old average is kept after generator update `step` (0-based)."""
        if self.halflife_kimg is None:
            # Ramp the decay (1+t)/(10+t): a fixed 0.999 would still carry the
            # untrained first steps thousands of steps later.
            return min(self.decay, (1 + step) / (10 + step))
        halflife = min(self.halflife_kimg * 1000, self.rampup * (step + 1) * self.batch_size)
        return 0.5 ** (self.batch_size / max(halflife, 1e-8))

    def update(self, generator: nn.Module, step: int) -> None:
        beta = self.beta(step)
        with torch.no_grad():
            ema = [p for p in self.model.parameters()]
            live = [p.detach() for p in generator.parameters()]
            torch._foreach_lerp_(ema, live, 1.0 - beta)
            # Buffers are copied, not averaged (StyleGAN2): StyleGAN's tracked mean w, spectral norm's
            # power-iteration vectors; batch-norm statistics are recalibrated before use anyway.
            buffers = list(self.model.buffers())
            if buffers:  # one fused copy, not a Python loop per step
                torch._foreach_copy_(buffers, [b.detach() for b in generator.buffers()])


class AveragedGenerator:
    """What every method that keeps `self.ema` (an EMA of `self.G`, or None) does with it: saves it as G_ema,
    samples and draws grids from it, and gives it batch-norm statistics of its own before use. The method
    supplies `random_inputs(n, gen)`, what its G is fed outside training."""

    ema: EMA | None

    def averaged_networks(self) -> dict:
        """G_ema for the checkpoint, where kept."""
        return {"G_ema": self.ema.model} if self.ema else {}

    @property
    def sampling_generator(self) -> nn.Module:
        return self.ema.model if self.ema else self.G

    def update_average(self, step: int) -> None:
        """After generator update `step`."""
        if self.ema:
            self.ema.update(self.G, step)

    def prepare_for_sampling(self) -> None:
        """Give the sampling generator BN statistics that match its weights (the live G's belong to other weights)."""
        if self.ema:
            recalibrate_batchnorm(self.ema.model, self.random_inputs, self.device, seed=self.recipe.seed)


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, inputs, device, seed: int, batches: int = 8, batch_size: int = 64) -> None:
    """Recompute BN running statistics for these (averaged) weights.

    Statistics copied from the live G belong to other weights; a few forward
    passes with a private generator (so training's RNG is untouched) give the
    averaged G its own. `inputs(n, gen)` draws n (latent, class) pairs on the CPU.
    """
    norms = batch_norms(generator)
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the passes
    generator.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        z, y = inputs(batch_size, gen)
        generator(z.to(device), y.to(device))
    generator.eval()
