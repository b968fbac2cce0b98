"""ProGAN's networks (Karras et al. 2018): G and D that grow one resolution at a time.

Every layer of every resolution is built up front; `set_growth(stage, alpha)`
chooses the route through them. Stage 0 is the lowest resolution (the base,
4..8 px: 7 for 28 px data), stage `levels` the image size. While a new stage
fades in (alpha < 1) G's image is
    lerp(upsample(to_rgb[s-1](h_{s-1})), to_rgb[s](block_s(h_{s-1})), alpha)
and D's first features are
    lerp(from_rgb[s-1](avgpool(x_s)), block_s(from_rgb[s](x_s)), alpha),
so at alpha = 0 the grown network computes exactly what the smaller one did
and at alpha = 1 exactly the new stage. Because the parameters never change,
neither do the checkpoint keys or the optimisers' parameter lists: a layer's
Adam moments appear at its first gradient (with its own step count, so its bias
correction starts afresh), while the layers already trained keep theirs.

G always returns images of the full size (nearest-neighbour upsampling of the
current stage), and D always takes full-size images and average-pools them to
its stage: samples, grids, evaluation and `synthgen sample` see data.image_size
at any stage, and avgpool(nearest-upsample(x)) = x exactly, so D judges G's
stage image itself. The stage and alpha are buffers, so the weights a
checkpoint holds also say which route they were trained on.

The paper's other pieces: equalised learning rate (weights drawn N(0, 1) and
scaled at run time by the He constant), pixelwise feature normalisation after
every convolution of G, and the minibatch standard deviation (layers.py) before
D's last convolution. Class conditioning as in the other backbones: G's class
embedding joins z (each normalised to unit second moment first, as
stylegan2-ada does, so neither drowns the other), D's class enters through the
conditioning head (projection). G ends in tanh, the project's convention for
images in [-1, 1] (the paper's output is linear).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import SynthgenError
from synthgen.models.layers import MinibatchStd, resolution_plan, widths
from synthgen.models.registry import register_backbone

LEAK = 0.2
HE_GAIN = math.sqrt(2.0)  # for layers followed by a leaky ReLU


class EqualConv2d(nn.Module):
    """Equalised learning rate: w ~ N(0, 1) stored, w * gain / sqrt(fan_in) used; Adam then moves every layer alike."""

    def __init__(self, a: int, b: int, kernel: int, gain: float = HE_GAIN, padding: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(b, a, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(b))
        self.scale = gain / math.sqrt(a * kernel * kernel)
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, a: int, b: int, gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(b, a))
        self.bias = nn.Parameter(torch.zeros(b))
        self.scale = gain / math.sqrt(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean over channels of x^2 + eps), per pixel (ProGAN's eq. 4.2)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


def upsample(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0**times, mode="nearest") if times else x


def downsample(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    # Halved one octave at a time: D's stage s-1 input is then bit for bit avgpool(stage s input).
    for _ in range(times):
        x = F.avg_pool2d(x, 2)
    return x


class Growth(nn.Module):
    """The route through a growing network: stage (int) and alpha (float), as buffers that checkpoints keep.

    Python copies of the stage and of `alpha < 1` decide the route without reading a
    device tensor (no synchronisation per forward); alpha itself enters as a tensor.
    """

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels
        self.register_buffer("stage", torch.tensor(levels, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.current, self.fading = levels, False

    def set(self, stage: int, alpha: float) -> None:
        if not 0 <= stage <= self.levels or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"growth: stage {stage} of 0..{self.levels}, alpha {alpha} of 0..1")
        self.stage.fill_(stage)
        self.alpha.fill_(alpha)
        self.current, self.fading = stage, stage > 0 and alpha < 1.0

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.set(int(self.stage), float(self.alpha))  # restored weights come with their route

    def blend(self, lower: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.lerp(lower, new, self.alpha.to(new.dtype))  # exact at alpha 0 and 1


class GrowingNetwork(nn.Module):
    """What the progan method drives: `growth.levels` stages above the base, `set_growth` to move."""

    growth: Growth

    def set_growth(self, stage: int, alpha: float) -> None:
        self.growth.set(stage, alpha)


class ProGANGenerator(GrowingNetwork):
    MODEL_KEYS = frozenset({"g_spectral_norm"})

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int):
        super().__init__()
        refuse_spectral_norm(cfg.g_spectral_norm, "model.g_spectral_norm")
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.base, levels = resolution_plan(image_size)
        self.growth = Growth(levels)
        width = widths(cfg.g_channels, levels, cfg.max_channels)[::-1]  # width[k]: stage k, lowest first
        self.embed = nn.Embedding(num_classes, cfg.z_dim) if num_classes > 1 else None  # N(0, 1) rows
        in_dim = cfg.z_dim * (2 if self.embed is not None else 1)
        self.project = EqualLinear(in_dim, width[0] * self.base**2)
        self.first = EqualConv2d(width[0], width[0], 3)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualConv2d(a, b, 3), EqualConv2d(b, b, 3)]) for a, b in zip(width, width[1:])
        )
        self.to_rgb = nn.ModuleList(EqualConv2d(w, channels, 1, gain=1.0) for w in width)

    def _latent(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            return pixel_norm(z)
        return torch.cat([pixel_norm(z), pixel_norm(self.embed(y))], dim=1)

    def _block(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Stage k's features from stage k-1's: upsample, two 3x3 convolutions, each with leaky ReLU and pixel norm."""
        first, second = self.blocks[k - 1]
        h = pixel_norm(act(first(upsample(h))))
        return pixel_norm(act(second(h)))

    def stage_image(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The image at the current stage's own resolution (before tanh and the upsampling to full size)."""
        stage = self.growth.current
        h = self.project(self._latent(z, y)).view(len(z), -1, self.base, self.base)
        h = pixel_norm(act(self.first(pixel_norm(act(h)))))
        for k in range(1, stage):
            h = self._block(k, h)
        if stage == 0:
            return self.to_rgb[0](h)
        new = self.to_rgb[stage](self._block(stage, h))
        if not self.growth.fading:
            return new
        return self.growth.blend(upsample(self.to_rgb[stage - 1](h)), new)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        image = torch.tanh(self.stage_image(z, y))
        return upsample(image, self.growth.levels - self.growth.current)


class ProGANTrunk(GrowingNetwork):
    MODEL_KEYS = frozenset({"minibatch_std"})

    def __init__(self, cfg, image_size: int, in_channels: int):
        super().__init__()
        refuse_spectral_norm(cfg.spectral_norm, "model.spectral_norm")
        self.base, levels = resolution_plan(image_size)
        self.growth = Growth(levels)
        width = widths(cfg.d_channels, levels, cfg.max_channels)[::-1]  # width[k]: stage k, lowest first
        self.from_rgb = nn.ModuleList(EqualConv2d(in_channels, w, 1) for w in width)
        # blocks[k - 1] takes stage k's features down to stage k-1's.
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualConv2d(b, b, 3), EqualConv2d(b, a, 3)]) for a, b in zip(width, width[1:])
        )
        self.minibatch_std = MinibatchStd() if cfg.minibatch_std else None
        self.last = EqualConv2d(width[0] + (1 if cfg.minibatch_std else 0), width[0], 3)
        self.dense = EqualLinear(width[0] * self.base**2, width[0])
        self.features = width[0]

    def _block(self, k: int, h: torch.Tensor) -> torch.Tensor:
        first, second = self.blocks[k - 1]
        return downsample(act(second(act(first(h)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stage = self.growth.current
        x = downsample(x, self.growth.levels - stage)
        h = act(self.from_rgb[stage](x))
        if stage > 0:
            h = self._block(stage, h)
            if self.growth.fading:
                h = self.growth.blend(act(self.from_rgb[stage - 1](downsample(x))), h)
        for k in range(stage - 1, 0, -1):
            h = self._block(k, h)
        if self.minibatch_std is not None:
            h = self.minibatch_std(h)
        h = act(self.last(h))
        return act(self.dense(h.flatten(1)))


def refuse_spectral_norm(enabled: bool, key: str) -> None:
    if enabled:
        raise SynthgenError(f"{key}: the progan backbone scales its weights by the equalised learning rate instead of spectral norm; set {key}: false")


def growing_parts(module: nn.Module) -> list[GrowingNetwork]:
    """The growing networks in a module (G itself; D's trunk inside the conditioning wrapper)."""
    return [m for m in module.modules() if isinstance(m, GrowingNetwork)]


register_backbone("progan", ProGANGenerator, ProGANTrunk, grows=True)
