"""SGAN, the semi-supervised GAN (Odena 2016; Salimans et al. 2016): a few labels, many unlabelled images.

D is a K-class classifier (models/sgan.py) whose real-vs-fake logit is the
logsumexp of its K class logits. Per D step it minimises
    cross-entropy(D(x_labelled), y)                               (supervised)
  + unsupervised_weight * GAN loss(lse D(x_unlabelled), lse D(G(z)))  (unsupervised)
  + entropy_weight * H(softmax D(x_unlabelled))                 (optional: confident on unlabelled images)
  + consistency_weight * |softmax D(x) - softmax D(shift(x))|^2   (optional: the same class for a shifted copy)
so the unlabelled images shape the classifier's features: it must tell
every real image from G's, and the better G gets the finer those features.
G either matches the mean of D's trunk features on unlabelled images
(feature matching, ||E f(x) - E f(G(z))||^2: Salimans et al.'s best
semi-supervised results) or fools lse D directly.

The trained D is the product: `synthgen classify DIR --weights RUN`. With
options.conditional_g, G also takes the class (pushed to it by D's
cross-entropy on its images, as in AC-GAN) and `synthgen sample` works.
options.supervised_only trains the same D on the labelled images alone, with
the same steps and batches: the baseline that says what the unlabelled
images and G bought.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field

from synthgen.data.batches import BatchDrawer
from synthgen.data.diffaugment import whole_pixel_shift
from synthgen.data.loading import LabelledImages, load_unlabelled
from synthgen.errors import SynthgenError
from synthgen.models.conditioning import build_models
from synthgen.models.sgan import build_classifier_discriminator, real_logit
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN

# Adversarial losses of D's real logit that fit it; the penalties and relativistic losses need D's other outputs.
SGAN_LOSSES = ("ns", "minimax", "hinge")


class SGANOptions(Section):
    unlabelled: str = Field(
        "", description="Folder of unlabelled images (any layout, searched recursively, folder names ignored); the labelled data.root images count as unlabelled too. Empty: only those."
    )
    feature_matching: bool = Field(True, description="G matches the mean of D's trunk features on unlabelled images (Salimans et al. 2016) instead of fooling D.")
    unsupervised_weight: float = Field(1.0, ge=0, description="Weight of the unsupervised GAN loss against the supervised cross-entropy on labelled images.")
    entropy_weight: float = Field(
        0.0, ge=0, description="Weight of the class entropy of D's predictions on unlabelled images, minimised (Grandvalet & Bengio 2005; Dai et al. 2017's bad-GAN SSL); 0 = off."
    )
    consistency_weight: float = Field(
        0.0, ge=0,
        description="Weight of the consistency term: D's class probabilities on a shifted copy of each real image match those on the image (Laine & Aila 2017's Pi-model; CT-GAN, Wei et al. 2018), ramped up over the first quarter of train.steps (under train.budget too, where steps is the upper limit: a run the budget stops early may not reach the full weight; counting steps keeps a resumed run equal to an uninterrupted one); on unlabelled images (on the labelled ones with supervised_only); 0 = off.",
    )
    dropout: float = Field(0.5, ge=0, lt=1, description="Dropout on D's trunk features before its classifier (regularises the few labels).")
    conditional_g: bool = Field(False, description="G takes the class too (AC-GAN-style cross-entropy on its images), so `synthgen sample` can draw a class.")
    supervised_only: bool = Field(False, description="The baseline: train D on the labelled images alone (no G, no unlabelled images), same steps and batches.")


@dataclass
class SemiSupervisedImages(LabelledImages):
    """The labelled images plus the unlabelled ones (uint8 [M, C, H, W], same size and channels)."""

    unlabelled: torch.Tensor | None = None

    def describe(self) -> dict:
        return {**super().describe(), "num_unlabelled": len(self.unlabelled)}


class SemiSupervisedGAN(ConditionalGAN):
    Options = SGANOptions
    # D is a classifier first: no gradient penalties or LeCam on its logsumexp logit.
    # ADA's r_v (train.ada_heldout): its D step has no held-out view.
    reads = ConditionalGAN.reads - {"loss.gp_weight", "loss.r1_gamma", "loss.r2_gamma", "loss.r1_every", "loss.lecam_weight", "loss.lecam_decay",
                                    "train.ada_heldout"}

    def __init__(self, recipe, data: SemiSupervisedImages, precision):
        super().__init__(recipe, data, precision)
        self.options = method_options(recipe)
        t = recipe.train
        if not self.options.conditional_g:
            # What G generates (grids, BN recalibration) is one class; there is no per-class G to evaluate.
            self.num_classes = 1
            self.evaluation_images = None
        # Unlabelled batches come from the unlabelled images and the labelled ones (labels unused), drawn uniformly.
        pool = torch.cat([data.unlabelled, data.images])
        unlabelled = LabelledImages(pool, torch.zeros(len(pool), dtype=torch.long), ["unlabelled"])
        shard = (self.batches.rank, self.batches.world_size)
        self.unlabelled = BatchDrawer(unlabelled, t.batch_size, "natural", recipe.data.hflip, recipe.seed + 1, shard)
        self.images_per_step = t.batch_size * t.n_dis * (1 if self.options.supervised_only else 2)

    @staticmethod
    def check_recipe(recipe) -> None:
        if recipe.model.pack > 1:
            raise ValueError("model.pack: sgan's D classifies each image; use 1")
        if recipe.model.minibatch_discrimination.kernels:
            raise ValueError("model.minibatch_discrimination: sgan's D is a classifier without it; use kernels: 0")
        if recipe.train.patience and not method_options(recipe).conditional_g:  # see __init__: no per-class G to evaluate
            raise ValueError(f"train.patience: {recipe.train.patience} stops on the per-class evaluation at checkpoints, which sgan's unconditional G does not have; set options.conditional_g: true or use patience 0")
        if recipe.loss.type not in SGAN_LOSSES:
            raise ValueError(f"loss.type: sgan applies the loss to D's logsumexp logit; use one of {', '.join(SGAN_LOSSES)} (got {recipe.loss.type})")

    @staticmethod
    def load_data(recipe):
        data, recipe = ConditionalGAN.load_data(recipe)
        d, folder = recipe.data, method_options(recipe).unlabelled
        if folder.strip():
            extra = load_unlabelled(folder, d.image_size, d.channels, d.resize)
            unlabelled, unreadable = extra.images, data.unreadable + extra.unreadable
        else:
            unlabelled, unreadable = data.images[:0], data.unreadable
        return SemiSupervisedImages(data.images, data.labels, data.class_names, unreadable, unlabelled), recipe

    @staticmethod
    def build_networks(recipe, num_classes: int):
        options = method_options(recipe)
        generator = build_models(recipe, num_classes if options.conditional_g else 1)[0]
        return generator, build_classifier_discriminator(recipe, num_classes, options.dropout)

    @classmethod
    def sampling_network(cls, recipe, num_classes: int) -> torch.nn.Module:
        if not method_options(recipe).conditional_g:
            raise SynthgenError(
                "this sgan run has an unconditional G (options.conditional_g: false), so it cannot draw a chosen class; "
                "its product is the classifier (synthgen classify DIR --weights RUN), or train with --set options.conditional_g=true"
            )
        return super().sampling_network(recipe, num_classes)

    @classmethod
    def classifier_network(cls, recipe, num_classes: int) -> torch.nn.Module:
        """The network `synthgen classify` runs: D, whose K logits are the classes."""
        return cls.build_networks(recipe, num_classes)[1]

    # --- one step ------------------------------------------------------------

    def _fake_classes(self, step: int, sub: int) -> torch.Tensor:
        if self.options.conditional_g:
            return self.batches.fake_labels(step, sub, self.device)
        return torch.zeros(self.batches.shard_size, dtype=torch.long, device=self.device)

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        labelled, labels = self.batches.real(step, sub, self.device)
        with self.precision.autocast():
            labelled_logits = self.D_train(self._augment(labelled))[0]
            supervised = F.cross_entropy(labelled_logits.float(), labels)
            total, terms = supervised, {"d_supervised": supervised}
            if not self.options.supervised_only:
                unlabelled, _ = self.unlabelled.real(step, sub, self.device)
                with torch.no_grad():
                    fake = self.G(self._noise(), self._fake_classes(step, sub))
                unlabelled_logits = self.D_train(self._augment(unlabelled))[0]
                real = real_logit(unlabelled_logits)
                unsupervised = self.loss.discriminator(real, real_logit(self.D_train(self._augment(fake))[0]))
                total = total + self.options.unsupervised_weight * unsupervised
                terms["d_loss"] = unsupervised
                if self.options.entropy_weight:
                    terms["d_entropy"] = class_entropy(unlabelled_logits.float())
                    total = total + self.options.entropy_weight * terms["d_entropy"]
            if self.options.consistency_weight:
                images, logits = (labelled, labelled_logits) if self.options.supervised_only else (unlabelled, unlabelled_logits)
                shifted = self.D_train(self._augment(whole_pixel_shift(images)))[0]
                terms["d_consistency"] = consistency(logits.float(), shifted.float())
                total = total + self.options.consistency_weight * self._ramp_up(step) * terms["d_consistency"]
        self._update(self.opt_D, self.scaler_D, total)
        if not self.options.supervised_only:
            self.augment.observe(real, None)
        return terms

    def _ramp_up(self, step: int) -> float:
        """0 -> 1 over the first quarter of the steps: early on D's predictions are noise, and making them agree
        would pull every image toward one class (Laine & Aila ramp their weight up for the same reason)."""
        return min(1.0, (step + 1) / max(1, self.recipe.train.steps // 4))

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        if self.options.supervised_only:
            return {}
        n_dis = self.recipe.train.n_dis
        y_fake = self._fake_classes(step, n_dis)
        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            fake_logits, fake_features = self.D(self._augment(self.G_train(self._noise(), y_fake)))
            if self.options.feature_matching:
                unlabelled, _ = self.unlabelled.real(step, n_dis, self.device)
                with torch.no_grad():
                    real_features = self.D(self._augment(unlabelled))[1]
                adversarial = feature_matching(real_features, fake_features)
            else:
                adversarial = self.loss.generator(real_logit(fake_logits))
            terms = {"g_loss": adversarial}
            total = adversarial
            if self.options.conditional_g:  # G is pushed to draw the class it was given
                terms["g_class"] = F.cross_entropy(fake_logits.float(), y_fake)
                total = total + self.recipe.conditioning.aux_weight * terms["g_class"]
        self._update(self.opt_G, self.scaler_G, total)
        self._after_generator_update(step)
        return terms


def class_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the class distributions softmax(logits) [B, K]."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def consistency(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Laine & Aila 2017's Pi-model term: squared distance between the two class distributions, summed over classes, mean over the batch."""
    return (F.softmax(logits, dim=1) - F.softmax(other_logits, dim=1)).pow(2).sum(dim=1).mean()


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016: ||E f(x) - E f(G(z))||_2^2 over a batch of each, in float32."""
    return (real_features.float().mean(dim=0) - fake_features.float().mean(dim=0)).pow(2).sum()
