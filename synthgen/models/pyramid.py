"""Multi-resolution G and D for the stage families: LAPGAN's Laplacian pyramid and StackGAN's two stages.

Both are several small generators, one per resolution, each with its own D:
- LAPGAN (Denton et al. 2015): level 0 draws the coarsest image from (z, class);
  level k gets the upsampled level k-1 image (with the class and its own z) and
  draws the high-pass band to add to it.
- StackGAN (Zhang et al. 2017): Stage-I draws a low-resolution image from
  (z, c); Stage-II redraws it at 2x or 4x from the upsampled Stage-I image and
  its own c; c ~ N(mu(class), sigma(class)) is the conditioning augmentation.

Each G is one module whose forward(latent, y) is the sampling chain, so the
loop, EMA, checkpoints and `synthgen sample` see a single G; the training
passes (`levels`, `stages`) return every resolution for the per-resolution Ds.
The per-resolution Ds are one module whose forward judges every resolution in
one call, so every parameter takes part in each D update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.conditioning import Discriminator
from synthgen.models.layers import spectral


# --- the Laplacian pyramid ---------------------------------------------------------------


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Half the size: the mean of each 2x2 block (the pyramid's low-pass and decimation)."""
    return F.avg_pool2d(x, 2)


def upsample(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Back up to `size` (default twice the size): bilinear, so a coarse image is smooth, not blocky."""
    return F.interpolate(x, size=size or 2 * x.shape[-1], mode="bilinear", align_corners=False)


def laplacian_pyramid(image: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The coarsest image and the high-pass bands h_k = I_k - u(d(I_k)), coarsest band first."""
    bands = []
    for _ in range(levels - 1):
        coarse = downsample(image)
        bands.append(image - upsample(coarse))
        image = coarse
    return image, bands[::-1]


def reconstruct(coarsest: torch.Tensor, bands: list[torch.Tensor]) -> torch.Tensor:
    """The inverse of laplacian_pyramid: I_k = u(I_{k-1}) + h_k, up to the full size."""
    image = coarsest
    for band in bands:
        image = upsample(image) + band
    return image


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Sizes of a pyramid's levels, coarsest first (28, 3 -> [7, 14, 28]); ValueError when it cannot halve that often."""
    sizes = [image_size >> k for k in range(levels)][::-1]
    if image_size % 2 ** (levels - 1) or sizes[0] < 4:
        raise ValueError(
            f"options.levels: {levels} levels halve {image_size} px {levels - 1} times, which needs a multiple of "
            f"{2 ** (levels - 1)} with at least 4 px left (e.g. 28 px: 3 levels, 32 or 64 px: 3 or 4)"
        )
    return sizes


# --- generator pieces ----------------------------------------------------------------------


def conv3(a: int, b: int) -> nn.Conv2d:
    return nn.Conv2d(a, b, 3, 1, 1)


def planes(vector: torch.Tensor, size: int) -> torch.Tensor:
    """A vector per image [B, D] as D constant planes [B, D, size, size]."""
    return vector[:, :, None, None].expand(-1, -1, size, size)


class CoarseNet(nn.Module):
    """A vector (z joined with the class or its c) -> an image in [-1, 1] at `size` px: project, then two convs."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int):
        super().__init__()
        self.size, self.width = size, width
        self.project = nn.Linear(in_dim, width * size * size)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), conv3(width, width), nn.BatchNorm2d(width), nn.ReLU(), conv3(width, channels), nn.Tanh()
        )

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(vector).view(len(vector), self.width, self.size, self.size))


class RefineNet(nn.Module):
    """(coarse image upsampled, a condition vector, z) -> an image at the coarse image's size.

    The condition (one-hot class or c) joins as constant planes and z as one
    learned plane (Denton et al. feed the noise as an extra channel). `tanh`:
    a whole image (StackGAN's Stage-II); without, a band to add (LAPGAN).
    """

    def __init__(self, channels: int, cond_dim: int, z_dim: int, size: int, width: int, tanh: bool):
        super().__init__()
        self.size = size
        self.noise = nn.Linear(z_dim, size * size)
        self.body = nn.Sequential(
            conv3(channels + cond_dim + 1, width), nn.BatchNorm2d(width), nn.ReLU(),
            conv3(width, width), nn.BatchNorm2d(width), nn.ReLU(),
            conv3(width, width), nn.BatchNorm2d(width), nn.ReLU(),
            conv3(width, channels), nn.Tanh() if tanh else nn.Identity(),
        )

    def forward(self, coarse: torch.Tensor, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        noise = self.noise(z).view(len(z), 1, self.size, self.size)
        return self.body(torch.cat([coarse, planes(cond.to(coarse.dtype), self.size), noise.to(coarse.dtype)], dim=1))


def one_hot(y: torch.Tensor, num_classes: int, dtype) -> torch.Tensor:
    return F.one_hot(y, num_classes).to(dtype)


# --- LAPGAN --------------------------------------------------------------------------------


class LaplacianGenerator(nn.Module):
    """LAPGAN's generators G_0 ... G_K; the latent is one z per level, [B, levels * z_dim]."""

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int, levels: int):
        super().__init__()
        self.z_dim, self.num_classes = cfg.z_dim, num_classes
        self.sizes = level_sizes(image_size, levels)
        width = min(cfg.g_channels, cfg.max_channels)
        self.coarse = CoarseNet(cfg.z_dim + num_classes, channels, self.sizes[0], width)
        self.refine = nn.ModuleList(RefineNet(channels, num_classes, cfg.z_dim, s, width, tanh=False) for s in self.sizes[1:])

    def forward(self, latent: torch.Tensor, y: torch.Tensor, lows: list[torch.Tensor] | None = None):
        """Sampling: G_0's image, then each level adds its band to the upsampled image below it.

        With `lows` (training): every level's image, level k >= 1 refining the given (real)
        upsampled coarse image lows[k-1] instead of the level below's output.
        """
        if lows is not None:
            return self.levels(latent, y, lows)
        zs, label = latent.split(self.z_dim, dim=1), one_hot(y, self.num_classes, latent.dtype)
        image = self.coarse(torch.cat([zs[0], label], dim=1))
        for refine, z in zip(self.refine, zs[1:]):
            low = upsample(image)
            image = low + refine(low, label, z)
        return image

    def levels(self, latent: torch.Tensor, y: torch.Tensor, lows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every level's image, level k >= 1 refining lows[k-1]."""
        zs, label = latent.split(self.z_dim, dim=1), one_hot(y, self.num_classes, latent.dtype)
        images = [self.coarse(torch.cat([zs[0], label], dim=1))]
        return images + [low + refine(low, label, z) for refine, z, low in zip(self.refine, zs[1:], lows)]


# --- StackGAN ------------------------------------------------------------------------------


class ConditioningAugmentation(nn.Module):
    """c = mu(e) + sigma(e) * eps, eps ~ N(0, I), with e the class's embedding (Zhang et al. 2017, sec. 3.1).

    A class here plays the text embedding's part: a learned table gives each
    class mu and log sigma^2 (for a class, a table is as expressive as an fc
    on a fixed embedding). eps comes in from the latent, so a seed fixes c.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.dim = dim
        self.table = nn.Embedding(num_classes, 2 * dim)
        nn.init.normal_(self.table.weight[:, :dim], 0.0, 1.0)
        nn.init.zeros_(self.table.weight[:, dim:])  # sigma = 1 at the start: the prior's scale

    def forward(self, y: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.table(y).chunk(2, dim=1)
        return mean + (0.5 * logvar).exp() * eps, mean, logvar


class StackedGenerator(nn.Module):
    """Stage-I at image_size / upscale from (z, c1); Stage-II at image_size from (upsampled Stage-I, c2, z).

    The latent is [z, eps1, eps2]: z_dim + 2 * ca_dim numbers.
    """

    def __init__(self, cfg, image_size: int, channels: int, num_classes: int, upscale: int, ca_dim: int):
        super().__init__()
        self.z_dim, self.ca_dim, self.size = cfg.z_dim, ca_dim, image_size
        width = min(cfg.g_channels, cfg.max_channels)
        self.augment1, self.augment2 = ConditioningAugmentation(num_classes, ca_dim), ConditioningAugmentation(num_classes, ca_dim)
        self.stage1 = CoarseNet(cfg.z_dim + ca_dim, channels, image_size // upscale, width)
        self.stage2 = RefineNet(channels, ca_dim, cfg.z_dim, image_size, width, tanh=True)

    def forward(self, latent: torch.Tensor, y: torch.Tensor, stages: bool = False):
        """Sampling: the Stage-II image; with `stages` (training) what `stages` returns."""
        images, moments = self.stages(latent, y)
        return (images, moments) if stages else images[-1]

    def stages(self, latent: torch.Tensor, y: torch.Tensor):
        """([Stage-I image, Stage-II image], [(mu1, logvar1), (mu2, logvar2)])."""
        z, eps1, eps2 = latent.split([self.z_dim, self.ca_dim, self.ca_dim], dim=1)
        c1, mean1, logvar1 = self.augment1(y, eps1)
        low = self.stage1(torch.cat([z, c1.to(z.dtype)], dim=1))
        c2, mean2, logvar2 = self.augment2(y, eps2)
        # Stage-II refines Stage-I's image but does not train it (the paper freezes Stage-I while
        # training Stage-II): Stage-I learns from its own D alone.
        high = self.stage2(upsample(low.detach(), self.size), c2, z)
        return [low, high], [(mean1, logvar1), (mean2, logvar2)]


# --- one D per resolution ------------------------------------------------------------------


class SmallTrunk(nn.Module):
    """A conv trunk for any size from 4 px: stride-2 3x3 convs down to 4x4 (7 -> 4, 14 -> 7 -> 4, 28 -> 14 -> 7 -> 4)."""

    def __init__(self, cfg, image_size: int, in_channels: int):
        super().__init__()
        sn, width = cfg.spectral_norm, min(cfg.d_channels, cfg.max_channels)
        layers, size = [spectral(nn.Conv2d(in_channels, width, 3, 1, 1), sn), nn.LeakyReLU(0.2)], image_size
        while size > 4:
            wider = min(2 * width, cfg.max_channels)
            layers += [spectral(nn.Conv2d(width, wider, 3, 2, 1), sn), nn.LeakyReLU(0.2)]
            width, size = wider, (size + 1) // 2
        self.layers = nn.Sequential(*layers, nn.Flatten())
        self.features = width * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ScaleDiscriminators(nn.Module):
    """One class-conditional D per resolution (the recipe's conditioning.type), judged in one call.

    `given[k]`: how many channels of a conditioning image D_k also sees (LAPGAN's
    upsampled coarse image, joined to the image it judges); 0 for none.
    """

    def __init__(self, cfg, sizes: list[int], channels: int, num_classes: int, conditioning: str, given: list[int]):
        super().__init__()
        self.scales = nn.ModuleList(
            Discriminator(SmallTrunk, cfg, size, channels + extra, num_classes, conditioning) for size, extra in zip(sizes, given)
        )

    def forward(self, images: list[torch.Tensor], given: list[torch.Tensor | None], y: torch.Tensor) -> list[tuple]:
        """Per resolution: (logits [B], class logits [B, 1, K] or None)."""
        joined = [x if g is None else torch.cat([x, g.to(x.dtype)], dim=1) for x, g in zip(images, given)]
        return [d(x, y) for d, x in zip(self.scales, joined)]
