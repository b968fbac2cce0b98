"""StarGAN (Choi et al. 2018): one translator between every pair of domains, learnt from a labelled folder.

The classes of an ImageFolder are the domains. G(x, c') translates x into
domain c'; D has a critic head D_src and a domain head D_cls
(models/stargan.py). Per D step, on a real batch x of domains c and random
targets c':
    L_D = -D_src(x) + D_src(G(x, c')) + lambda_gp GP + lambda_cls CE(D_cls(x), c)
and per G step (after train.n_dis D steps):
    L_G = -D_src(G(x, c')) + lambda_cls CE(D_cls(G(x, c')), c') + lambda_rec |x - G(G(x, c'), c)|_1
          [+ lambda_id |x - G(x, c)|_1, CycleGAN's identity term, off by default]
The domain head learns the domains from real images only, and G is pushed
to make images it classifies as c'; the cycle term (weight 10) makes G keep
what is not the domain: the layout, the pose, the shape.

`synthgen translate IN OUT --weights RUN --to-class NAME` (or `all`) uses G.
Multi-label attributes (the paper's CelebA setting) are not supported: the
data layer reads one class per image from folder names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from synthgen.data.batches import BatchDrawer
from synthgen.data.loading import LabelledImages
from synthgen.losses import gradient_penalty
from synthgen.models.stargan import build_stargan
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN, alternating_updates
from synthgen.train.translation import TranslationMethod, eval_mode

GRID_INPUTS = 2  # input images per class in the training grids


class StarGANOptions(Section):
    lambda_cls: float = Field(1.0, ge=0, description="Weight of the domain-classification losses (D on real images, G on its translations); the paper's 1.")
    lambda_rec: float = Field(10.0, ge=0, description="Weight of the cycle reconstruction |x - G(G(x, c'), c)|_1; the paper's 10.")
    lambda_id: float = Field(0.0, ge=0, description="Weight of the identity term |x - G(x, c)|_1 (into its own class, x is kept; CycleGAN's, not the paper's): 0 = off.")


class StarGAN(TranslationMethod):
    Options = StarGANOptions
    losses = ("wgan-gp", "lsgan", "ns", "hinge")  # loss.type values that fit; the paper's is wgan-gp
    evaluation_images = None  # no (latent, class) generator for the training-time gate

    def __init__(self, recipe, data: LabelledImages, precision):
        super().__init__(recipe, precision)
        self.options = method_options(recipe)
        t, channels = recipe.train, data.images.shape[1]
        self.num_classes = len(data.class_names)
        G, D = build_stargan(recipe.model, channels, self.num_classes)
        self.G, self.D = self._place(G), self._place(D)
        self.opt_G = self._adam(self.G, lr=t.lr_g)
        self.opt_D = self._adam(self.D, lr=t.lr_d)
        self.batches = BatchDrawer(data, t.batch_size, recipe.data.sampling, recipe.data.hflip, recipe.seed)
        gp = recipe.loss.gp_weight
        self.gp_weight = self.loss.default_gp_weight if gp is None else gp
        self.grid_inputs = _grid_inputs(data, GRID_INPUTS)
        self.images_per_step = t.batch_size * (t.n_dis + 1)

    load_data = staticmethod(ConditionalGAN.load_data)  # a labelled folder, classes = domains

    @staticmethod
    def check_recipe(recipe) -> None:
        if recipe.model.translator != "resnet":
            raise ValueError(f"model.translator: stargan's G is the resnet translator with domain planes joined to the input; use resnet (got {recipe.model.translator})")
        if recipe.model.norm != "batch":  # see models/stargan.py
            raise ValueError("model.norm: instance norm removes stargan's constant target planes (G cannot see the target class); use batch")

    # --- one step ------------------------------------------------------------

    def _targets(self, step: int, sub: int) -> torch.Tensor:
        return self.batches.fake_labels(step, sub, self.device)

    def discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        real, domains = self.batches.real(step, sub, self.device)
        real = self._input(real)
        with self.precision.autocast():
            with torch.no_grad():
                fake = self.G(real, self._targets(step, sub))
            real_src, real_cls = self.D(real)
            fake_src, _ = self.D(fake)
            adversarial = self.loss.discriminator(real_src, fake_src)
            cls = F.cross_entropy(real_cls.float(), domains)
            total = adversarial + self.options.lambda_cls * cls
            terms = {"d_loss": adversarial, "d_cls": cls}
            if self.gp_weight > 0:
                gp = gradient_penalty(lambda mixed: self.D(mixed)[0], real, fake)
                total = total + self.gp_weight * gp
                terms["gp"] = gp
        self._update(self.opt_D, self.scaler_D, total)
        return terms

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        n_dis = self.recipe.train.n_dis
        real, domains = self.batches.real(step, n_dis, self.device)
        real, targets = self._input(real), self._targets(step, n_dis)
        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            fake = self.G(real, targets)
            fake_src, fake_cls = self.D(fake)
            adversarial = self.loss.generator(fake_src)
            cls = F.cross_entropy(fake_cls.float(), targets)
            rec = (self.G(fake, domains).float() - real.float()).abs().mean()
            total = adversarial + self.options.lambda_cls * cls + self.options.lambda_rec * rec
            terms = {"g_loss": adversarial, "g_cls": cls, "cycle": rec}
            if self.options.lambda_id > 0:
                terms["identity"] = (self.G(real, domains).float() - real.float()).abs().mean()
                total = total + self.options.lambda_id * terms["identity"]
        self._update(self.opt_G, self.scaler_G, total)
        self.D.requires_grad_(True)
        return terms

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        return alternating_updates(self, step)

    @torch.no_grad()
    def grid_images(self) -> tuple[torch.Tensor, int]:
        """One row per input: the input, then its translation into every domain (the column of its own domain ~ itself)."""
        x = self._to_model(self.grid_inputs)
        with eval_mode(self.G):
            columns = [x] + [self.G(x, torch.full((len(x),), k, device=self.device)) for k in range(self.num_classes)]
        return self._grid(columns)


def _grid_inputs(data: LabelledImages, per_class: int) -> torch.Tensor:
    """The first `per_class` images of every class (uint8), the same in every grid of a run."""
    picks = [torch.nonzero(data.labels == k).flatten()[:per_class] for k in range(len(data.class_names))]
    return data.images[torch.cat(picks)]
