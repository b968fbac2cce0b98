"""SGAN's discriminator: a K-class classifier whose "real" logit is the logsumexp of its K logits.

Salimans et al. (2016) give D K + 1 outputs, the last one "fake", and note
that fixing the fake logit at 0 loses nothing: then
P(real | x) = Z / (Z + 1) with Z = sum_k exp(l_k), i.e. sigmoid(logsumexp(l)).
So D is a plain K-way classifier, and every adversarial loss applies to
logsumexp(l) as the real-vs-fake logit. The trunk is the backbone's D trunk,
its output the features that G's feature matching compares.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.layers import spectral
from synthgen.models.registry import get_backbone


def real_logit(class_logits: torch.Tensor) -> torch.Tensor:
    """D's real-vs-fake logit from its K class logits [B, K]: logsumexp (float32, so bf16 does not round it)."""
    return torch.logsumexp(class_logits.float(), dim=1)


class ClassifierDiscriminator(nn.Module):
    """Trunk -> dropout -> K class logits; returns (class logits [B, K], trunk features [B, F])."""

    def __init__(self, trunk: nn.Module, num_classes: int, dropout: float, sn: bool):
        super().__init__()
        self.trunk = trunk
        # Dropout before the classifier: with a few labels per class, the supervised
        # term alone overfits them within a few hundred steps (Salimans et al. use dropout too).
        self.dropout = nn.Dropout(dropout)
        self.classifier = spectral(nn.Linear(trunk.features, num_classes), sn)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return self.classifier(self.dropout(features)), features


def build_classifier_discriminator(recipe, num_classes: int, dropout: float) -> ClassifierDiscriminator:
    m, d = recipe.model, recipe.data
    trunk = get_backbone(m.backbone).trunk(m, d.image_size, d.channels)
    return ClassifierDiscriminator(trunk, num_classes, dropout, m.spectral_norm)
