"""Cluster purity: how well an unsupervised assignment (InfoGAN's categorical code, k-means) matches the true classes.

purity = (1/N) sum over clusters k of max over classes j |cluster k ∩ class j|
(Manning et al., Introduction to Information Retrieval, 16.3): 1 when every
cluster holds one class; the share of the largest class when everything is one cluster.
"""

from __future__ import annotations

import numpy as np
import torch


def purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """assignments, labels: int [N] -> purity in (0, 1]."""
    a, y = assignments.long(), labels.long()
    table = torch.zeros(int(a.max()) + 1, int(y.max()) + 1, dtype=torch.long)
    table.index_put_((a, y), torch.ones_like(a), accumulate=True)  # contingency table: cluster x class
    return table.max(dim=1).values.sum().item() / len(a)


def kmeans_assignments(features: torch.Tensor, k: int, seed: int = 0, restarts: int = 5) -> torch.Tensor:
    """k-means (scipy's kmeans2, k-means++ seeding) with the lowest within-cluster sum of squares of `restarts` runs."""
    from scipy.cluster.vq import kmeans2

    x = features.double().numpy()
    best, best_cost = None, np.inf
    for restart in range(restarts):
        centroids, labels = kmeans2(x, k, minit="++", seed=seed + restart)
        cost = ((x - centroids[labels]) ** 2).sum()
        if cost < best_cost:
            best, best_cost = labels, cost
    return torch.from_numpy(best).long()
