"""Devices and numeric precision: the same training code on CPU and CUDA.

`train.precision: auto` is bf16 AMP on CUDA GPUs that support it and fp16
AMP with a grad scaler on older GPUs. On a CPU it depends on the CPU, so it is
decided at run time (speed.py):
- without native bf16 (no AVX512-BF16, no AMX; e.g. AMD EPYC Zen 3, AVX2)
  it is fp32, unmeasured: oneDNN has no bf16 kernels there, autocast falls
  back to PyTorch's reference convolutions (slow_conv_transpose2d,
  _slow_conv2d) and a training step is about 30x slower than fp32 (0.8 vs
  25 img/s); a 1024^2 bf16 matmul runs at ~1 GFLOP/s against ~50-160 in fp32;
- with native bf16 the faster of fp32 and bf16 for the run's own recipe and
  shape, measured before training and cached: bf16 was 1.6-1.8x fp32 for
  acgan at 28 px on an AMD EPYC with AVX512-BF16 (issue 12), and see README
  (Benchmarks) for the Xeon with AMX.
`train.precision: bf16` still selects it anywhere (with a warning where the
CPU has no native bf16). Activations are channels_last: +15-20% on the Xeon
in fp32, and the layout tensor cores want.
"""

from __future__ import annotations

import contextlib
import warnings
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


def cpu_has_native_bf16() -> bool:
    """oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX); without them bf16 convs are emulated."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if requested == "auto":
        if device.type == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "fp32"
    if requested == "fp16" and device.type == "cpu":
        raise SynthgenError("train.precision: fp16 needs a CUDA GPU; on CPU use auto, bf16 or fp32")
    if requested == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("train.precision: bf16 on a CPU without native bf16 runs emulated convolutions, many times slower than fp32 (use auto)", stacklevel=2)
    return Precision(requested, device)
