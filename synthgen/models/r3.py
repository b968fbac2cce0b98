"""R3GAN's backbone (Huang et al. 2024, "The GAN is dead; long live the GAN!"), sized for a CPU.

A normalisation-free ResNet for G and D alike: every stage is a resampling
transition plus inverted-bottleneck residual blocks (1x1 expand, grouped 3x3,
1x1 project), leaky ReLU after a learned bias, bilinear resampling, and a
fix-up initialisation: each residual branch's last layer starts at zero and
the others are scaled by the number of blocks, so a freshly built network is
close to its shortcut path and trains stably without any normalisation.

What differs from the paper's code, and why:
- widths double towards low resolution (capped), like the other backbones,
  instead of one constant width: at 28-64 px on a CPU the full-resolution
  stage is where the time goes;
- G ends in tanh so its images live in [-1, 1] like every other backbone's
  (the paper's output is linear and clamped when saved);
- D's last stage is a trunk returning features; the class enters through the
  conditioning head (projection, models/conditioning.py), the paper's choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.layers import resolution_plan, widths
from synthgen.models.registry import register_backbone

LEAK = 0.2
ACTIVATION_GAIN = math.sqrt(2 / (1 + LEAK**2))  # He gain for leaky ReLU(0.2)


def msr_init(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """He (MSR) initialisation with a gain; gain 0 zeroes the layer (fix-up's last layer of a branch)."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def act(x: torch.Tensor) -> torch.Tensor:
    # The paper's "biased activation" is a bias then leaky ReLU; here the bias is the preceding
    # conv's own (the same maths, one pass over memory fewer on a CPU).
    return F.leaky_relu(x, LEAK)


class ResidualBlock(nn.Module):
    """x + conv1x1(act(grouped conv3x3(act(conv1x1(x))))), the last conv zero at start."""

    def __init__(self, channels: int, expansion: int, group_width: int, total_blocks: int):
        super().__init__()
        hidden = channels * expansion
        groups = max(1, hidden // group_width)
        while hidden % groups:
            groups -= 1
        # Fix-up: with L blocks of 3 layers, scale the branch so the sum of L branches keeps unit variance.
        gain = ACTIVATION_GAIN * total_blocks ** (-1 / (2 * 3 - 2))
        self.expand = msr_init(nn.Conv2d(channels, hidden, 1), gain)
        self.spatial = msr_init(nn.Conv2d(hidden, hidden, 3, padding=1, groups=groups), gain)
        self.project = msr_init(nn.Conv2d(hidden, channels, 1, bias=False), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(act(self.spatial(act(self.expand(x)))))


def lowpass_kernel() -> torch.Tensor:
    """The paper's [1, 2, 1] filter widened for stride-2 resampling: [1, 3, 3, 1] (bilinear), normalised."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


class Downsample(nn.Module):
    """Bilinear (antialiased) 2x downsampling as a fixed depthwise conv: twice-differentiable, for R1/R2."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", lowpass_kernel()[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 4, 4).contiguous(), stride=2, padding=1, groups=c)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def stage_blocks(width: int, cfg, total: int) -> list[nn.Module]:
    return [ResidualBlock(width, cfg.expansion, cfg.group_width, total) for _ in range(cfg.blocks_per_stage)]


class R3Generator(nn.Module):
    """z (+ a learned class embedding) -> a learned base x base basis -> [up, blocks] per level -> image."""

    MODEL_KEYS = frozenset({"blocks_per_stage", "expansion", "group_width"})

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.base, levels = resolution_plan(image_size)
        width = widths(cfg.g_channels, levels, cfg.max_channels)[::-1]  # lowest resolution first
        total = cfg.blocks_per_stage * len(width)
        # The class joins z as a learned embedding (R3GAN, stylegan2-ada): no batch norm here to drown z.
        self.embed = msr_init(nn.Linear(num_classes, cfg.z_dim, bias=False)) if num_classes > 1 else None
        in_dim = cfg.z_dim * (2 if self.embed is not None else 1)
        self.basis = nn.Parameter(torch.randn(width[0], self.base, self.base))
        self.to_basis = msr_init(nn.Linear(in_dim, width[0], bias=False))
        self.stages = nn.ModuleList([nn.Sequential(*stage_blocks(width[0], cfg, total))])
        self.transitions = nn.ModuleList()
        for a, b in zip(width, width[1:]):
            self.transitions.append(msr_init(nn.Conv2d(a, b, 1, bias=False)) if a != b else nn.Identity())
            self.stages.append(nn.Sequential(*stage_blocks(b, cfg, total)))
        self.out = msr_init(nn.Conv2d(width[-1], channels, 1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(F.one_hot(y, self.num_classes).to(z.dtype))], dim=1)
        h = self.basis[None] * self.to_basis(z)[:, :, None, None]
        h = self.stages[0](h)
        for transition, stage in zip(self.transitions, self.stages[1:]):
            h = stage(upsample(transition(h)))
        return torch.tanh(self.out(h))


class R3Trunk(nn.Module):
    """image -> 1x1 conv -> [blocks, down] per level -> blocks -> depthwise base x base basis -> features."""

    MODEL_KEYS = frozenset({"blocks_per_stage", "expansion", "group_width"})

    def __init__(self, cfg, image_size: int, in_channels: int):
        super().__init__()
        base, levels = resolution_plan(image_size)
        width = widths(cfg.d_channels, levels, cfg.max_channels)  # highest resolution first
        total = cfg.blocks_per_stage * len(width)
        self.extract = msr_init(nn.Conv2d(in_channels, width[0], 1))
        layers: list[nn.Module] = []
        for a, b in zip(width, width[1:]):
            layers += stage_blocks(a, cfg, total) + [Downsample()]
            layers += [msr_init(nn.Conv2d(a, b, 1, bias=False))] if a != b else []
        layers += stage_blocks(width[-1], cfg, total)
        self.layers = nn.Sequential(*layers)
        # The paper's discriminative basis: a base x base depthwise conv down to one value per channel.
        self.basis = msr_init(nn.Conv2d(width[-1], width[-1], base, groups=width[-1]))
        self.features = width[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return act(self.basis(self.layers(self.extract(x))).flatten(1))


register_backbone("r3", R3Generator, R3Trunk)
