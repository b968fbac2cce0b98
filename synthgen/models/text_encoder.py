"""The text side of text-to-image: a word-embedding GRU encoder and StackGAN's conditioning augmentation.

Reed et al. (2016) encoded captions with a char-CNN-RNN trained beforehand; here
a word GRU is trained from the captions of the run itself (no download), as
text2image.py describes. Ids are those of data/captions.py's Vocabulary
(0 = padding, after the words).
"""

from __future__ import annotations

import torch
from torch import nn


class WordGRUEncoder(nn.Module):
    """phi(t): word ids [B, L] (0-padded at the end) -> the GRU's state after the last word [B, text_dim]."""

    def __init__(self, vocabulary_size: int, embed_dim: int, text_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocabulary_size, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, text_dim, batch_first=True)
        self.text_dim = text_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embed(ids))  # [B, L, text_dim]
        last = (ids != 0).sum(dim=1).clamp(min=1) - 1  # the position of each caption's last word
        return states[torch.arange(len(ids), device=ids.device), last]


class ConditioningAugmentation(nn.Module):
    """StackGAN (Zhang et al. 2017): c = mu(phi) + sigma(phi) * eps, eps ~ N(0, I), with KL(N(mu, sigma^2) || N(0, I)) as a loss.

    eps is an input (part of G's latent), not drawn here, so a sampled image depends on its seed alone.
    """

    def __init__(self, text_dim: int, c_dim: int):
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(text_dim, 2 * c_dim)

    def forward(self, phi: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = nn.functional.leaky_relu(self.fc(phi), 0.2).chunk(2, dim=1)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per dimension, averaged over dimensions and batch (StackGAN's code).

    Per dimension rather than summed, so that its weight (StackGAN: 1) does not grow with c_dim.
    """
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean()
