"""PatchGAN discriminator (pix2pix, CycleGAN): one real/fake logit per overlapping patch.

With `n_layers` = 3 each output sees a 70x70 patch: 4x4 convolutions, three
with stride 2 (64-128-256), one with stride 1 (512), then a 1-channel map.
Judging patches instead of whole images models texture and local structure,
leaving global agreement with the input to the L1 or cycle loss; it runs on
images of any size.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.translation_layers import conv_bias, init_weights, norm_layer


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, width: int, n_layers: int, norm: str, max_width: int):
        super().__init__()
        bias = conv_bias(norm)
        widths = [min(width * 2**i, 8 * width, max_width) for i in range(n_layers + 1)]
        layers = [nn.Conv2d(in_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1, bias=bias), norm_layer(norm, widths[i]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> patch logits [B, 1, h, w]."""
        return self.net(x)


def build_patch_discriminator(cfg, in_channels: int) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels, cfg.d_channels, cfg.d_layers, cfg.norm, cfg.max_channels)
