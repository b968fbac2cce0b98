"""SSIM and MS-SSIM (Wang et al. 2003/2004) on uint8-range images, and the AC-GAN diversity score.

Conventions (those of scikit-image and pytorch_msssim): Gaussian window of 11 taps, sigma 1.5;
K1 = 0.01, K2 = 0.03; data range 255; population (not sample) covariances; 'valid' filtering, so
the SSIM map leaves out 5 pixels at each border, which is what scikit-image's
structural_similarity(gaussian_weights=True) averages over (it filters with reflection, then crops
those 5 pixels). A multi-channel image scores the mean over its channels. Computed in float64.

MS-SSIM halves the image between scales (2x2 average pooling, zero-padded when a side is odd, as
pytorch_msssim does), multiplies the contrast-structure terms of the finer scales and the SSIM of
the coarsest, each raised to its scale weight, with negative terms clamped to 0 (relu) for
stability. Wang's five scales (weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333) need images of
161 px or more. Reduced-scale rule for smaller images (scales=None): use as many scales as keep
the coarsest side at least the window's 11 px (11-20 px: 1 scale, plain SSIM; 21-40 px, e.g.
28 px Fashion-MNIST: 2; 41-80 px: 3; 81-160 px: 4; 161 px and more: 5), with the first weights of
Wang's list renormalised to sum to 1 (2 scales: 0.136, 0.864). Scores at different scale counts are
not comparable: compare images of one size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synthgen.errors import SynthgenError

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
WANG_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(taps: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(taps, dtype=torch.float64, device=device) - taps // 2
    window = torch.exp(-(coords**2) / (2 * WINDOW_SIGMA**2))
    return window / window.sum()


def _band(size: int, taps: int, device: torch.device) -> torch.Tensor:
    """[size - taps + 1, size]: row i holds the window at columns i..i+taps-1, so `band @ x` is the 'valid' filter along x's rows."""
    window, out = _gaussian_window(taps, device), size - taps + 1
    band = torch.zeros(out, size, dtype=torch.float64, device=device)
    rows = torch.arange(out, device=device)
    for tap in range(taps):
        band[rows, rows + tap] = window[tap]
    return band


def _blur(x: torch.Tensor, taps: int) -> torch.Tensor:
    """Separable Gaussian filter of every channel, 'valid' (no padding): each side shrinks by taps - 1.

    Two banded matrix products instead of two grouped convolutions: the same sums (exact zeros
    added), but float64 matmul is BLAS while a float64 depthwise conv is a slow fallback (5-10x).
    """
    height, width = x.shape[-2:]
    return _band(height, taps, x.device) @ x @ _band(width, taps, x.device).T


def _ssim_and_cs(a: torch.Tensor, b: torch.Tensor, taps: int = WINDOW_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel [N, C]: mean SSIM and mean contrast-structure term."""
    c = a.shape[1]
    moments = _blur(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)
    mu_a, mu_b, aa, bb, ab = moments.split(c, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    cs_map = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _as_float64(a: torch.Tensor, b: torch.Tensor, taps: int = WINDOW_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"SSIM needs two image batches [N, C, H, W] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < taps:
        raise SynthgenError(f"SSIM needs images of at least {taps}x{taps} px, got {a.shape[-2]}x{a.shape[-1]}")
    return a.to(torch.float64), b.to(a.device, torch.float64)


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = WINDOW_SIZE) -> torch.Tensor:
    """SSIM of each pair of images [N, C, H, W] (uint8, or float in [0, 255]): float64 [N].

    window_size (odd) below 11 only for images too small for Wang's window, as scikit-image's win_size.
    """
    a, b = _as_float64(a, b, window_size)
    return _ssim_and_cs(a, b, window_size)[0].mean(1)


def max_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales keep the coarsest side >= the window size (at most 5)."""
    side, scales = min(height, width), 0
    while side >= WINDOW_SIZE and scales < len(WANG_WEIGHTS):
        scales += 1
        side = (side + 1) // 2  # 2x2 pooling with padding of odd sides
    return scales


def ms_ssim(a: torch.Tensor, b: torch.Tensor, scales: int | None = None) -> torch.Tensor:
    """MS-SSIM of each pair of images [N, C, H, W] (uint8 or [0, 255] float): float64 [N].

    scales=None uses as many of Wang's 5 scales as the image size allows (see the module docstring),
    with the weights of those scales renormalised to sum to 1.
    """
    a, b = _as_float64(a, b)
    available = max_scales(*a.shape[-2:])
    scales = available if scales is None else scales
    if not 1 <= scales <= available:
        raise SynthgenError(
            f"MS-SSIM with {scales} scales needs larger images than {a.shape[-2]}x{a.shape[-1]} px (at most {available} scales fit)"
        )
    weights = torch.tensor(WANG_WEIGHTS[:scales], dtype=torch.float64, device=a.device)
    weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim_value, cs = _ssim_and_cs(a, b)
        if scale < scales - 1:
            terms.append(cs.relu())
            padding = [side % 2 for side in a.shape[-2:]]
            a, b = F.avg_pool2d(a, 2, padding=padding), F.avg_pool2d(b, 2, padding=padding)
    terms.append(ssim_value.relu())
    per_channel = torch.prod(torch.stack(terms) ** weights.view(-1, 1, 1), dim=0)  # [N, C]
    return per_channel.mean(1)


def _random_distinct_pairs(n: int, pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `pairs` different unordered pairs (i < j); all of them when there are that few."""
    total = n * (n - 1) // 2
    if total <= pairs:
        both = torch.combinations(torch.arange(n), 2)
        return both[:, 0], both[:, 1]
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < pairs:
        i, j = torch.randint(n, (2,), generator=generator).tolist()
        if i != j:
            chosen[(min(i, j), max(i, j))] = None
    first, second = zip(*chosen)
    return torch.tensor(first), torch.tensor(second)


def mean_pairwise_ms_ssim(images: torch.Tensor, pairs: int = 128, seed: int = 0) -> float:
    """Mean MS-SSIM over random pairs of different images (AC-GAN diversity: higher = less diverse)."""
    if len(images) < 2:
        raise ValueError(f"pairwise MS-SSIM needs at least 2 images, got {len(images)}")
    first, second = _random_distinct_pairs(len(images), pairs, seed)
    first, second = first.to(images.device), second.to(images.device)
    return float(ms_ssim(images[first], images[second]).mean())
