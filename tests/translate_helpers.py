"""Shared pieces of the translation tests: the edges -> image pairs and tiny recipes."""

from __future__ import annotations

from pathlib import Path

from synthgen.recipe import validate
from tests.conftest import with_sections


def tiny_translation_recipe(method: str, root: Path, out_dir: Path, name: str = "tiny", **sections):
    """A small, fast pix2pix or CycleGAN recipe at 32 px; `sections` override keys per section."""
    raw = {
        "name": name,
        "seed": 0,
        "method": method,
        "data": {"root": str(root), "image_size": 32, "hflip": True},
        "model": {"g_channels": 8, "d_channels": 8, "d_layers": 2, **({"translator": "unet"} if method == "pix2pix" else {"translator": "resnet", "n_blocks": 2})},
        "loss": {"type": "lsgan"},
        "train": {"steps": 6, "batch_size": 4, "log_every": 2, "sample_every": 3, "checkpoint_every": 2, "out_dir": str(out_dir)},
    }
    return validate(with_sections(raw, sections))
