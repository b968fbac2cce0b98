"""Building blocks shared by the backbones."""

from __future__ import annotations

import torch
from torch import nn


def resolution_plan(size: int) -> tuple[int, int]:
    """size = base * 2**levels with 4 <= base <= 8 and levels >= 2 (28 -> (7, 2), 64 -> (4, 4))."""
    base, levels = size, 0
    while base % 2 == 0 and base // 2 >= 4:
        base //= 2
        levels += 1
    if levels < 2 or base > 8:
        raise ValueError(f"{size} px is not base*2^k with base 4..8 and k >= 2; use e.g. 28, 32, 48, 64, 96 or 128")
    return base, levels


def widths(base_width: int, levels: int, cap: int) -> list[int]:
    """Channel widths from the highest resolution (base_width) down, doubling per level, capped."""
    return [min(cap, base_width * 2**i) for i in range(levels + 1)]


# model.g_upsample's resizing kinds -> nn.Upsample modes. Nearest copies each pixel into a 2x2 block, whose edges on a
# 2-pixel grid G can build axis-aligned stripes from; bilinear interpolates, so every pattern finer than the input's
# pixels must come from the convolution after it.
RESIZE_MODES = {"resize": "nearest", "bilinear": "bilinear"}


def doubling(kind: str) -> nn.Upsample:
    """Twice the resolution by resizing (`model.g_upsample` resize or bilinear), before the convolution that follows."""
    return nn.Upsample(scale_factor=2, mode=RESIZE_MODES[kind])


def spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if enabled else layer


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of a network (the layers with running statistics)."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class PlainBatchNorm(nn.BatchNorm2d):
    """Batch norm with the (x, y) call signature of the conditional one."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - y unused by design
        return super().forward(x)


class ClassBatchNorm(nn.Module):
    """Conditional batch norm (de Vries 2017; SNGAN, BigGAN): per-class gain and bias."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


def generator_norm(conditional: bool):
    return ClassBatchNorm if conditional else PlainBatchNorm


def join_label(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """cGAN input (Mirza & Osindero 2014): z joined with a fixed one-hot label.

    Fixed on purpose: a learned class embedding here lets G grow it until it
    drowns z after the first batch norm, and G collapses to one image per class.
    """
    return torch.cat([z, torch.nn.functional.one_hot(y, num_classes).to(z.dtype)], dim=1)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation: one extra channel telling D how varied the batch is."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        while n % group:
            group -= 1
        stats = x.float().reshape(group, -1, c, h, w)
        stats = stats.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # [n / group]
        stats = stats.repeat(group).reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
        return torch.cat([x, stats], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016): per-sample features saying how unlike the rest of its batch it is.

    M_i = f(x_i) T, a [kernels B, dims C] matrix per sample; per kernel b the
    paper's closeness c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_L1) and feature
    o(x_i)_b = sum_j c_b(x_i, x_j), self-term j = i included. Here D gets

        d(x_i)_b = 1/(n-1) sum_{j != i} (1 - c_b(x_i, x_j)) = (n - o(x_i)_b) / (n - 1),

    the same information (an affine map of o for a batch of n, which D's next
    linear layer absorbs), but exactly 0 for a batch of identical samples,
    growing toward 1 as they differ, and on one scale whatever n is: n is the
    local batch (divided by model.pack, per process under DDP), and the
    features compare samples within it only.
    """

    def __init__(self, features: int, kernels: int, dims: int, sn: bool):
        super().__init__()
        self.kernels, self.dims = kernels, dims
        layer = nn.Linear(features, kernels * dims, bias=False)  # f(x) T, with T stored transposed as the weight
        nn.init.normal_(layer.weight, 0.0, 0.05)
        self.T = spectral(layer, sn)
        self.features = features + kernels

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [n, features] -> [n, features + kernels]: h joined with the diversity features."""
        n = len(h)
        m = self.T(h).float().view(n, self.kernels, self.dims)  # float32: exp of distances is no place for bf16
        # Pairwise L1 distances by broadcasting rather than torch.cdist: it has a double backward, which
        # R1/R2 and the unrolled GAN (train.unroll_steps) need through D. One [n, n, kernels] term per
        # dim, summed: twice as fast forward and backward as one [n, n, kernels, dims] tensor reduced
        # over its short last axis (measured), and this layer was half of a 28 px training step.
        distance = sum((column[:, None] - column[None]).abs() for column in m.permute(2, 0, 1).contiguous())
        diversity = (1 - torch.exp(-distance)).sum(dim=1) / max(n - 1, 1)  # the j = i term is 1 - 1 = 0
        return torch.cat([h, diversity.to(h.dtype)], dim=1)


def dcgan_init(layer: nn.Module) -> nn.Module:
    """DCGAN's N(0, 0.02) weights and zero biases (Radford et al. 2015); call before spectral()."""
    nn.init.normal_(layer.weight, 0.0, 0.02)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer
