"""Work that must not move a training run's random streams (probes, evaluation, helper networks)."""

from __future__ import annotations

import torch


def rng_untouched(device="cpu"):
    """A context in which random draws happen on forked copies of the global CPU generator (and of `device`'s
    on CUDA): afterwards training draws exactly what it would have drawn without the work done inside."""
    device = torch.device(device)
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
