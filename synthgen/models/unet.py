"""U-Net generator with skip connections (pix2pix, Isola et al. 2017).

The encoder halves the size `depth` times with 4x4 stride-2 convolutions
(widths 64-128-256-512-512...); the decoder mirrors it and joins each encoder
feature map to the decoder's map of the same size, so fine detail (edges,
positions) passes straight across. Dropout in the three decoder blocks below
the bottleneck is pix2pix's only source of noise. Fully convolutional: any
input whose sides are multiples of `stride` (2^depth) works.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.registry import register_translator
from synthgen.models.translation_layers import conv_bias, init_weights, norm_layer

MAX_DEPTH = 8  # pix2pix's unet_256: 256 px down to a 1x1 bottleneck


def unet_depth(image_size: int) -> int:
    """Halvings down to an odd size or a 1x1 bottleneck: 256 -> 8, 32 -> 5, 96 -> 5 (3x3)."""
    depth = 0
    while image_size % 2 == 0 and depth < MAX_DEPTH:
        image_size //= 2
        depth += 1
    return depth


class UNetGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int, norm: str, dropout: float, max_width: int):
        super().__init__()
        if depth < 3:
            raise ValueError(f"a U-Net needs at least 3 halvings (depth {depth}); use an image size divisible by 8")
        self.stride = 2**depth
        bias = conv_bias(norm)
        widths = [min(width * 2**i, 8 * width, max_width) for i in range(depth)]
        # Encoder: level i maps to widths[i] at 1/2^(i+1) of the input size.
        self.down = nn.ModuleList([nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias)])
        for i in range(1, depth):
            layers = [nn.LeakyReLU(0.2), nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias)]
            if i < depth - 1:  # no norm on the bottleneck: at 1x1 instance norm would zero it
                layers.append(norm_layer(norm, widths[i]))
            self.down.append(nn.Sequential(*layers))
        # Decoder, from the bottleneck up: level i takes widths[i] (bottleneck) or 2*widths[i] (joined skip).
        self.up = nn.ModuleList()
        for i in range(depth - 1, 0, -1):
            in_width = widths[i] if i == depth - 1 else 2 * widths[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(in_width, widths[i - 1], 4, 2, 1, bias=bias), norm_layer(norm, widths[i - 1])]
            if dropout > 0 and depth - 4 <= i <= depth - 2:  # the three blocks just below the bottleneck
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1), nn.Tanh()))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        return x


def build_unet(cfg, image_size: int, in_channels: int, out_channels: int) -> UNetGenerator:
    return UNetGenerator(in_channels, out_channels, cfg.g_channels, unet_depth(image_size), cfg.norm, cfg.dropout, cfg.max_channels)


register_translator("unet", build_unet, reads=frozenset({"dropout"}))
