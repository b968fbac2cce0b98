"""Text-to-image: GAN-CLS and GAN-INT (Reed et al. 2016) with StackGAN's conditioning augmentation (Zhang et al. 2017).

Data: a captioned folder (data/captions.py). A word GRU phi turns a caption t
into an embedding; conditioning augmentation draws c ~ N(mu(phi), sigma(phi))
and G(z, c) draws the image. The matching-aware D scores (image, text) pairs:

    D:  log D(x, h) + 1/2 [log(1 - D(x, h_wrong)) + log(1 - D(G(z, h), h))]     (GAN-CLS, weights 1/2 as the paper)
    G:  log D(G(z, h), h) + int_weight * log D(G(z', h_int), h_int) - kl_weight * KL(N(mu, sigma) || N(0, I))
        h_int = beta h1 + (1 - beta) h2, two captions of other images (GAN-INT, beta = 0.5)

written as losses to minimise (softplus of the logits). h_wrong is a caption of
another image whose text differs from x's own.

How the text encoder learns: jointly, through D's loss alone (phi is updated by
D's optimiser, and G sees phi's embeddings detached). Reed et al. trained
their char-CNN-RNN beforehand with a structured joint embedding of images and
captions; the matching-aware loss is the same kind of signal (this caption
goes with this image, that one does not), so it can train phi from scratch. G's
gradient is kept out of phi on purpose: G could lower its own loss by moving
the embeddings of different captions together, which is exactly what would make
mismatches undetectable and the conditioning meaningless.

phi lives inside G's module (models/text2image.py), so G_ema and G both carry it
and `synthgen sample --text` needs one weights file and the vocabulary (kept in
each checkpoint's state.json, method_state.vocabulary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from synthgen.data.captions import CaptionedImages, Vocabulary, load_captioned
from synthgen.data.diffaugment import AdaptiveAugment
from synthgen.errors import SynthgenError
from synthgen.imaging import to_model
from synthgen.models.text2image import MatchingDiscriminator, TextToImageGenerator
from synthgen.models.text_encoder import kl_to_standard_normal
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN, adam, alternating_updates
from synthgen.train.ema import EMA


class Text2ImageOptions(Section):
    vocabulary_size: int = Field(0, ge=0, description="Words known to the text encoder: set by training from the captions (leave 0).")
    min_count: int = Field(1, ge=1, description="A word enters the vocabulary when it appears this often in the captions (rarer ones: <unk>).")
    max_words: int = Field(16, ge=1, description="Words of a caption the encoder reads (the rest is cut).")
    embed_dim: int = Field(64, ge=1, description="Word embedding size.")
    text_dim: int = Field(128, ge=1, description="Text embedding size phi(t): the GRU's state.")
    c_dim: int = Field(32, ge=1, description="Conditioning augmentation's output c joined to z (StackGAN: 128).")
    kl_weight: float = Field(1.0, ge=0, description="Weight of KL(N(mu, sigma) || N(0, I)) in G's loss, the KL averaged per dimension as StackGAN's code does (StackGAN: 1).")
    mismatch_weight: float = Field(0.5, ge=0, le=1, description="D's weight of real image + wrong text; fake + right text gets 1 - this (GAN-CLS: 0.5).")
    int_weight: float = Field(1.0, ge=0, description="Weight of G's loss on interpolated embeddings (GAN-INT; 0 = off).")
    int_beta: float = Field(0.5, ge=0, le=1, description="GAN-INT: h = beta h1 + (1 - beta) h2 (the paper: 0.5).")
    d_text_dim: int = Field(64, ge=1, description="D's projection of the text embedding, matched with its image features (Reed: 128).")
    lr_text: float = Field(1e-3, gt=0, description="Learning rate of the text encoder (trained by D's loss, beside D's lr_d).")


def gan_cls_discriminator_loss(real_right: torch.Tensor, real_wrong: torch.Tensor, fake_right: torch.Tensor, mismatch_weight: float = 0.5) -> torch.Tensor:
    """-[log D(x, h) + w log(1 - D(x, h_wrong)) + (1 - w) log(1 - D(x_fake, h))] from logits, each averaged over the batch."""
    return F.softplus(-real_right.float()).mean() + mismatch_weight * F.softplus(real_wrong.float()).mean() + (1 - mismatch_weight) * F.softplus(fake_right.float()).mean()


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z, h), h) from logits."""
    return F.softplus(-fake_logits.float()).mean()


class CaptionBatches:
    """Which images and captions each step uses, from generators seeded by (seed, step, sub-step, stream): resumable exactly."""

    def __init__(self, data: CaptionedImages, batch_size: int, seed: int, max_words: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.ids = data.vocabulary.encode(data.captions, max_words)  # [M, L] every caption, encoded once
        _, self.text_id = torch.unique(self.ids, dim=0, return_inverse=True)  # equal word ids: the same text
        order = torch.argsort(data.caption_image, stable=True)
        counts = torch.bincount(data.caption_image, minlength=len(data.images))
        self.first = torch.cumsum(counts, 0) - counts  # image i's captions: order[first[i] : first[i] + counts[i]]
        self.order, self.counts = order, counts
        if int(self.text_id.max()) == 0:
            raise SynthgenError("data.root: every caption says the same; text2image needs captions that differ")

    def _generator(self, step: int, sub: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, step, sub, stream)) & 0x7FFF_FFFF_FFFF_FFFF)

    def _caption_of(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One of each image's captions, at random."""
        pick = (torch.rand(len(images), generator=gen, dtype=torch.float64) * self.counts[images]).long()
        return self.order[self.first[images] + pick]

    def _differing(self, captions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """For each caption, a random caption with other text (redrawn where the draw said the same)."""
        wrong = torch.randint(0, len(self.ids), (len(captions),), generator=gen)
        for _ in range(100):
            same = self.text_id[wrong] == self.text_id[captions]
            if not same.any():
                break
            wrong[same] = torch.randint(0, len(self.ids), (int(same.sum()),), generator=gen)
        return wrong

    def real(self, step: int, sub: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Real images in [-1, 1], the ids of one of their captions, and the ids of a differing caption."""
        gen = self._generator(step, sub, 0)
        images = torch.randint(0, len(self.data.images), (self.batch_size,), generator=gen)
        right = self._caption_of(images, gen)
        wrong = self._differing(right, gen)
        return to_model(self.data.images[images]).to(device), self.ids[right].to(device), self.ids[wrong].to(device)

    def captions(self, step: int, sub: int, device, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two batches of caption ids for G: h1 (G's condition) and h2 (the other end of GAN-INT's interpolation)."""
        gen = self._generator(step, sub, 1)
        first = torch.randint(0, len(self.ids), (n or self.batch_size,), generator=gen)
        return self.ids[first].to(device), self.ids[self._differing(first, gen)].to(device)


class Text2Image(ConditionalGAN):
    """GAN-CLS + GAN-INT + conditioning augmentation; reuses ConditionalGAN's saving, EMA and update helpers."""

    # The caption conditions (no conditioning.*); D's loss is GAN-CLS's own, without penalties or LeCam; no
    # per-class evaluation at checkpoints for train.patience to stop on.
    reads = ConditionalGAN.reads - {
        "data.sampling",  # captions are drawn uniformly (CaptionBatches)
        "conditioning.type", "conditioning.aux_weight", "loss.gp_weight", "loss.r1_gamma", "loss.r2_gamma", "loss.r1_every",
        "loss.lecam_weight", "loss.lecam_decay", "train.unroll_steps", "train.unroll_backprop", "train.patience",
    }

    Options = Text2ImageOptions
    text_conditioned = True  # `synthgen sample --text` / --captions
    distributed = False  # its text encoder and caption batches are not sharded
    evaluation_images = None  # no per-class generator: the loop's KID evaluation and the gate do not apply

    def __init__(self, recipe, data: CaptionedImages, precision):
        self.recipe, self.precision, self.device = recipe, precision, precision.device
        self.options = method_options(recipe)
        self.vocabulary, self.num_classes = data.vocabulary, 1
        t, fmt = recipe.train, precision.memory_format
        self.G, self.D = (m.to(self.device, memory_format=fmt) for m in self.build_networks(recipe, 1))
        self.G_train, self.D_train = self.G, self.D  # single process: see check_recipe
        self.ema = EMA.from_recipe(self.G, t)
        # phi is trained by D's loss (module docstring): its parameters sit in D's optimiser.
        encoder = set(map(id, self.G.encoder.parameters()))
        self.opt_G = adam([p for p in self.G.parameters() if id(p) not in encoder], t.lr_g, (t.beta1, t.beta2))
        groups = [{"params": list(self.D.parameters())}, {"params": list(self.G.encoder.parameters()), "lr": self.options.lr_text}]
        self.opt_D = adam(groups, t.lr_d, (t.beta1, t.beta2))
        self.scaler_G, self.scaler_D = precision.grad_scaler(), precision.grad_scaler()
        self.batches = CaptionBatches(data, t.batch_size, recipe.seed, self.options.max_words)
        self.images_per_step = t.batch_size * t.n_dis
        self.augment = AdaptiveAugment.from_recipe(recipe)
        self.latent_dim = recipe.model.z_dim + self.options.c_dim

    @staticmethod
    def check_recipe(recipe) -> None:
        loss = recipe.loss
        if loss.type != "ns":
            raise ValueError(f"loss.type: text2image uses ns, the paper's log loss (got {loss.type})")
        if recipe.model.pack > 1:
            raise ValueError("model.pack: text2image's D judges one (image, caption) pair at a time; use 1")
        if recipe.data.hflip:
            raise ValueError("data.hflip: captions may say left or right; use false")

    @staticmethod
    def load_data(recipe) -> tuple[CaptionedImages, object]:
        """The captioned folder, and the recipe with `auto` size and channels and the vocabulary size resolved."""
        d, options = recipe.data, method_options(recipe)
        data = load_captioned(d.root, d.image_size, d.channels, d.resize, options.min_count)
        _, channels, size, _ = data.images.shape
        return data, recipe.model_copy(update={
            "data": d.model_copy(update={"image_size": size, "channels": channels}),
            "options": {**recipe.options, "vocabulary_size": len(data.vocabulary)},
        })

    @staticmethod
    def build_networks(recipe, num_classes: int):  # noqa: ARG004 - one class: the caption conditions
        options = method_options(recipe)
        if options.vocabulary_size < 3:
            raise SynthgenError("options.vocabulary_size: not set; it comes from the captions when training")
        return TextToImageGenerator(recipe, options), MatchingDiscriminator(recipe, options)

    # --- state: the vocabulary travels with every checkpoint ---------------------------

    def training_state(self) -> dict:
        return {"augment": self.augment.state(), "vocabulary": self.vocabulary.to_json()}

    def load_training_state(self, state: dict) -> None:
        if "augment" in state:
            self.augment.load_state(state["augment"])
        if state.get("vocabulary", self.vocabulary.to_json()) != self.vocabulary.to_json():
            raise SynthgenError("--resume: the captions give another vocabulary than the run's; start a new run with --set name=...")

    @staticmethod
    def prompt_vocabulary(checkpoint) -> Vocabulary:
        return Vocabulary.from_json(checkpoint.state.get("method_state", {}).get("vocabulary"), f"{checkpoint.path}/state.json")

    @staticmethod
    def prompt_ids(recipe, vocabulary: Vocabulary, prompts: list[str]) -> torch.Tensor:
        """Word ids [len(prompts), max_words] of prompts, as the captions were encoded in training."""
        return vocabulary.encode(prompts, method_options(recipe).max_words)

    @staticmethod
    def latent(recipe, seed: int, truncation: float | None) -> torch.Tensor:
        """[z, eps] of image `seed`: G's noise and conditioning augmentation's."""
        from synthgen.sample import latent

        return latent(seed, recipe.model.z_dim + method_options(recipe).c_dim, truncation)

    # --- one step ---------------------------------------------------------------------

    def _noise(self, n: int | None = None) -> torch.Tensor:
        return torch.randn(n or self.recipe.train.batch_size, self.latent_dim, device=self.device)

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        real, right, wrong = self.batches.real(step, sub, self.device)
        with self.precision.autocast():
            phi_right, phi_wrong = self.G.encoder(right), self.G.encoder(wrong)  # with gradient: phi learns here
            with torch.no_grad():
                fake = self.G.from_embedding(self._noise(), phi_right.detach())[0]
            real_in = self._augment(real)
            s_right, s_wrong = self.D(real_in, phi_right), self.D(real_in, phi_wrong)
            s_fake = self.D(self._augment(fake), phi_right)
            loss = gan_cls_discriminator_loss(s_right, s_wrong, s_fake, self.options.mismatch_weight)
        self._update(self.opt_D, self.scaler_D, loss)
        self.augment.observe(s_right, s_fake)
        with torch.no_grad():  # how often D ranks a real image's own caption above a wrong one (chance: 0.5)
            matched = (s_right > s_wrong).float().mean()
        return {"d_loss": loss, "d_match": matched}

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        first, second = self.batches.captions(step, self.recipe.train.n_dis, self.device)
        self.D.requires_grad_(False)
        o = self.options
        with self.precision.autocast():
            with torch.no_grad():  # G's gradient stays out of phi (module docstring)
                h1, h2 = self.G.encoder(first), self.G.encoder(second)
            fake, mu, logvar = self.G_train.from_embedding(self._noise(), h1)
            adversarial = non_saturating_generator_loss(self.D(self._augment(fake), h1))
            kl = kl_to_standard_normal(mu, logvar)
            total = adversarial + o.kl_weight * kl
            terms = {"g_loss": adversarial, "kl": kl}
            if o.int_weight > 0:  # GAN-INT: conditions between captions, judged by D's text head as usual
                h_int = o.int_beta * h1 + (1 - o.int_beta) * h2
                fake_int, mu_int, logvar_int = self.G_train.from_embedding(self._noise(), h_int)
                terms["g_int"] = non_saturating_generator_loss(self.D(self._augment(fake_int), h_int))
                total = total + o.int_weight * terms["g_int"] + o.kl_weight * kl_to_standard_normal(mu_int, logvar_int)
        self._update(self.opt_G, self.scaler_G, total)
        self._after_generator_update(step)
        return terms

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        return {**alternating_updates(self, step), **self.augment.adjusted_terms(step)}  # without ConditionalGAN's AC-GAN terms

    # --- sampling, grids ----------------------------------------------------------------

    def random_inputs(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent, caption ids) for `n` random samples from `gen`: G's inputs outside training (batch-norm recalibration)."""
        z = torch.randn(n, self.latent_dim, generator=gen)
        return z, self.batches.ids[torch.randint(0, len(self.batches.ids), (n,), generator=gen)]

    @torch.no_grad()
    def grid_images(self, columns: int = 8, max_rows: int = 16) -> tuple[torch.Tensor, int]:
        """One row per distinct training caption (the first ones), the same latents in every row."""
        gen = torch.Generator().manual_seed(self.recipe.seed + 1)
        distinct = sorted({int(t): i for i, t in reversed(list(enumerate(self.batches.text_id.tolist())))}.values())[:max_rows]
        ids = self.batches.ids[distinct].repeat_interleave(columns, dim=0)
        z = torch.randn(columns, self.latent_dim, generator=gen).repeat(len(distinct), 1)
        return self._draw(z, ids), columns
