"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the kernel (xᵀy/d + 1)³.

Unlike FID it is unbiased, so it is meaningful for the 100-500 images of one generated batch:
the mean over random subsets of m = min(N, M, subset_size) points per side, and their std.
"""

from __future__ import annotations

import numpy as np
import torch

# Precompute one kernel matrix over both sets (then every subset is a lookup) up to this many points:
# 4096² float64 is 128 MiB. Larger sets compute the kernel per subset instead.
WHOLE_KERNEL_MAX_POINTS = 4096


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (xᵀy / d + 1)³ for every pair of rows, float64 [len(x), len(y)]."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    """Unbiased MMD²: within-set sums leave out the diagonal (i = j), the cross term keeps every pair."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.sum() / (m * n))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² between samples x [m, d] and y [n, d] (m and n may differ, both >= 2)."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 samples per side, got {len(x)} and {len(y)}")
    return _mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def kid(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets of m = min(N, M, subset_size) rows per side.

    Each subset is drawn without replacement (a seeded torch.Generator, so repeatable).
    """
    n_real, n_fake = len(real), len(fake)
    m = min(n_real, n_fake, subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per side, got {n_real} real and {n_fake} fake")
    generator = torch.Generator().manual_seed(seed)
    draws = [(torch.randperm(n_real, generator=generator)[:m], torch.randperm(n_fake, generator=generator)[:m]) for _ in range(subsets)]
    if n_real + n_fake <= WHOLE_KERNEL_MAX_POINTS:
        values = _subset_mmds_from_whole_kernel(real, fake, draws)
    else:
        values = [mmd2_unbiased(real[r.to(real.device)], fake[f.to(fake.device)]) for r, f in draws]
    return float(np.mean(values)), float(np.std(values))


def _subset_mmds_from_whole_kernel(real: torch.Tensor, fake: torch.Tensor, draws) -> list[float]:
    both = torch.cat([real.to(torch.float64), fake.to(real.device, torch.float64)])
    kernel = polynomial_kernel(both, both)
    values = []
    for r, f in draws:
        r, f = r.to(kernel.device), (f + len(real)).to(kernel.device)
        values.append(_mmd2_from_kernels(kernel[r][:, r], kernel[f][:, f], kernel[r][:, f]))
    return values
