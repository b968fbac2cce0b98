"""InfoGAN's pieces (Chen et al. 2016): latent codes beside z, and D with a Q head on its trunk.

G takes [z, codes]: a categorical code as a one-hot vector, a continuous one
as a value drawn uniformly in [-1, 1]. Q(c | x) reads the same trunk
features as D's head and outputs, per code, logits (categorical) or a mean
and a log standard deviation (continuous: a factored Gaussian). The
mutual-information lower bound per code is
    L_I(c) = H(c) + E_{c, x = G(z, c)} log Q(c | x)
with H(c) = log K for a K-way uniform code and log 2 for uniform [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.conditioning import Discriminator

LOG_STD_LIMIT = 5.0  # Q's log standard deviations are clamped to +-5: a confident Q cannot make the bound infinite


@dataclass(frozen=True)
class LatentCodes:
    """The declared codes, in order: `sizes[i]` values for a categorical code, 0 for a continuous one."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def categorical(self, index: int) -> bool:
        return self.sizes[index] > 0

    @property
    def input_dim(self) -> int:
        """Numbers the codes add to G's input."""
        return sum(size or 1 for size in self.sizes)

    @property
    def q_dim(self) -> int:
        """Q's outputs: logits per categorical value, a mean and a log std per continuous code."""
        return sum(size or 2 for size in self.sizes)

    def draw(self, n: int, gen: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Code values [n, codes]: a categorical code's index (as a float), a continuous code's value in [-1, 1]."""
        columns = []
        for size in self.sizes:
            if size:
                columns.append(torch.randint(0, size, (n,), generator=gen, device=device).float())
            else:
                columns.append(torch.rand(n, generator=gen, device=device) * 2 - 1)
        return torch.stack(columns, dim=1)

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """Code values [n, codes] -> G's code input [n, input_dim] (one-hot per categorical code)."""
        parts = [
            F.one_hot(values[:, i].long(), size).to(values.dtype) if size else values[:, i : i + 1]
            for i, size in enumerate(self.sizes)
        ]
        return torch.cat(parts, dim=1)

    def decode(self, encoded: torch.Tensor) -> torch.Tensor:
        """G's code input [n, input_dim] -> the code values [n, codes] (inverse of encode)."""
        columns, start = [], 0
        for size in self.sizes:
            width = size or 1
            part = encoded[:, start : start + width]
            columns.append(part.argmax(dim=1).to(encoded.dtype) if size else part[:, 0])
            start += width
        return torch.stack(columns, dim=1)

    def log_likelihoods(self, q: torch.Tensor, values: torch.Tensor) -> list[torch.Tensor]:
        """log Q(c_i | x) per code [n], from Q's outputs [n, q_dim] and the values G was given."""
        out, start = [], 0
        for i, size in enumerate(self.sizes):
            if size:
                logits = q[:, start : start + size].float()
                out.append(-F.cross_entropy(logits, values[:, i].long(), reduction="none"))
            else:
                mean, log_std = q[:, start].float(), q[:, start + 1].float().clamp(-LOG_STD_LIMIT, LOG_STD_LIMIT)
                out.append(torch.distributions.Normal(mean, log_std.exp()).log_prob(values[:, i].float()))
            start += size or 2
        return out

    def entropy(self, index: int) -> float:
        """H(c_i) in nats: log K for a K-way uniform code, log 2 for the uniform density on [-1, 1]."""
        return math.log(self.sizes[index]) if self.sizes[index] else math.log(2.0)


class InfoDiscriminator(Discriminator):
    """D (trunk + conditioning head) with InfoGAN's Q head on the same trunk features: (logit, class logits, Q outputs)."""

    def __init__(self, trunk_factory, cfg, image_size: int, channels: int, num_classes: int, conditioning: str, q_dim: int, hidden: int):
        super().__init__(trunk_factory, cfg, image_size, channels, num_classes, conditioning)
        self.q = nn.Sequential(nn.Linear(self.trunk.features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, q_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        h = self.trunk_features(x, y)
        return (*self.judge(h, y), self.q(h))  # Q reads the trunk's features alone
