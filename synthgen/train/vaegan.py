"""VAE-GAN (Larsen et al. 2016): a VAE whose reconstructions are judged in D's features, and a GAN on top.

E(x, y) is a Gaussian q(z|x) (reparameterised), G is its decoder, and the
reconstruction is measured not in pixels but in D's l-th layer: Dis_l(x) should
be likely under N(Dis_l(G(z)), I), z ~ q(z|x). D, as in the paper, judges real
images against both reconstructions G(z ~ q(z|x)) and samples G(z ~ p(z)).
The paper's weighting of the three losses, each network learning from its own:

    E:  kl_weight * L_prior + L_llike          L_prior = KL(q(z|x) || N(0, I))
    G:  gamma * L_llike + L_GAN(G)             L_llike = 1/2 ||Dis_l(x) - Dis_l(G(z))||^2
    D:  L_GAN(D)                               (no reconstruction signal reaches D)

Dis_l is D's trunk output (models/registry.py): with the dcgan backbone the
feature map of its last convolution, Larsen's choice of a deep layer. E gets no
GAN gradient and D no reconstruction gradient ("limit error signals to relevant
networks"): two backward passes over one graph, each into its own network.
"""

from __future__ import annotations

import torch
from pydantic import Field

from synthgen.losses import LOSSES
from synthgen.recipe import method_options
from synthgen.train.encoding import NOT_COMBINED, EncoderOptions, EncodingGAN


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)): summed over the latent, averaged over the batch (Kingma & Welling 2014)."""
    mean, logvar = mean.float(), logvar.float()
    return (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).sum(dim=1).mean()


def feature_reconstruction_loss(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Larsen's L_llike^Dis_l: -log N(real; generated, I) per image without its constant, averaged over the batch."""
    return 0.5 * (generated.float() - real.float()).pow(2).flatten(1).sum(dim=1).mean()


def layer_features(critic, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dis_l(x): D's trunk features of x (with the class planes a concat D joins to its input)."""
    return critic.trunk(critic.head.prepare_input(x, y))


class VAEGANOptions(EncoderOptions):
    gamma: float = Field(
        0.01, gt=0,
        description="G's weight of the feature-space reconstruction loss against its GAN loss (Larsen's gamma; their code: 1e-2, 1e-5 for a deeper layer on CelebA).",
    )
    kl_weight: float = Field(1.0, ge=0, description="E's weight of the KL term against the feature-space reconstruction loss (Larsen: 1).")


class VAEGAN(EncodingGAN):
    Options = VAEGANOptions
    not_combined = {
        **NOT_COMBINED,
        # A relativistic loss pairs each real with one fake; D here sees two fakes per real.
        "loss.type rpgan": lambda r: LOSSES[r.loss.type].relativistic,
        # Dis_l(x) and Dis_l(G(z)) must see the same image geometry: augmenting one of them breaks the comparison.
        "train.diffaugment": lambda r: bool(r.train.diffaugment),
    }

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        self.options = method_options(recipe)

    @staticmethod
    def stochastic_encoder(recipe) -> bool:  # noqa: ARG004
        return True

    def _decode_both(self, generator, z_posterior: torch.Tensor, y: torch.Tensor, y_prior: torch.Tensor):
        """Reconstructions G(z ~ q(z|x)) and samples G(z ~ p(z)) in one call, with their labels."""
        labels = torch.cat([y, y_prior])
        return generator(torch.cat([z_posterior, self._noise()]), labels), labels

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        real, y = self.batches.real(step, sub, self.device)
        y_prior = self.batches.fake_labels(step, sub, self.device)
        with self.precision.autocast():
            with torch.no_grad():
                fakes, labels = self._decode_both(self.G, self._encode(self.E, real, y)[0], y, y_prior)
            real_logits, real_classes = self.D_train(real, y)
            fake_logits, fake_classes = self.D_train(fakes, labels)
            adversarial = self.loss.discriminator(real_logits, fake_logits)
            aux = self._class_loss(real_classes, y) + self._class_loss(fake_classes, labels)
            total = adversarial + self.recipe.conditioning.aux_weight * aux
        self._update(self.opt_D, self.scaler_D, total)
        return {"d_loss": adversarial, "d_aux": aux}

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        real, y = self.batches.real(step, self.recipe.train.n_dis, self.device)
        y_prior = self.batches.fake_labels(step, self.recipe.train.n_dis, self.device)
        self.D.requires_grad_(False)
        with self.precision.autocast():
            z, mean, logvar = self._encode(self.E_train, real, y)
            fakes, labels = self._decode_both(self.G_train, z, y, y_prior)
            features = layer_features(self.D, fakes, labels)
            with torch.no_grad():
                target = layer_features(self.D, real, y)
            logits, classes = self.D.head(features, labels.view(-1, 1))
            prior = kl_divergence(mean, logvar)
            likelihood = feature_reconstruction_loss(features[: len(real)], target)
            adversarial = self.loss.generator(logits, None)
            aux = self._class_loss(classes, labels)
            encoder_loss = self.options.kl_weight * prior + likelihood
            decoder_loss = self.options.gamma * likelihood + adversarial + self.recipe.conditioning.aux_weight * aux
        self._update_each(encoder_loss, decoder_loss)
        self._after_generator_update(step)
        return {"g_loss": adversarial, "g_aux": aux, "kl": prior, "llike": likelihood}

    def _update_each(self, encoder_loss: torch.Tensor, decoder_loss: torch.Tensor) -> None:
        """E's gradient from its loss alone, G's from its own: two backward passes, one Adam step over both."""
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler_G.scale(encoder_loss).backward(inputs=list(self.E.parameters()), retain_graph=True)
        self.scaler_G.scale(decoder_loss).backward(inputs=list(self.G.parameters()))
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
