"""Multi-resolution GANs, one G and one D per resolution: LAPGAN (`lapgan`) and StackGAN stages (`stackgan`).

Both train through the conditional GAN's loop (cgan.py): G and D are each one
module holding every resolution's network (models/pyramid.py), so EMA,
checkpoints, exact resume, the budget and the gate see one G and one D. Each
D update judges every resolution (the sum of one adversarial loss per D);
each G update trains every resolution's G against its own D.

LAPGAN (Denton et al. 2015). Level 0 draws the coarsest image from (z, class);
level k draws the high-pass band h_k to add to the upsampled image l_k of
level k-1, and D_k judges l_k + h_k given l_k. The paper trains each level
on its own, on real coarse images: l_k = u(d(I_k)) of a real image I_k.
Here every level trains in every step, still each on the real coarse image
of that step's real batch: no gradient and no input passes from one level to
another, so this is the paper's independent training run side by side (one
schedule, one budget) rather than a joint chain. Sampling chains the levels.

StackGAN (Zhang et al. 2017), class-conditioned. Stage-I draws a low-resolution
image from (z, c1); Stage-II redraws it at 2x or 4x from the upsampled Stage-I
image, c2 and z; D-I judges Stage-I images against downsampled real ones, D-II
full-size ones. c_i = mu_i(class) + sigma_i(class) * eps (conditioning
augmentation) with kl_weight * KL(N(mu_i, sigma_i^2) || N(0, I)) added to
G's loss. Both stages train jointly, in every step: Stage-II sees Stage-I's
current images detached (as the paper's Stage-II sees a frozen Stage-I), so
Stage-I learns from D-I alone and the two-phase schedule is not needed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from synthgen.errors import SynthgenError
from synthgen.losses import LOSSES
from synthgen.models.pyramid import LaplacianGenerator, ScaleDiscriminators, StackedGenerator, downsample, level_sizes, upsample
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.vaegan import kl_divergence


class MultiScaleGAN(ConditionalGAN):
    """The step shared by both families: one adversarial loss per resolution, summed; subclasses say what each D sees."""

    # No penalties, LeCam or augmentation: each level's D is a plain DCGAN-style D (recipe.py refuses these keys).
    reads = ConditionalGAN.reads - {
        "loss.gp_weight", "loss.r1_gamma", "loss.r2_gamma", "loss.r1_every", "loss.lecam_weight", "loss.lecam_decay",
        "train.diffaugment", "train.ada_target", "train.ada_kimg", "train.ada_interval", "train.ada_heldout",
    }

    @staticmethod
    def check_recipe(recipe) -> None:
        name = recipe.method
        if recipe.model.pack > 1:
            raise ValueError(f"model.pack: {name}'s Ds judge each image; use 1")
        if LOSSES[recipe.loss.type].offset_free:  # each level's D needs logits with a zero of their own
            raise ValueError(f"loss.type: {name} uses a loss of D's own logits per resolution (ns, minimax, hinge or lsgan; got {recipe.loss.type})")
        if recipe.model.minibatch_std:
            raise ValueError(f"model.minibatch_std: not used by {name}; leave it unset")

    # --- G's input: z, and the extra noise a family needs (per-level z, eps of c) ---------------

    @staticmethod
    def extra_noise(recipe) -> int:
        """How many N(0, 1) numbers the latent carries after z."""
        raise NotImplementedError

    def _with_codes(self, z: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        extra = self.extra_noise(self.recipe)
        more = torch.randn(len(z), extra, device=z.device) if gen is None else torch.randn(len(z), extra, generator=gen).to(z.device)
        return torch.cat([z, more], dim=1)

    @classmethod
    def latent(cls, recipe, seed: int, truncation: float | None) -> torch.Tensor:
        from synthgen.sample import latent

        return latent(seed, recipe.model.z_dim + cls.extra_noise(recipe), truncation)

    # --- what each resolution's D sees (per family) ---------------------------------------------

    def _discriminator_inputs(self, step: int, sub: int):
        """(real images per resolution, what each D is given beside the image, real labels, labels for the fakes)."""
        raise NotImplementedError

    def _generator_inputs(self, step: int, sub: int):
        """(labels for the fakes, what each D is given) for G's update."""
        raise NotImplementedError

    def _generate(self, generator, latent: torch.Tensor, y: torch.Tensor, given: list):
        """(fake images per resolution, a loss G adds, terms to log)."""
        raise NotImplementedError

    # --- one step -----------------------------------------------------------------------------

    def _terms(self, prefix: str, per_scale: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"{prefix}_{size}px": value for size, value in zip(self.sizes, per_scale)}

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        reals, given, y_real, y_fake = self._discriminator_inputs(step, sub)
        with self.precision.autocast():
            with torch.no_grad():
                fakes = self._generate(self.G, self._noise(), y_fake, given)[0]
            real_out, fake_out = self.D_train(reals, given, y_real), self.D_train(fakes, given, y_fake)
            losses = [self.loss.discriminator(r[0], f[0]) for r, f in zip(real_out, fake_out)]
            aux = sum(self._class_loss(r[1], y_real) + self._class_loss(f[1], y_fake) for r, f in zip(real_out, fake_out))
            total = sum(losses) + self.recipe.conditioning.aux_weight * aux
        self._update(self.opt_D, self.scaler_D, total)
        return {"d_loss": sum(losses), "d_aux": aux, **self._terms("d", losses)}

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        y, given = self._generator_inputs(step, self.recipe.train.n_dis)
        self.D.requires_grad_(False)
        with self.precision.autocast():
            fakes, extra, extra_terms = self._generate(self.G_train, self._noise(), y, given)
            out = self.D(fakes, given, y)
            losses = [self.loss.generator(logits, None) for logits, _ in out]
            aux = sum(self._class_loss(classes, y) for _, classes in out)
            total = sum(losses) + self.recipe.conditioning.aux_weight * aux + extra
        self._update(self.opt_G, self.scaler_G, total)
        self._after_generator_update(step)
        return {"g_loss": sum(losses), "g_aux": aux, **self._terms("g", losses), **extra_terms}


# --- LAPGAN ------------------------------------------------------------------------------------


class LAPGANOptions(Section):
    levels: int = Field(3, ge=2, le=6, description="Pyramid levels, each half the size of the next (28 px, 3: 7, 14 and 28 px; the paper's CIFAR-10: 8, 16, 32).")


class LAPGAN(MultiScaleGAN):
    Options = LAPGANOptions

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        self.sizes = self.G.sizes

    @staticmethod
    def check_recipe(recipe) -> None:
        MultiScaleGAN.check_recipe(recipe)
        if recipe.data.image_size != "auto":
            level_sizes(recipe.data.image_size, method_options(recipe).levels)

    @staticmethod
    def build_networks(recipe, num_classes: int):
        m, d, levels = recipe.model, recipe.data, method_options(recipe).levels
        try:
            sizes = level_sizes(d.image_size, levels)
        except ValueError as error:  # data.image_size auto: known only now
            raise SynthgenError(f"{error} (data.image_size resolved to {d.image_size})") from None
        generator = LaplacianGenerator(m, d.image_size, d.channels, num_classes, levels)
        given = [0] + [d.channels] * (levels - 1)  # D_k (k >= 1) also sees the coarse image l_k
        return generator, ScaleDiscriminators(m, sizes, d.channels, num_classes, recipe.conditioning.type, given)

    @staticmethod
    def extra_noise(recipe) -> int:
        return (method_options(recipe).levels - 1) * recipe.model.z_dim  # one z per level above level 0

    def _pyramid(self, real: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Real images at every level (coarsest first) and each level's coarse input l_k = u(I_{k-1}) (none at level 0)."""
        images = [real]
        for _ in self.sizes[1:]:
            images.insert(0, downsample(images[0]))
        return images, [None] + [upsample(image) for image in images[:-1]]

    def _discriminator_inputs(self, step: int, sub: int):
        real, y = self.batches.real(step, sub, self.device)
        reals, lows = self._pyramid(real)
        return reals, lows, y, y  # the fakes refine these real coarse images, so they take their classes

    def _generator_inputs(self, step: int, sub: int):
        real, y = self.batches.real(step, sub, self.device)
        return y, self._pyramid(real)[1]

    def _generate(self, generator, latent, y, given):
        return generator(latent, y, given[1:]), 0.0, {}  # through forward, so DDP sees the pass


# --- StackGAN ----------------------------------------------------------------------------------


class StackGANOptions(Section):
    upscale: Literal[2, 4] = Field(2, description="Stage-II's size over Stage-I's (the paper: 4, 64 -> 256 px); 28 px with 2: Stage-I at 14 px.")
    ca_dim: int = Field(32, ge=1, description="Size of the conditioning-augmentation vector c ~ N(mu(class), sigma(class)) (the paper's N_g: 128 for text).")
    kl_weight: float = Field(
        1.0, ge=0,
        description="Weight of KL(N(mu, sigma^2) || N(0, I)) (summed over c, per stage) in G's loss: the paper's lambda = 1 (its code: 2.0 times the per-dimension mean).",
    )


class StackGAN(MultiScaleGAN):
    Options = StackGANOptions

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        size = recipe.data.image_size
        self.sizes = [size // method_options(recipe).upscale, size]
        self.kl_weight = method_options(recipe).kl_weight

    @staticmethod
    def check_recipe(recipe) -> None:
        MultiScaleGAN.check_recipe(recipe)
        if recipe.data.image_size != "auto":
            StackGAN.stage_sizes(recipe)

    @staticmethod
    def stage_sizes(recipe) -> list[int]:
        size, upscale = recipe.data.image_size, method_options(recipe).upscale
        if size % upscale or size // upscale < 4:
            raise ValueError(f"options.upscale: Stage-I at {size} px / {upscale} must be a whole size of at least 4 px (use upscale 2, or a multiple of {upscale})")
        return [size // upscale, size]

    @staticmethod
    def build_networks(recipe, num_classes: int):
        m, d, options = recipe.model, recipe.data, method_options(recipe)
        try:
            sizes = StackGAN.stage_sizes(recipe)
        except ValueError as error:
            raise SynthgenError(f"{error} (data.image_size resolved to {d.image_size})") from None
        generator = StackedGenerator(m, d.image_size, d.channels, num_classes, options.upscale, options.ca_dim)
        return generator, ScaleDiscriminators(m, sizes, d.channels, num_classes, recipe.conditioning.type, [0, 0])

    @staticmethod
    def extra_noise(recipe) -> int:
        return 2 * method_options(recipe).ca_dim  # eps of c1 and of c2

    def _real_stages(self, real: torch.Tensor) -> list[torch.Tensor]:
        low = real
        while low.shape[-1] > self.sizes[0]:
            low = downsample(low)
        return [low, real]

    def _discriminator_inputs(self, step: int, sub: int):
        real, y = self.batches.real(step, sub, self.device)
        return self._real_stages(real), [None, None], y, self.batches.fake_labels(step, sub, self.device)

    def _generator_inputs(self, step: int, sub: int):
        return self.batches.fake_labels(step, sub, self.device), [None, None]

    def _generate(self, generator, latent, y, given):
        images, moments = generator(latent, y, stages=True)
        kl = [kl_divergence(mean, logvar) for mean, logvar in moments]
        return images, self.kl_weight * sum(kl), {"kl_stage1": kl[0], "kl_stage2": kl[1]}
