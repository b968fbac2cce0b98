"""Devices and numeric precision: the same training code on CPU and CUDA.

`auto` picks fp32 on CPUs, bf16 AMP on CUDA GPUs that support it and fp16
AMP with a grad scaler on older GPUs. On the CPU, bf16 autocast was measured
slower than fp32 for the bundled models (make bench, 2-core Xeon with AMX:
acgan 0.94x, cgan-projection 0.7x): at these sizes the casts cost more than
the bf16 matmuls save. `train.precision: bf16` still selects it.
Activations are channels_last everywhere: measured +15-20% on CPU fp32, and
the layout tensor cores want.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from synthgen.errors import SynthgenError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device: torch.device

    @property
    def dtype(self):
        return DTYPES[self.name]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range.
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SynthgenError("train.device: cuda was requested but no CUDA GPU is available (use auto or cpu)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if requested == "auto":
        if device.type == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "fp32"
    if requested == "fp16" and device.type == "cpu":
        raise SynthgenError("train.precision: fp16 needs a CUDA GPU; on CPU use auto, bf16 or fp32")
    return Precision(requested, device)
