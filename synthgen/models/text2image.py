"""GAN-CLS networks (Reed et al. 2016): G(z, c) with c from the caption, D(x, phi(t)) judging the pair.

G holds the text encoder too, so one checkpoint file (G or G_ema) maps
(latent, word ids) to images for `synthgen sample --text`; which optimiser
trains which part is text2image.py's business.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.models.layers import spectral
from synthgen.models.registry import get_backbone
from synthgen.models.text_encoder import ConditioningAugmentation, WordGRUEncoder


class TextToImageGenerator(nn.Module):
    """latent = [z, eps] (z_dim + c_dim), ids [B, L] -> images; `from_embedding` also takes phi directly (GAN-INT)."""

    def __init__(self, recipe, options):
        super().__init__()
        m, d = recipe.model, recipe.data
        self.z_dim = m.z_dim
        self.encoder = WordGRUEncoder(options.vocabulary_size, options.embed_dim, options.text_dim)
        self.augment = ConditioningAugmentation(options.text_dim, options.c_dim)
        # The backbone's generator, unconditional (one class), on [z, c].
        self.image = get_backbone(m.backbone).generator(m.model_copy(update={"z_dim": m.z_dim + options.c_dim}), d.image_size, d.channels, 1)

    def from_embedding(self, latent: torch.Tensor, phi: torch.Tensor):
        """(images, mu, logvar) for text embeddings phi [B, text_dim]."""
        c, mu, logvar = self.augment(phi, latent[:, self.z_dim :])
        zeros = torch.zeros(len(latent), dtype=torch.long, device=latent.device)
        return self.image(torch.cat([latent[:, : self.z_dim], c], dim=1), zeros), mu, logvar

    def forward(self, latent: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.from_embedding(latent, self.encoder(ids))[0]


class MatchingDiscriminator(nn.Module):
    """D(x, phi) = psi(h) + <h, V u(phi)>: h the backbone's trunk features of x, u a projection of the text embedding.

    The text enters as a compatibility score between image features and text, the form of Reed et al.'s
    joint embedding of images and captions (F(v, t) = theta(v)^T phi(t)) and of the projection
    discriminator (Miyato & Koyama 2018), instead of the paper's text planes joined to D's 4x4 map:
    on flattened trunk features a joined text vector is a small part of a wide input, and the pair's match
    is learned far more slowly (measured on the tests' captioned Fashion-MNIST).
    """

    def __init__(self, recipe, options):
        super().__init__()
        m, d = recipe.model, recipe.data
        sn = m.spectral_norm
        self.trunk = get_backbone(m.backbone).trunk(m, d.image_size, d.channels)
        self.text = nn.Sequential(nn.Linear(options.text_dim, options.d_text_dim), nn.LeakyReLU(0.2))
        self.adversarial = spectral(nn.Linear(self.trunk.features, 1), sn)
        self.match = spectral(nn.Linear(options.d_text_dim, self.trunk.features, bias=False), sn)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return self.adversarial(h).squeeze(1) + (h * self.match(self.text(phi.to(h.dtype)))).sum(dim=1)
