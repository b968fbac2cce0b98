"""What the families with an encoder share (BiGAN/ALI, VAE-GAN): E: x -> z beside G, one player with it.

`encodes = True` is the capability `synthgen encode` / `vary` and `balance
--mix vary=...` look for (encode.py): a later family that learns an encoder
subclasses `EncodingGAN` (or sets `encodes` and provides `encoder_network`)
and gets those commands without any list of names to update.

E and G are trained together as one player of the game (one Adam over both,
at train.lr_g); G stays the network `synthgen sample` draws from, so sampling
works as for any conditional GAN. Grids add two rows: fixed real images and
their reconstructions G(E(x)).
"""

from __future__ import annotations

import torch
from pydantic import Field

from synthgen import distributed
from synthgen.imaging import to_model
from synthgen.models.encoder import Encoder, reparameterised
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN, adam
from synthgen.train.translation import eval_mode

GRID_SOURCES = 10  # real images shown with their reconstructions in every grid


class EncoderOptions(Section):
    e_channels: int | None = Field(None, ge=4, description="Encoder width after its first layer, doubling per level; empty = model.d_channels.")


# Recipe keys the encoder families do not combine with (their D step is their own): key -> when it is set.
NOT_COMBINED = {
    "loss.type wgan-gp / loss.gp_weight": lambda r: r.loss.type == "wgan-gp" or bool(r.loss.gp_weight),
    "loss.r1_gamma": lambda r: r.loss.r1_gamma > 0,
    "loss.r2_gamma": lambda r: r.loss.r2_gamma > 0,
    "loss.lecam_weight": lambda r: r.loss.lecam_weight > 0,
    "model.pack": lambda r: r.model.pack > 1,
    "model.minibatch_discrimination": lambda r: r.model.minibatch_discrimination.kernels > 0,
    "train.ada_heldout": lambda r: r.train.ada_heldout > 0,  # D judges (image, latent) pairs: no held-out view
}


class EncodingGAN(ConditionalGAN):
    encodes = True  # a trained run can encode images and decode variations of them (encode.py)
    Options = EncoderOptions
    not_combined = NOT_COMBINED

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        self.E = self.encoder_network(recipe, self.num_classes).to(self.device, memory_format=precision.memory_format)
        self.E_train = distributed.wrap(self.E, self.device)
        t = recipe.train
        self.opt_G = adam([*self.G.parameters(), *self.E.parameters()], t.lr_g, (t.beta1, t.beta2))
        picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(recipe.seed + 3))[:GRID_SOURCES]
        self.grid_sources, self.grid_labels = data.images[picks], data.labels[picks]

    @classmethod
    def check_recipe(cls, recipe) -> None:
        """Refuse (one line each, when the recipe is read) the keys this family does not combine with."""
        for key, is_set in cls.not_combined.items():
            if is_set(recipe):
                raise ValueError(f"{key}: method {recipe.method} does not combine with it (it has its own discriminator step); leave it at its default")

    # --- the encoder, rebuilt by `synthgen encode` / `vary` from a checkpoint ---------

    @staticmethod
    def stochastic_encoder(recipe) -> bool:
        """Whether E outputs a Gaussian (mean, log-variance) instead of one z."""
        return False

    @classmethod
    def encoder_network(cls, recipe, num_classes: int) -> Encoder:
        width = method_options(recipe).e_channels or recipe.model.d_channels
        d = recipe.data
        return Encoder(recipe.model, d.image_size, d.channels, num_classes, width, cls.stochastic_encoder(recipe))

    @property
    def networks(self) -> dict:
        return {**super().networks, "E": self.E}

    def _encode(self, encoder, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z drawn from E's output, its mean, its log-variance or None) for real images x."""
        mean, logvar = encoder(x.contiguous(memory_format=self.precision.memory_format), y)
        return reparameterised(mean, logvar), mean, logvar

    # --- what the loop shows --------------------------------------------------------

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """G(E(x)) in eval mode, from E's mean, by the sampling generator (what `vary --spread 0` writes)."""
        with eval_mode(self.E, self.sampling_generator):
            return self.sampling_generator(self.E(x, y)[0], y)

    @torch.no_grad()
    def grid_images(self, columns: int = 10, max_rows: int = 20) -> tuple[torch.Tensor, int]:
        """The conditional GAN's sample rows, then a row of fixed real images and a row of their reconstructions."""
        samples, columns = super().grid_images(columns, max_rows)
        x = to_model(self.grid_sources[:columns]).to(self.device)
        y = self.grid_labels[:columns].to(self.device)
        return torch.cat([samples.float(), x, self.reconstruct(x, y).float()]), columns
