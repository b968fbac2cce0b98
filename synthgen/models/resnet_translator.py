"""ResNet translator (CycleGAN, Zhu et al. 2017, after Johnson et al. 2016).

7x7 stem, two stride-2 downsamplings, `n_blocks` residual blocks at 1/4 size
(6 for 128 px, 9 for 256 px), two upsamplings, 7x7 output. Reflection padding
keeps borders free of the dark frame that zero padding teaches. The upsamplings
are CycleGAN's transposed 3x3 stride-2 convolutions, or with `model.g_upsample:
resize` (nearest-neighbour) or `bilinear` a resize then a 3x3 convolution (Odena
et al. 2016): a 3x3 kernel at stride 2 overlaps unevenly, which lays a
checkerboard over the image that a translator can also use to hide its input
from D (Chu et al. 2017); a nearest resize's 2x2 blocks lay a grid of edges G
can build axis-aligned stripes from, which bilinear does not.
Fully convolutional: sides must be multiples of `stride` (4).
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.layers import doubling
from synthgen.models.registry import register_translator
from synthgen.models.translation_layers import conv_bias, init_weights, norm_layer


class ResidualBlock(nn.Module):
    def __init__(self, width: int, norm: str):
        super().__init__()
        bias = conv_bias(norm)
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), norm_layer(norm, width), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), norm_layer(norm, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetTranslator(nn.Module):
    stride = 4

    def __init__(self, in_channels: int, out_channels: int, width: int, n_blocks: int, norm: str, max_width: int, upsample: str = "transposed"):
        super().__init__()
        bias = conv_bias(norm)
        w1, w2, w4 = (min(width * k, max_width) for k in (1, 2, 4))
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, w1, 7, bias=bias), norm_layer(norm, w1), nn.ReLU()]
        for a, b in ((w1, w2), (w2, w4)):
            layers += [nn.Conv2d(a, b, 3, 2, 1, bias=bias), norm_layer(norm, b), nn.ReLU()]
        layers += [ResidualBlock(w4, norm) for _ in range(n_blocks)]
        for a, b in ((w4, w2), (w2, w1)):
            layers += [*upsampling(a, b, upsample, bias), norm_layer(norm, b), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w1, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def upsampling(width_in: int, width_out: int, kind: str, bias: bool) -> list[nn.Module]:
    """Double the resolution (`model.g_upsample`): transposed (CycleGAN's), or resize (nearest) / bilinear, then a 3x3 convolution."""
    if kind == "transposed":
        return [nn.ConvTranspose2d(width_in, width_out, 3, 2, 1, output_padding=1, bias=bias)]
    return [doubling(kind), nn.ReflectionPad2d(1), nn.Conv2d(width_in, width_out, 3, bias=bias)]


def build_resnet_translator(cfg, image_size: int, in_channels: int, out_channels: int) -> ResnetTranslator:  # noqa: ARG001
    return ResnetTranslator(in_channels, out_channels, cfg.g_channels, cfg.n_blocks, cfg.norm, cfg.max_channels, cfg.g_upsample)


register_translator("resnet", build_resnet_translator, reads=frozenset({"n_blocks", "g_upsample"}))
