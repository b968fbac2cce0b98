"""Backbones by name: each family file registers a generator and a discriminator trunk.

A generator maps (z [B, z_dim], y [B]) to images in [-1, 1]. A trunk maps
images [B, C, H, W] to a feature vector [B, trunk.features]; the
conditioning head (conditioning.py) turns those features into D's outputs.
A generator or trunk class lists in MODEL_KEYS the model keys it reads that
not every backbone reads (g_upsample, group_width, ...): a recipe that sets
one for a backbone that would ignore it is refused (recipe.py).
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
    grows: bool = False  # G and trunk have set_growth(stage, alpha): method progan can grow them (models/progan.py)

    @property
    def reads(self) -> frozenset[str]:
        """The model keys, read by some backbones only, that this one's G or trunk reads (their MODEL_KEYS)."""
        return getattr(self.generator, "MODEL_KEYS", frozenset()) | getattr(self.trunk, "MODEL_KEYS", frozenset())


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, generator, trunk, grows: bool = False) -> None:
    BACKBONES[name] = Backbone(generator, trunk, grows)


def known_backbones() -> list[str]:
    """Every registered backbone's name, sorted (what model.backbone accepts)."""
    _load_families()
    return sorted(BACKBONES)


def get_backbone(name: str) -> Backbone:
    _load_families()
    if name not in BACKBONES:
        raise SynthgenError(f"model.backbone: unknown backbone '{name}' (known: {', '.join(sorted(BACKBONES))})")
    return BACKBONES[name]


def keys_other_backbones_read(model_cfg) -> list[str]:
    """Model keys set away from their default that only other backbones read: they would be ignored without a word."""
    _load_families()
    specific = frozenset().union(*(backbone.reads for backbone in BACKBONES.values()))
    return sorted(key for key in specific - get_backbone(model_cfg.backbone).reads if model_cfg.is_set(key))


def backbones_reading(key: str) -> list[str]:
    return sorted(name for name, backbone in BACKBONES.items() if key in backbone.reads)


def _load_families() -> None:
    # Importing a family file registers it; new families add one line here.
    from synthgen.models import dcgan, progan, r3, resnet, stylegan  # noqa: F401


# --- image-to-image generators (pix2pix, cyclegan) ------------------------------
# A translator maps images [B, in, H, W] in [-1, 1] to [B, out, H, W] in [-1, 1]
# for any H, W that are multiples of its `stride` attribute.

TRANSLATORS: dict[str, Callable[..., nn.Module]] = {}  # (model_cfg, image_size, in_channels, out_channels) -> G
TRANSLATOR_READS: dict[str, frozenset[str]] = {}  # the model keys a translator reads beyond TRANSLATION_KEYS
WIDTH_KEYS = frozenset({"g_channels", "d_channels", "max_channels"})
# The model keys every translation method (pix2pix, cyclegan, stargan) reads: its translator's and D's.
TRANSLATION_KEYS = WIDTH_KEYS | {"translator", "norm", "d_layers"}


def register_translator(name: str, builder, reads: frozenset[str] = frozenset()) -> None:
    TRANSLATORS[name], TRANSLATOR_READS[name] = builder, reads


def _load_translators() -> None:
    from synthgen.models import resnet_translator, unet  # noqa: F401 - importing registers them


def keys_translation_ignores(model_cfg) -> list[str]:
    """Model keys set away from their default that a translation method's networks (its translator, the
    PatchGAN-style D) never read: they would be ignored without a word."""
    _load_translators()
    reads = TRANSLATION_KEYS | TRANSLATOR_READS.get(model_cfg.translator, frozenset())
    return sorted(key for key in type(model_cfg).model_fields.keys() - reads if model_cfg.is_set(key))


def keys_only_translation_reads(model_cfg) -> list[str]:
    """Model keys set away from their default that only the translation methods read (a backbone would ignore them)."""
    _load_families()
    _load_translators()
    translation = TRANSLATION_KEYS.union(*TRANSLATOR_READS.values())
    return sorted(key for key in translation - frozenset().union(*(b.reads for b in BACKBONES.values())) - WIDTH_KEYS if model_cfg.is_set(key))


def build_translator(model_cfg, image_size: int, in_channels: int, out_channels: int) -> nn.Module:
    _load_translators()
    if model_cfg.translator not in TRANSLATORS:
        raise SynthgenError(f"model.translator: unknown translator '{model_cfg.translator}' (known: {', '.join(sorted(TRANSLATORS))})")
    return TRANSLATORS[model_cfg.translator](model_cfg, image_size, in_channels, out_channels)
