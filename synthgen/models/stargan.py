"""StarGAN's networks (Choi et al. 2018): one translator G(x, c) for every domain, one D with two heads.

G: the target domain's one-hot code, spread into K constant planes, is joined
to the image's channels, and the ResNet translator (down, residual blocks,
up; resnet_translator.py, the paper's layout at smaller widths) maps the
C + K channels back to C. Fully convolutional, so `translate` runs it at any
size that is a multiple of its stride.

Normalisation in G is batch norm, not the paper's instance norm: a constant
plane stays constant through reflection padding and a convolution, so its
whole contribution is a per-channel constant, and instance norm subtracts
exactly that: G would never see the target (measured: the domain loss of its
outputs rose while the critic's fell). Batch norm keeps what differs between
the images of a batch, and at translate time (running statistics) all of it.

D: stride-2 4x4 convolutions with leaky ReLU and no normalisation (WGAN-GP's
penalty is per sample, which batch norm would break), then two heads on the
same features: D_src, a 3x3 convolution giving one critic value per patch,
and D_cls, K domain logits (multi-label: one logit per attribute). Two kinds
of D_cls (`options.domain_head`):
- pooled (the default): a 1x1 convolution averaged over positions. It reads
  which local features are present, not where: a texture spread over the
  image can pass for a class's parts.
- whole: the paper's, a convolution whose kernel covers the whole last feature
  map at the training size (the paper's is fixed to its 128 px), so it reads
  the layout. At another size (a multi-label run reading the attributes of the
  images `translate` gets) the map is first pooled to the training size's.

With `options.attention` (GANimation, Pumarola et al. 2018, built on StarGAN)
G gives one more channel, a keep-mask A in [0, 1], and its image is
A * x + (1 - A) * C: where A is 1 the input passes through untouched, so a
translation changes only what the target needs and the rest (a black
background, a pose) is the input's own, not G's re-drawing of it.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.resnet_translator import ResnetTranslator


def domain_planes(x: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """x [B, C, H, W] and target classes [B] -> [B, C + K, H, W]: one constant plane per domain, 1 on the target's.

    A float target [B, K] is a vector of binary attributes (the multi-label setting): plane k holds attribute k.
    """
    code = target if target.is_floating_point() else torch.nn.functional.one_hot(target, num_classes)
    return torch.cat([x, code.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)


class StarGenerator(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int, n_blocks: int, norm: str, max_width: int, attention: bool = False,
                 upsample: str = "transposed"):
        super().__init__()
        self.num_classes, self.attention = num_classes, attention
        out_channels = channels + 1 if attention else channels  # + the keep-mask
        self.translator = ResnetTranslator(channels + num_classes, out_channels, width, n_blocks, norm, max_width, upsample)
        self.stride = self.translator.stride

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.edit(x, target)[0]

    def edit(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the translation, the keep-mask A [B, 1, H, W] or None without options.attention)."""
        out = self.translator(domain_planes(x, target, self.num_classes))
        if not self.attention:
            return out, None
        keep = (out[:, :1] + 1) / 2  # the translator ends in tanh: (tanh + 1) / 2 = sigmoid(2u)
        return keep * x + (1 - keep) * out[:, 1:], keep


class StarDiscriminator(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int, n_layers: int, max_width: int, whole_map: int | None = None):
        """whole_map: the training size in pixels for the paper's whole-map domain head; None: the pooled one."""
        super().__init__()
        layers, cin = [], channels
        for i in range(n_layers):
            cout = min(width * 2**i, max_width)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.01)]  # 0.01: the paper's slope
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.src = nn.Conv2d(cin, 1, 3, 1, 1, bias=False)
        self.map_size = None if whole_map is None else max(1, whole_map >> n_layers)  # each 4x4/2 pad-1 layer floors the size by 2
        self.cls = nn.Conv2d(cin, num_classes, self.map_size or 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, H, W] -> (critic values per patch [B, 1, h, w], domain logits [B, K])."""
        h = self.trunk(x)
        if self.map_size is None:
            return self.src(h), self.cls(h).mean(dim=(2, 3))
        # At the training size the pooling is the identity; at another it brings the layout to the map the kernel covers.
        return self.src(h), self.cls(nn.functional.adaptive_avg_pool2d(h, self.map_size)).flatten(1)


def build_stargan(recipe, channels: int, num_classes: int) -> tuple[StarGenerator, StarDiscriminator]:
    """G and D from the recipe's model section (g_channels, n_blocks, norm; d_channels, d_layers, max_channels)
    and options.attention and domain_head."""
    from synthgen.recipe import method_options

    cfg, options = recipe.model, method_options(recipe)
    generator = StarGenerator(channels, num_classes, cfg.g_channels, cfg.n_blocks, cfg.norm, cfg.max_channels, options.attention, cfg.g_upsample)
    whole_map = recipe.data.image_size if options.domain_head == "whole" else None
    return generator, StarDiscriminator(channels, num_classes, cfg.d_channels, cfg.d_layers, cfg.max_channels, whole_map)
