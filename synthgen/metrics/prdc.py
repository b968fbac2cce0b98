"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Each point's radius is the distance to its k-th nearest neighbour in its own set (the point itself
excluded). A point is inside a ball when its distance is strictly below the radius, as in the
official `prdc` package:
  precision = share of fakes inside some real ball       (k=3)
  recall    = share of reals inside some fake ball       (k=3)
  density   = (1/kM) Σ_fakes #real balls containing it   (k=5; E = 1 for identical distributions)
  coverage  = share of real balls holding some fake      (k=5; E ≈ 1 - 2⁻ᵏ ≈ 0.97 for identical ones)
Distances are Euclidean, in float64, computed in row chunks so that 10k x 10k sets fit in memory.
"""

from __future__ import annotations

import torch

PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
CHUNK_ELEMENTS = 2**23  # one chunk of the distance matrix: 64 MiB of float64


def _rows_per_chunk(columns: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, columns))


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of a and b, float64 (‖a‖² + ‖b‖² - 2ab, clamped at 0)."""
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T
    return squared.clamp_min_(0.0).sqrt_()


def _neighbour_radii(x: torch.Tensor, ks: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Distance of every row of x to its k-th nearest other row, for each k in ks (one pass)."""
    x = x.to(torch.float64)
    largest = max(ks)
    if len(x) <= largest:
        raise ValueError(f"k={largest} nearest neighbours need more than {largest} points, got {len(x)}")
    nearest = []
    step = _rows_per_chunk(len(x))
    for start in range(0, len(x), step):
        chunk = _distances(x[start : start + step], x)
        # The k+1 smallest distances include the point itself (0), as the official prdc package counts.
        nearest.append(chunk.topk(largest + 1, dim=1, largest=False).values)
    nearest = torch.cat(nearest)
    return {k: nearest[:, k] for k in ks}


def nearest_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every row of x [N, d] to its k-th nearest neighbour, excluding itself, float64 [N]."""
    return _neighbour_radii(x, (k,))[k]


def _real_fake_scores(
    real: torch.Tensor,
    fake: torch.Tensor,
    real_radii_pr: torch.Tensor | None = None,
    fake_radii_pr: torch.Tensor | None = None,
    real_radii_dc: torch.Tensor | None = None,
) -> dict:
    """One chunked pass over the real x fake distances, accumulating whichever scores have radii."""
    real, fake = real.to(torch.float64), fake.to(real.device, torch.float64)
    fake_in_real_ball = torch.zeros(len(fake), dtype=torch.bool, device=real.device)
    real_in_fake_ball, real_ball_covered, fakes_in_real_balls = [], [], 0
    step = _rows_per_chunk(len(fake))
    for start in range(0, len(real), step):
        rows = slice(start, start + step)
        distances = _distances(real[rows], fake)  # [chunk of reals, M]
        if real_radii_pr is not None:
            fake_in_real_ball |= (distances < real_radii_pr[rows, None]).any(0)
        if fake_radii_pr is not None:
            real_in_fake_ball.append((distances < fake_radii_pr[None, :]).any(1))
        if real_radii_dc is not None:
            inside = distances < real_radii_dc[rows, None]
            fakes_in_real_balls += int(inside.sum())  # Σ_fakes Σ_reals 1[fake in real ball]
            real_ball_covered.append(inside.any(1))
    scores = {}
    if real_radii_pr is not None:
        scores["precision"] = fake_in_real_ball.double().mean()
    if fake_radii_pr is not None:
        scores["recall"] = torch.cat(real_in_fake_ball).double().mean()
    if real_radii_dc is not None:
        scores["fakes_in_real_balls"] = fakes_in_real_balls
        scores["coverage"] = torch.cat(real_ball_covered).double().mean()
    return scores


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PRECISION_RECALL_K) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake [M, d] against real [N, d]."""
    scores = _real_fake_scores(
        real, fake, real_radii_pr=nearest_neighbour_radii(real, k), fake_radii_pr=nearest_neighbour_radii(fake, k)
    )
    return {"precision": float(scores["precision"]), "recall": float(scores["recall"])}


def density_coverage(
    real: torch.Tensor, fake: torch.Tensor, k: int = DENSITY_COVERAGE_K, real_radii: torch.Tensor | None = None
) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020); pass `real_radii` (k-th neighbour radii of real) to reuse them."""
    if real_radii is None:
        real_radii = nearest_neighbour_radii(real, k)
    scores = _real_fake_scores(real, fake, real_radii_dc=real_radii.to(real.device, torch.float64))
    return _density_coverage_from(scores, k, len(fake))


def _density_coverage_from(scores: dict, k: int, n_fake: int) -> dict[str, float]:
    density = scores["fakes_in_real_balls"] / (k * n_fake)
    return {"density": density, "coverage": float(scores["coverage"])}


def real_radii(real: torch.Tensor) -> dict[int, torch.Tensor]:
    """The real set's neighbour radii that `prdc` needs (k=3 and k=5): compute once to score several fake sets against it."""
    return _neighbour_radii(real, (PRECISION_RECALL_K, DENSITY_COVERAGE_K))


def prdc(real: torch.Tensor, fake: torch.Tensor, radii: dict[int, torch.Tensor] | None = None) -> dict[str, float]:
    """Precision and recall (k=3), density and coverage (k=5), sharing one pass over the distances; `radii`: real_radii(real)."""
    k_pr, k_dc = PRECISION_RECALL_K, DENSITY_COVERAGE_K
    radii = radii if radii is not None else real_radii(real)
    scores = _real_fake_scores(
        real,
        fake,
        real_radii_pr=radii[k_pr],
        fake_radii_pr=nearest_neighbour_radii(fake, k_pr),
        real_radii_dc=radii[k_dc],
    )
    return {
        "precision": float(scores["precision"]),
        "recall": float(scores["recall"]),
        **_density_coverage_from(scores, k_dc, len(fake)),
    }
