"""StyleGAN's generator (Karras et al. 2019) with StyleGAN2's fixes (Karras et al. 2020), sized for a CPU.

z -> mapping MLP -> w, one w per layer ("styles"); the image grows from a
learned constant base x base input (4x4, or 7x7 for 28 px) through modulated
and demodulated 3x3 convolutions, each with per-pixel noise scaled per
channel, and is the sum of a 1x1 toRGB output at every resolution (StyleGAN2's
skip architecture), bilinearly upsampled on the way.

- Conditional runs: a class embedding joins the normalised z at the mapping's
  input (stylegan2-ada).
- Style mixing (training mode only): with probability `model.style_mixing` the
  layers after a random crossover take the w of a second z (same class).
- Truncation in W: G tracks the mean w of each class (an EMA in training, the
  buffer `w_avg`, saved with the weights); setting `G.truncation = psi` moves
  every w toward its class mean, w_avg[y] + psi (w - w_avg[y]). `synthgen
  sample --truncation` sets it (sample.py) instead of truncating z.
- Noise: random in training; outside it (`noise_mode = "const"`, the default
  in eval mode) fixed buffers, so an image depends on its seed alone and
  `synthgen sample` stays byte-reproducible.
- Equalized learning rate (ProGAN/StyleGAN): weights are stored N(0, 1) and
  scaled by He's constant at run time, so Adam's per-parameter step is the
  same relative change in every layer; the mapping's rate is scaled by 0.01
  (StyleGAN), which keeps w from drifting fast. It is why recipes/stylegan.yaml
  gives G a ten times larger learning rate than D.

D is the ResNet trunk (models/resnet.py) with any conditioning head: a
StyleGAN2 D is a ResNet D too; the trunk already supports minibatch stddev,
packing and R1/R2. Backbone `stylegan-growing` is StyleGAN v1's setting
instead: this G grown progressively (method progan) against ProGAN's growing D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.layers import resolution_plan, widths
from synthgen.models.progan import GrowingNetwork, Growth, ProGANTrunk
from synthgen.models.progan import upsample as nearest_upsample
from synthgen.models.registry import register_backbone
from synthgen.models.resnet import ResNetTrunk

MAPPING_LR_MUL = 0.01  # StyleGAN: the mapping MLP learns at 1/100 of the rate
W_AVG_BETA = 0.995  # StyleGAN2's decay of the tracked mean w
LRELU_GAIN = math.sqrt(2.0)  # keeps unit variance through leaky ReLU(0.2), as StyleGAN's bias_act


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """A linear layer with equalized learning rate: weight ~ N(0, 1) / lr_mul, scaled by lr_mul / sqrt(fan_in)."""

    def __init__(self, fan_in: int, fan_out: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((fan_out,), float(bias_init) / lr_mul))
        self.weight_gain, self.lr_mul, self.activate = lr_mul / math.sqrt(fan_in), lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True) -> torch.Tensor:
    """conv2d of sample i with weight w'_i = w * s_i (per input channel), demodulated:
    w''_i = w'_i / sqrt(sum over in, kh, kw of w'_i^2 + 1e-8) (StyleGAN2, eq. 1-3).

    Computed as scale input -> shared conv -> scale output, which equals the
    per-sample weights exactly (the conv is linear in the input, and the
    demodulation factor is one number per sample and output channel) and runs
    as one ordinary convolution, channels_last and autocast included.
    x [B, I, H, W], weight [O, I, k, k], styles [B, I].
    """
    x = x * styles.to(x.dtype)[:, :, None, None]
    x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2, in fp32 whatever the autocast dtype.
        coefficients = (styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # [B, O]
        x = x * coefficients.to(x.dtype)[:, :, None, None]
    return x


class StyleConv(nn.Module):
    """Modulated 3x3 conv (+ bilinear 2x upsampling before it), per-pixel noise with per-channel scales, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool):
        super().__init__()
        self.up = up
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: an unmodulated conv
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))  # learned per channel, from 0 (StyleGAN)
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight, self.affine(w))
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        else:
            noise = None
        if noise is not None:
            x = x + noise * self.noise_strength.to(x.dtype)[None, :, None, None]
        return F.leaky_relu(x + self.bias.to(x.dtype)[None, :, None, None], 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, not demodulated (StyleGAN2)."""

    def __init__(self, in_channels: int, channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return x + self.bias.to(x.dtype)[None, :, None, None]


class Mapping(nn.Module):
    """z (+ class embedding) -> w: StyleGAN's MLP at a hundredth of the learning rate."""

    def __init__(self, z_dim: int, w_dim: int, num_classes: int, layers: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqualLinear(num_classes, w_dim) if num_classes > 1 else None
        in_dim = z_dim + (w_dim if self.embed is not None else 0)
        dims = [in_dim] + [w_dim] * layers
        self.layers = nn.Sequential(*(EqualLinear(a, b, lr_mul=MAPPING_LR_MUL, activate=True) for a, b in zip(dims, dims[1:])))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(F.one_hot(y, self.num_classes).to(z.dtype)))], dim=1)
        return self.layers(x)


class StyleGANGenerator(nn.Module):
    MODEL_KEYS = frozenset({"mapping_layers", "style_mixing"})

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.w_dim, self.style_mixing = cfg.z_dim, cfg.style_mixing
        self.base, levels = resolution_plan(image_size)
        width = widths(cfg.g_channels, levels, cfg.max_channels)[::-1]  # lowest resolution first
        self.mapping = Mapping(cfg.z_dim, self.w_dim, num_classes, cfg.mapping_layers)
        self.const = nn.Parameter(torch.randn(width[0], self.base, self.base))
        # One conv at the base resolution, then (up + conv, conv) per level; a toRGB after each resolution.
        self.convs = nn.ModuleList([StyleConv(width[0], width[0], self.w_dim, self.base, up=False)])
        self.to_rgbs = nn.ModuleList([ToRGB(width[0], channels, self.w_dim)])
        for level, (a, b) in enumerate(zip(width, width[1:]), start=1):
            resolution = self.base * 2**level
            self.convs.extend([StyleConv(a, b, self.w_dim, resolution, up=True), StyleConv(b, b, self.w_dim, resolution, up=False)])
            self.to_rgbs.append(ToRGB(b, channels, self.w_dim))
        self.num_ws = len(self.convs) + 1  # the last toRGB takes a w of its own (StyleGAN2)
        self.register_buffer("w_avg", torch.zeros(num_classes, self.w_dim))  # the tracked mean w per class
        self.truncation: float | None = None  # psi: set by `synthgen sample --truncation`; None = off
        self.noise_mode: str | None = None  # None: random in training, const otherwise; or "random", "const", "none"

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.styles(z, y))

    def styles(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """w per layer [B, num_ws, w_dim]: tracked mean updated and style mixing in training, truncation outside it."""
        w = self.mapping(z, y)
        if self.training:
            self._track_mean(w.detach(), y)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if self.training and self.style_mixing > 0:
            ws = self._mix(ws, z, y)
        if self.truncation is not None and not self.training:
            mean = self.w_avg[y][:, None].to(ws.dtype)
            ws = mean + self.truncation * (ws - mean)
        return ws

    def _track_mean(self, w: torch.Tensor, y: torch.Tensor) -> None:
        """w_avg[c] moves toward the batch's mean w of class c, for each class in the batch (StyleGAN2's beta 0.995)."""
        one_hot = F.one_hot(y, self.num_classes).float()  # a matmul, not index_add: deterministic on every device
        counts = one_hot.sum(dim=0)
        means = (one_hot.t() @ w.float()) / counts.clamp(min=1)[:, None]
        present = (counts > 0)[:, None]
        self.w_avg.copy_(torch.where(present, means.lerp(self.w_avg, W_AVG_BETA), self.w_avg))

    def _mix(self, ws: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Style mixing regularisation: with probability p, layers from a random crossover on take a second z's w."""
        cutoff = int(torch.randint(1, self.num_ws, ()))
        if float(torch.rand(())) >= self.style_mixing:
            return ws
        second = self.mapping(torch.randn_like(z), y)
        return torch.cat([ws[:, :cutoff], second[:, None].expand(-1, self.num_ws - cutoff, -1)], dim=1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        image, _ = self._skip_images(ws, len(self.to_rgbs) - 1)
        return torch.tanh(image)

    def _skip_images(self, ws: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The skip architecture's image up to level `top` (0: the base) and the one a level below (None at the base)."""
        noise_mode = self.noise_mode or ("random" if self.training else "const")
        x = self.const[None].expand(len(ws), -1, -1, -1).to(ws.dtype).contiguous(memory_format=torch.channels_last)
        x = self.convs[0](x, ws[:, 0], noise_mode)
        image, lower = self.to_rgbs[0](x, ws[:, 1]), None
        for level in range(1, top + 1):
            i = 2 * level - 1
            x = self.convs[i + 1](self.convs[i](x, ws[:, i], noise_mode), ws[:, i + 1], noise_mode)
            lower, image = image, F.interpolate(image, scale_factor=2.0, mode="bilinear", align_corners=False) + self.to_rgbs[level](x, ws[:, i + 2])
        return image, lower


class GrowingStyleGANGenerator(StyleGANGenerator, GrowingNetwork):
    """The same G grown progressively, as StyleGAN (v1) trained it: for method progan, with ProGAN's growing D.

    At stage s only the layers up to resolution base x 2^s run. While stage s fades in, its image is
        lerp(nearest-upsample(image_{s-1}), image_s, alpha),   image_s = bilinear-upsample(image_{s-1}) + toRGB_s(x_s)
    (the skip sum), so alpha = 0 is exactly the smaller G's image, upsampled the way ProGAN fades the real images
    D sees, and alpha = 1 exactly the skip G. Outputs are always full size (nearest-upsampled after tanh), as
    models/progan.py's; at the last stage with alpha 1 this is StyleGANGenerator, weights and outputs alike
    (plus the two growth buffers).
    """

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__(cfg, image_size, channels, num_classes)
        self.growth = Growth(resolution_plan(image_size)[1])

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        stage = self.growth.current
        image, lower = self._skip_images(ws, stage)
        if self.growth.fading:
            image = self.growth.blend(nearest_upsample(lower), image)
        return nearest_upsample(torch.tanh(image), self.growth.levels - stage)


register_backbone("stylegan", StyleGANGenerator, ResNetTrunk)
register_backbone("stylegan-growing", GrowingStyleGANGenerator, ProGANTrunk, grows=True)
