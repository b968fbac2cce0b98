"""BiGAN (Donahue et al. 2016) / ALI (Dumoulin et al. 2016): an encoder learnt by the adversarial game itself.

D judges (image, latent, class) triples: (x, E(x), y) of real images are "real",
(G(z, y), z, y) with z ~ N(0, I) are "fake". The two joint distributions can
only match when E inverts G, so E(x) becomes a latent G decodes back into
something like x: `synthgen vary` perturbs it to make variations of a real
image, `synthgen encode` exports it as features (the BiGAN paper's linear probe).

D minimises the recipe's loss.type; E and G, one player, minimise the same loss
with the real and fake pairs swapped (the BiGAN paper's inverted labels, which
for `ns` is the non-saturating game on both sides). ALI's stochastic encoder
(z = mu + sigma * eps) is `options.stochastic_encoder: true`. D has ALI's dropout
(`options.d_dropout`) on its latent and joint layers.
"""

from __future__ import annotations

import torch
from pydantic import Field

from synthgen.models.encoder import JointDiscriminator
from synthgen.models.registry import get_backbone
from synthgen.recipe import method_options
from synthgen.train.encoding import EncoderOptions, EncodingGAN


class BiGANOptions(EncoderOptions):
    stochastic_encoder: bool = Field(False, description="ALI: E outputs a Gaussian and z = mu + sigma * eps is sampled (BiGAN: E(x) is z itself).")
    d_hidden: int = Field(512, ge=8, description="Width of D's latent path and of its joint (image, latent) layer.")
    d_dropout: float = Field(0.2, ge=0, lt=1, description="Dropout in D's latent and joint layers (ALI: 0.2); keeps D from memorising pairs.")


class BiGAN(EncodingGAN):
    Options = BiGANOptions

    @staticmethod
    def build_networks(recipe, num_classes: int):
        from synthgen.models.conditioning import build_models

        generator = build_models(recipe, num_classes)[0]
        options, d = method_options(recipe), recipe.data
        trunk = get_backbone(recipe.model.backbone).trunk
        critic = JointDiscriminator(trunk, recipe.model, d.image_size, d.channels, num_classes, recipe.conditioning.type, options.d_hidden, options.d_dropout)
        return generator, critic

    @staticmethod
    def stochastic_encoder(recipe) -> bool:
        return method_options(recipe).stochastic_encoder

    def _pairs(self, step: int, sub: int, encoder, generator):
        """(x, E(x), y) real and (G(z, y'), z, y') fake triples of one (step, sub-step) draw."""
        real, y_real = self.batches.real(step, sub, self.device)
        y_fake = self.batches.fake_labels(step, sub, self.device)
        z_fake = self._noise()
        z_real = self._encode(encoder, real, y_real)[0]
        return (real, z_real, y_real), (generator(z_fake, y_fake), z_fake, y_fake)

    def _judge(self, critic, triple):
        x, z, y = triple
        return critic(self._augment(x), z, y)

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        with self.precision.autocast():
            with torch.no_grad():
                real, fake = self._pairs(step, sub, self.E, self.G)
            real_logits, real_classes = self._judge(self.D_train, real)
            fake_logits, fake_classes = self._judge(self.D_train, fake)
            adversarial = self.loss.discriminator(real_logits, fake_logits)
            aux = self._class_loss(real_classes, real[2]) + self._class_loss(fake_classes, fake[2])
            total = adversarial + self.recipe.conditioning.aux_weight * aux
        self._update(self.opt_D, self.scaler_D, total)
        self.augment.observe(real_logits, fake_logits)
        return {"d_loss": adversarial, "d_aux": aux}

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # no D gradients needed for the E + G update
        with self.precision.autocast():
            real, fake = self._pairs(step, self.recipe.train.n_dis, self.E_train, self.G_train)
            real_logits, _ = self._judge(self.D, real)
            fake_logits, fake_classes = self._judge(self.D, fake)
            adversarial = self.loss.discriminator(fake_logits, real_logits)  # the swapped game: fakes "real", reals "fake"
            aux = self._class_loss(fake_classes, fake[2])
            total = adversarial + self.recipe.conditioning.aux_weight * aux
        self._update(self.opt_G, self.scaler_G, total)
        self._after_generator_update(step)
        return {"g_loss": adversarial, "g_aux": aux}
