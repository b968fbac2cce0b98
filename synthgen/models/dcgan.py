"""DCGAN (Radford et al. 2015): fractionally strided convs in G, strided convs in D."""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.layers import MinibatchStd, dcgan_init, doubling, generator_norm, join_label, resolution_plan, spectral, widths
from synthgen.models.registry import register_backbone


def upsampling(width_in: int, width_out: int, kind: str, sn: bool) -> nn.Module:
    """Double the resolution: DCGAN's transposed 4x4 convolution, or (Odena et al. 2016, "Deconvolution and
    checkerboard artifacts") a nearest-neighbour (resize) or bilinear resize then a 3x3 convolution, which cannot lay
    the uneven overlap pattern of a strided transposed convolution over the image."""
    if kind == "transposed":
        return spectral(dcgan_init(nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False)), sn)
    return nn.Sequential(doubling(kind),
                         spectral(dcgan_init(nn.Conv2d(width_in, width_out, 3, 1, 1, bias=False)), sn))


class DCGANGenerator(nn.Module):
    MODEL_KEYS = frozenset({"g_upsample", "g_cond_bn", "g_spectral_norm"})

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.base, levels = resolution_plan(image_size)
        width = widths(cfg.g_channels, levels, cfg.max_channels)[::-1]  # lowest resolution first
        sn, norm = cfg.g_spectral_norm, generator_norm(cfg.g_cond_bn)
        self.join_label = not cfg.g_cond_bn  # else the class enters through the batch norms
        in_dim = cfg.z_dim + (num_classes if self.join_label else 0)
        self.project = spectral(dcgan_init(nn.Linear(in_dim, width[0] * self.base**2)), sn)
        self.norms = nn.ModuleList(norm(w, num_classes) for w in width)
        self.ups = nn.ModuleList(upsampling(a, b, cfg.g_upsample, sn) for a, b in zip(width, width[1:]))
        self.out = spectral(dcgan_init(nn.Conv2d(width[-1], channels, 3, 1, 1)), sn)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = join_label(z, y, self.num_classes) if self.join_label else z
        h = self.project(h).view(len(z), -1, self.base, self.base)
        h = torch.relu(self.norms[0](h, y))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = torch.relu(norm(up(h), y))
        return torch.tanh(self.out(h))


class DCGANTrunk(nn.Module):
    MODEL_KEYS = frozenset({"d_norm", "minibatch_std"})

    def __init__(self, cfg, image_size: int, in_channels: int):
        super().__init__()
        base, levels = resolution_plan(image_size)
        width = widths(cfg.d_channels, levels - 1, cfg.max_channels)
        sn = cfg.spectral_norm
        norm = nn.BatchNorm2d if cfg.d_norm == "batch" else (lambda _: nn.Identity())
        layers = [spectral(dcgan_init(nn.Conv2d(in_channels, width[0], 4, 2, 1)), sn), nn.LeakyReLU(0.2)]
        for a, b in zip(width, width[1:]):  # no norm on the first layer, as in DCGAN
            layers += [spectral(dcgan_init(nn.Conv2d(a, b, 4, 2, 1)), sn), norm(b), nn.LeakyReLU(0.2)]
        if cfg.minibatch_std:
            layers += [MinibatchStd(), spectral(dcgan_init(nn.Conv2d(width[-1] + 1, width[-1], 3, 1, 1)), sn), nn.LeakyReLU(0.2)]
        self.layers = nn.Sequential(*layers, nn.Flatten())
        self.features = width[-1] * base**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register_backbone("dcgan", DCGANGenerator, DCGANTrunk)
