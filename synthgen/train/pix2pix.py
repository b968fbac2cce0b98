"""pix2pix (Isola et al. 2017): a conditional GAN from paired images.

G (a U-Net) maps the input x to y' = G(x); a PatchGAN D judges the pairs
(x, y) against (x, y'). G minimises the adversarial loss plus
loss.l1_weight (100) times |y' - y|: L1 gets the image right at low
frequencies, D makes it sharp. One D step, then one G step.
"""

from __future__ import annotations

import torch

from synthgen.data.translation import TranslationBatches, TranslationImages, load_paired
from synthgen.models.patchgan import build_patch_discriminator
from synthgen.models.registry import build_translator
from synthgen.train.translation import TranslationMethod, eval_mode


class Pix2Pix(TranslationMethod):
    reads = frozenset({"loss.l1_weight", "data.jitter", "data.direction", "data.on_mismatch", "data.dir_a", "data.dir_b"})
    load_images = staticmethod(load_paired)

    def __init__(self, recipe, data: TranslationImages, precision):
        super().__init__(recipe, precision)
        m, t = recipe.model, recipe.train
        # data.direction picks which side is the input; the rest of the method only knows x -> y.
        self.swap = recipe.data.direction == "BtoA"
        c_x, c_y = (data.b.shape[1], data.a.shape[1]) if self.swap else (data.a.shape[1], data.b.shape[1])
        self.G = self._place(build_translator(m, data.image_size, c_x, c_y))
        self.D = self._place(build_patch_discriminator(m, c_x + c_y))
        self.opt_G = self._adam(self.G, lr=t.lr_g)
        self.opt_D = self._adam(self.D, lr=t.lr_d)
        self.batches = TranslationBatches(data, t.batch_size, recipe.data.hflip, recipe.seed)
        self.grid_x, self.grid_y = (data.test_b, data.test_a) if self.swap else (data.test_a, data.test_b)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        a, b = self.batches.pairs(step, self.device)
        x, y = (self._input(b), self._input(a)) if self.swap else (self._input(a), self._input(b))
        with self.precision.autocast():
            fake = self.G(x)
            real_logits = self.D(torch.cat([x, y], dim=1))
            fake_logits = self.D(torch.cat([x, fake.detach()], dim=1))
            d_loss = self.loss.discriminator(real_logits, fake_logits)
        self._update(self.opt_D, self.scaler_D, d_loss)

        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            adversarial = self.g_scale * self.loss.generator(self.D(torch.cat([x, fake], dim=1)))
            l1 = (fake.float() - y.float()).abs().mean()
            total = adversarial + self.recipe.loss.l1_weight * l1
        self._update(self.opt_G, self.scaler_G, total)
        self.D.requires_grad_(True)
        return {"d_loss": d_loss.detach(), "g_loss": adversarial.detach(), "l1": l1.detach()}

    @torch.no_grad()
    def grid_images(self) -> tuple[torch.Tensor, int]:
        """One row per held-out pair: input | output | target."""
        x = self._to_model(self.grid_x)
        with eval_mode(self.G):
            output = self.G(x)
        return self._grid([x, output, self._to_model(self.grid_y)])
