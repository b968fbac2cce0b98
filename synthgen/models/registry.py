"""Backbones by name: each family file registers a generator and a discriminator trunk.

A generator maps (z [B, z_dim], y [B]) to images in [-1, 1]. A trunk maps
images [B, C, H, W] to a feature vector [B, trunk.features]; the
conditioning head (conditioning.py) turns those features into D's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from synthgen.errors import SynthgenError


@dataclass(frozen=True)
class Backbone:
    generator: Callable[..., nn.Module]  # (model_cfg, image_size, channels, num_classes) -> G
    trunk: Callable[..., nn.Module]  # (model_cfg, image_size, in_channels) -> D trunk


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, generator, trunk) -> None:
    BACKBONES[name] = Backbone(generator, trunk)


def get_backbone(name: str) -> Backbone:
    _load_families()
    if name not in BACKBONES:
        raise SynthgenError(f"model.backbone: unknown backbone '{name}' (known: {', '.join(sorted(BACKBONES))})")
    return BACKBONES[name]


def _load_families() -> None:
    # Importing a family file registers it; new families add one line here.
    from synthgen.models import dcgan, resnet  # noqa: F401
