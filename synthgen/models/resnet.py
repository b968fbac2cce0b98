"""ResNet backbones in the SNGAN / BigGAN style (Miyato et al. 2018; Brock et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.layers import MinibatchStd, join_label, generator_norm, resolution_plan, spectral, widths
from synthgen.models.registry import register_backbone


class GBlock(nn.Module):
    """norm-relu-up-conv-norm-relu-conv, plus an upsampled 1x1 shortcut."""

    def __init__(self, a: int, b: int, num_classes: int, norm, sn: bool):
        super().__init__()
        self.norm1, self.norm2 = norm(a, num_classes), norm(b, num_classes)
        self.conv1 = spectral(nn.Conv2d(a, b, 3, 1, 1), sn)
        self.conv2 = spectral(nn.Conv2d(b, b, 3, 1, 1), sn)
        self.skip = spectral(nn.Conv2d(a, b, 1), sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(torch.relu(self.norm1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(torch.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetGenerator(nn.Module):
    MODEL_KEYS = frozenset({"g_cond_bn", "g_spectral_norm"})

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.base, levels = resolution_plan(image_size)
        width = widths(cfg.g_channels, levels, cfg.max_channels)[::-1]
        sn, norm = cfg.g_spectral_norm, generator_norm(cfg.g_cond_bn)
        self.join_label = not cfg.g_cond_bn  # else the class enters through the batch norms
        in_dim = cfg.z_dim + (num_classes if self.join_label else 0)
        self.project = spectral(nn.Linear(in_dim, width[0] * self.base**2), sn)
        self.blocks = nn.ModuleList(GBlock(a, b, num_classes, norm, sn) for a, b in zip(width, width[1:]))
        self.out_norm = norm(width[-1], num_classes)
        self.out = spectral(nn.Conv2d(width[-1], channels, 3, 1, 1), sn)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = join_label(z, y, self.num_classes) if self.join_label else z
        h = self.project(h).view(len(z), -1, self.base, self.base)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(torch.relu(self.out_norm(h, y))))


class DBlock(nn.Module):
    """(relu)-conv-relu-conv-(avgpool) with a 1x1 shortcut; the first block skips the leading relu."""

    def __init__(self, a: int, b: int, sn: bool, down: bool, first: bool):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = spectral(nn.Conv2d(a, b, 3, 1, 1), sn)
        self.conv2 = spectral(nn.Conv2d(b, b, 3, 1, 1), sn)
        self.skip = spectral(nn.Conv2d(a, b, 1), sn) if (a != b or down) else None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else torch.relu(x)
        h = self._pool(self.conv2(torch.relu(self.conv1(h))))
        if self.skip is None:
            return h + x
        # The first block pools before its shortcut conv (SNGAN's OptimizedBlock).
        shortcut = self.skip(self._pool(x)) if self.first else self._pool(self.skip(x))
        return h + shortcut


class ResNetTrunk(nn.Module):
    MODEL_KEYS = frozenset({"minibatch_std"})

    def __init__(self, cfg, image_size: int, in_channels: int):
        super().__init__()
        _, levels = resolution_plan(image_size)
        width = widths(cfg.d_channels, levels - 1, cfg.max_channels)
        sn = cfg.spectral_norm
        blocks = [DBlock(in_channels, width[0], sn, down=True, first=True)]
        blocks += [DBlock(a, b, sn, down=True, first=False) for a, b in zip(width, width[1:])]
        last_in = width[-1]
        if cfg.minibatch_std:
            blocks.append(MinibatchStd())
            last_in += 1
        blocks.append(DBlock(last_in, width[-1], sn, down=False, first=False))
        self.blocks = nn.Sequential(*blocks)
        self.features = width[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, as in SNGAN


register_backbone("resnet", ResNetGenerator, ResNetTrunk)
