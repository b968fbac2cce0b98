"""StarGAN (Choi et al. 2018): one translator between every pair of domains, learnt from a labelled folder.

The classes of an ImageFolder are the domains. G(x, c') translates x into
domain c'; D has a critic head D_src and a domain head D_cls
(models/stargan.py). Per D step, on a real batch x of domains c and random
targets c':
    L_D = -D_src(x) + D_src(G(x, c')) + lambda_gp GP + lambda_cls CE(D_cls(x), c)
and per G step (after train.n_dis D steps):
    L_G = -D_src(G(x, c')) + lambda_cls CE(D_cls(G(x, c')), c') + lambda_rec |x - G(G(x, c'), c)|_1
          [+ lambda_id |x - G(x, c)|_1, CycleGAN's identity term, not the paper's; 0 = off;
             with options.identity_warmup its weight starts at lambda_rec and falls to lambda_id]
          (with options.cycle_blur / cycle_noise, the cycle translates G(x, c') blurred / + noise back)
          [+ lambda_mask mean(A), with options.attention's keep-mask A (GANimation's), off by default]
With train.diffaugment, D (both heads) sees every image through DiffAugment's
transforms (ADA's adaptive p with train.ada_target), real and translated, in
the D and G steps alike, as for the generating methods: a rare domain of a few
dozen images is what DiffAugment is for.
G's batch-norm running statistics, which `translate` normalises by, come from
the translation pass alone: the cycle and identity passes see other inputs
(G's own images; each image's own class) and would shift them.
The domain head learns the domains from real images only, and G is pushed
to make images it classifies as c'; the cycle term (weight 10) makes G keep
what is not the domain: the layout, the pose, the shape.

Multi-label (the paper's CelebA setting): with `options.attributes` (a CSV
of file, attribute, ... with 0/1 values; data/attributes.py) a domain is a
vector of binary attributes instead of a class. D_cls then gives one logit
per attribute, learnt with the paper's binary cross-entropy (summed over
attributes), and the targets c' are the batch's own attribute vectors
shuffled, as the paper draws them, so every target is a combination that
occurs in the data.

With train.ema, an exponential moving average of G's weights (StarGAN v2,
Choi et al. 2020, keeps one) is saved beside G as G_ema, with batch-norm
statistics of its own (translations of real images into random domains),
and is what the grids show and `translate` uses.

`synthgen translate IN OUT --weights RUN --to-class NAME` (or `all`) uses G (G_ema where kept);
a multi-label run takes `--attr NAME=1` (or 0) instead, changing only the
attributes named and keeping the rest as D's domain head reads them off
each input.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torchvision.transforms.functional import gaussian_blur

from synthgen.data.attributes import AttributedImages, load_attributed
from synthgen.data.batches import BatchDrawer
from synthgen.data.diffaugment import AdaptiveAugment
from synthgen.data.loading import LabelledImages
from synthgen.imaging import to_model
from synthgen.losses import gp_weight, gradient_penalty
from synthgen.models.stargan import build_stargan
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN, alternating_updates
from synthgen.train.ema import EMA, AveragedGenerator
from synthgen.train.translation import TranslationMethod, eval_mode, running_stats_kept

GRID_INPUTS = 2  # input images per class in the training grids


class StarGANOptions(Section):
    lambda_cls: float = Field(2.0, ge=0, description="Weight of the domain-classification losses (D on real images, G on its translations); the paper's 1, doubled: with options.lambda_id the rate then reaches what real images get (README).")
    lambda_rec: float = Field(10.0, ge=0, description="Weight of the cycle reconstruction |x - G(G(x, c'), c)|_1; the paper's 10.")
    cycle_noise: float = Field(
        0.2, ge=0,
        description="Std of Gaussian noise added to G(x, c') before it is translated back for the cycle term (Bashkirova et al. 2019): G can no longer hide x in a faint pattern, so it must keep x's structure where it shows. 0 = off.",
    )
    cycle_blur: float = Field(
        1.0, ge=0,
        description="Std in pixels of a Gaussian blur applied to G(x, c') (before options.cycle_noise) before the cycle translates it back: a code hidden in fine texture, at any amplitude, is wiped out, so what G keeps of x must be coarse enough to see. 0 = off.",
    )
    lambda_id: float = Field(0.5, ge=0, description="Weight of the identity term |x - G(x, c)|_1 (into its own class, x is kept; CycleGAN's, not the paper's): without it Fashion-MNIST translations kept none of the input's structure (README). 0 = off.")
    identity_warmup: int = Field(
        1000, ge=0,
        description="Steps over which the identity term's weight falls linearly from options.lambda_rec (the cycle's) to options.lambda_id: G first learns to give its input back, so that the domain term bends a map that uses the input instead of drawing one template per class, as it did from the first 500 steps at some seeds without it (README). 1,000 is a quarter of the recipe's 4,000 steps; keep about that share in much shorter runs. 0, or a lambda_rec not above lambda_id: lambda_id throughout.",
    )
    domain_head: Literal["pooled", "whole"] = Field(
        "pooled",
        description="D's domain classifier: pooled = a 1x1 convolution averaged over positions (reads local features, wherever they are); whole = the paper's kernel over the whole last feature map at the training size, so it reads where things are (at other sizes the map is pooled to that size first). On flowers5 photos G learnt to paint a colour band per class at a fixed place for it (README), so it is not the default.",
    )
    attention: bool = Field(False, description="GANimation's keep-mask: G also gives A in [0, 1] and its image is A * input + (1 - A) * G's colours, so untouched regions are the input's own.")
    lambda_mask: float = Field(0.0, ge=0, description="With options.attention: weight of the mean keep-mask (GANimation's 0.1 stops G keeping every pixel); 0 = off.")
    attributes: str = Field("", description="Multi-label domains: a CSV (file, attribute, ...; values 1, 0 or CelebA's -1), absolute or relative to data.root; its images are the training set. Empty: the folder's classes are the domains.")
    attribute_names: list[str] = Field(default_factory=list, description="With options.attributes: the columns to learn (the paper: 5 of CelebA's 40); empty: all.")


class StarGAN(AveragedGenerator, TranslationMethod):
    Options = StarGANOptions
    losses = ("wgan-gp", "lsgan", "ns", "hinge")  # loss.type values that fit; the paper's is wgan-gp
    reads = frozenset({"data.sampling", "loss.gp_weight", "train.n_dis", "train.diffaugment", "train.ada_target", "train.ada_kimg", "train.ada_interval",
                       "train.ema", "train.ema_decay", "train.ema_halflife_kimg", "train.ema_rampup"})
    evaluation_images = None  # no (latent, class) generator for the training-time gate

    def __init__(self, recipe, data: LabelledImages, precision):
        super().__init__(recipe, precision)
        self.options = method_options(recipe)
        t, channels = recipe.train, data.images.shape[1]
        self.num_classes = len(data.class_names)
        G, D = build_stargan(recipe, channels, self.num_classes)
        self.G, self.D = self._place(G), self._place(D)
        self.opt_G = self._adam(self.G, lr=t.lr_g)
        self.opt_D = self._adam(self.D, lr=t.lr_d)
        batches = BatchDrawer(data, t.batch_size, recipe.data.sampling, recipe.data.hflip, recipe.seed)
        self.domains = AttributeDomains(batches, data) if isinstance(data, AttributedImages) else ClassDomains(batches, data)
        self.gp_weight = gp_weight(recipe.loss)
        self.images_per_step = t.batch_size * (t.n_dis + 1)
        self.augment = AdaptiveAugment.from_recipe(recipe)
        self.ema = EMA.from_recipe(self.G, t)

    @staticmethod
    def load_data(recipe):
        """A labelled folder (classes = domains), or with options.attributes the CSV's images and attribute vectors."""
        options = method_options(recipe)
        if not options.attributes.strip():
            return ConditionalGAN.load_data(recipe)  # a labelled folder, classes = domains
        d = recipe.data
        data = load_attributed(d.root, options.attributes, options.attribute_names, d.image_size, d.channels, d.resize)
        _, channels, size, _ = data.images.shape
        return data, recipe.model_copy(update={"data": d.model_copy(update={"image_size": size, "channels": channels})})

    @staticmethod
    def check_recipe(recipe) -> None:
        if recipe.model.translator != "resnet":
            raise ValueError(f"model.translator: stargan's G is the resnet translator with domain planes joined to the input; use resnet (got {recipe.model.translator})")
        if recipe.model.norm != "batch":  # see models/stargan.py
            raise ValueError("model.norm: instance norm removes stargan's constant target planes (G cannot see the target class); use batch")
        options = method_options(recipe)
        if options.lambda_mask > 0 and not options.attention:
            raise ValueError(f"options.lambda_mask: {options.lambda_mask} weighs the keep-mask of options.attention, which is off; set options.attention: true or lambda_mask: 0")

    # --- state the loop saves and restores: the networks (G_ema too), ADA's p ---

    @property
    def networks(self) -> dict:
        return {**super().networks, **self.averaged_networks()}

    def random_inputs(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, target domains) for `n` random translations: what G_ema's batch norm is recalibrated on."""
        return self.domains.random_inputs(n, gen)

    def training_state(self) -> dict:
        return {"augment": self.augment.state()}

    def load_training_state(self, state: dict) -> None:
        if "augment" in state:
            self.augment.load_state(state["augment"])

    # --- one step ------------------------------------------------------------

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return self._input(self.augment(x))

    def discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        real, domains = self.domains.real(step, sub, self.device)
        real = self._input(real)
        with self.precision.autocast():
            with torch.no_grad():
                fake = self.G(real, self.domains.targets(step, sub, domains))
            real, fake = self._augment(real), self._augment(fake)  # what D sees; the penalty below lies between them
            real_src, real_cls = self.D(real)
            fake_src, _ = self.D(fake)
            adversarial = self.loss.discriminator(real_src, fake_src)
            cls = self.domains.loss(real_cls, domains)
            total = adversarial + self.options.lambda_cls * cls
            terms = {"d_loss": adversarial, "d_cls": cls}
            if self.gp_weight > 0:
                gp = gradient_penalty(lambda mixed: self.D(mixed)[0], real, fake)
                total = total + self.gp_weight * gp
                terms["gp"] = gp
        self._update(self.opt_D, self.scaler_D, total)
        self.augment.observe(real_src, fake_src)
        return terms

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        n_dis = self.recipe.train.n_dis
        real, domains = self.domains.real(step, n_dis, self.device)
        real, targets = self._input(real), self.domains.targets(step, n_dis, domains)
        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            fake, keep = self.G.edit(real, targets)
            fake_src, fake_cls = self.D(self._augment(fake))
            adversarial = self.loss.generator(fake_src)
            cls = self.domains.loss(fake_cls, targets)
            with running_stats_kept(self.G):  # G's running statistics are those of the translation above alone
                rec = (self.G(self._cycle_input(fake), domains).float() - real.float()).abs().mean()
                identity_weight = self.identity_weight(step)
                identity = (self.G(real, domains).float() - real.float()).abs().mean() if identity_weight > 0 else None
            total = adversarial + self.options.lambda_cls * cls + self.options.lambda_rec * rec
            terms = {"g_loss": adversarial, "g_cls": cls, "cycle": rec}
            if identity is not None:
                terms["identity"] = identity
                total = total + identity_weight * identity
            if keep is not None:
                terms["keep"] = keep.float().mean()  # logged with or without its penalty
                total = total + self.options.lambda_mask * terms["keep"]
        self._update(self.opt_G, self.scaler_G, total)
        self.D.requires_grad_(True)
        self.update_average(step)
        return terms

    def identity_weight(self, step: int) -> float:
        """options.lambda_id, from options.lambda_rec at step 0 down to it over options.identity_warmup steps."""
        o = self.options
        left = max(0.0, 1.0 - step / o.identity_warmup) if o.identity_warmup else 0.0
        return o.lambda_id + left * max(0.0, o.lambda_rec - o.lambda_id)

    def _cycle_input(self, fake: torch.Tensor) -> torch.Tensor:
        """What the cycle translates back: G's image, blurred with options.cycle_blur, plus noise with
        options.cycle_noise. A translator trained with a cycle term learns to hide its input in a faint pattern D
        does not see and the way back decodes (Chu et al. 2017, "CycleGAN, a master of steganography"); noise wipes
        out a faint pattern, and blur a fine one however strong."""
        o = self.options
        if o.cycle_blur > 0:
            radius = max(1, math.ceil(3 * o.cycle_blur))
            fake = gaussian_blur(fake, [2 * radius + 1] * 2, [o.cycle_blur] * 2)
        if o.cycle_noise > 0:
            fake = fake + o.cycle_noise * torch.randn_like(fake)
        return fake

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        return {**alternating_updates(self, step), **self.augment.adjusted_terms(step)}

    @torch.no_grad()
    def grid_images(self) -> tuple[torch.Tensor, int]:
        """One row per input: the input, then its translation into every domain (classes: the column of its own ~ itself;
        attributes: each one flipped in turn)."""
        inputs, codes = self.domains.grid_inputs
        x = self._to_model(inputs)
        G = self.sampling_generator
        with eval_mode(G):
            columns = [x] + [G(x, target.to(self.device)) for target in self.domains.grid_targets(codes)]
        return self._grid(columns)


# --- what a domain is: a class, or a vector of binary attributes --------------------------


class ClassDomains:
    """One class per image (the folder's subfolders): codes are class indices, D_cls a softmax over them."""

    def __init__(self, batches: BatchDrawer, data: LabelledImages):
        self.batches, self.num_classes, self.images = batches, len(data.class_names), data.images
        picks = torch.cat([torch.nonzero(data.labels == k).flatten()[:GRID_INPUTS] for k in range(self.num_classes)])
        self.grid_inputs = data.images[picks], data.labels[picks]  # the same in every grid of a run

    def real(self, step: int, sub: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches.real(step, sub, device)

    def targets(self, step: int, sub: int, codes: torch.Tensor) -> torch.Tensor:
        """Random other (or the same) classes, drawn as the data's sampling says."""
        return self.batches.fake_labels(step, sub, codes.device)

    @staticmethod
    def loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), codes)

    def grid_targets(self, codes: torch.Tensor) -> list[torch.Tensor]:
        return [torch.full_like(codes, k) for k in range(self.num_classes)]

    def random_inputs(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random real images (model range) and random target classes, drawn from `gen`: what G translates."""
        rows = torch.randint(len(self.images), (n,), generator=gen)
        return to_model(self.images[rows]), torch.randint(self.num_classes, (n,), generator=gen)


class AttributeDomains:
    """Binary attributes per image (options.attributes): codes are 0/1 vectors, D_cls one sigmoid per attribute."""

    def __init__(self, batches: BatchDrawer, data: AttributedImages):
        self.batches, self.attributes, self.images = batches, data.attributes, data.images
        rows = torch.arange(min(len(data), GRID_INPUTS * 4))
        self.grid_inputs = data.images[rows], data.attributes[rows]

    def real(self, step: int, sub: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        images, _, rows = self.batches.real_rows(step, sub, device)
        return images, self.attributes[rows].to(device)

    def targets(self, step: int, sub: int, codes: torch.Tensor) -> torch.Tensor:
        """The batch's own attribute vectors in a seeded random order (the paper's label_trg = label_org[randperm])."""
        order = torch.randperm(len(codes), generator=self.batches.generator(step, sub, stream=3))
        return codes[order.to(codes.device)]

    @staticmethod
    def loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The paper's: binary cross-entropy summed over the attributes, averaged over the batch."""
        return F.binary_cross_entropy_with_logits(logits.float(), codes.float(), reduction="sum") / len(codes)

    def random_inputs(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random real images (model range) and, as targets, the attribute vectors of n other random images."""
        rows, others = torch.randint(len(self.images), (2, n), generator=gen)
        return to_model(self.images[rows]), self.attributes[others]

    @staticmethod
    def grid_targets(codes: torch.Tensor) -> list[torch.Tensor]:
        flips = []
        for k in range(codes.shape[1]):
            flipped = codes.clone()
            flipped[:, k] = 1 - flipped[:, k]
            flips.append(flipped)
        return flips
