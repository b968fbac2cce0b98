"""The conditional GAN method: one discriminator step (or n_dis), then one generator step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.utils import parametrize

from synthgen import distributed
from synthgen.data.batches import BatchDrawer
from synthgen.data.diffaugment import AdaptiveAugment
from synthgen.data.loading import LabelledImages, load_labelled
from synthgen.losses import LOSSES, gp_weight, gradient_penalty, zero_centred_penalty
from synthgen.models.conditioning import build_models
from synthgen.precision import Precision
from synthgen.train.ema import EMA, AveragedGenerator
from synthgen.train.schedule import penalty_factor
from synthgen.train.translation import eval_mode
from synthgen.train.unroll import unrolled_weights


def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    # fused: one kernel for the whole update instead of a handful of ops per
    # tensor (CPU and CUDA); the same maths, state dict and checkpoints.
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class LeCam:
    """LeCam regularisation (Tseng et al. 2021): D's outputs pulled toward the other side's moving average.

    R = E (D(real) - a_fake)^2 + E (D(fake) - a_real)^2, with a_real, a_fake
    exponential moving averages of D's mean outputs; it keeps D from driving
    real and fake logits apart on a small dataset.
    """

    def __init__(self, weight: float, decay: float):
        self.weight, self.decay = weight, decay
        self.real_average = self.fake_average = 0.0

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real, fake = real_logits.float(), fake_logits.float()
        self.real_average = self.decay * self.real_average + (1 - self.decay) * float(real.detach().mean())
        self.fake_average = self.decay * self.fake_average + (1 - self.decay) * float(fake.detach().mean())
        return (real - self.fake_average).pow(2).mean() + (fake - self.real_average).pow(2).mean()

    def state(self) -> dict:
        return {"real_average": self.real_average, "fake_average": self.fake_average}

    def load_state(self, state: dict) -> None:
        self.real_average, self.fake_average = float(state["real_average"]), float(state["fake_average"])


def alternating_updates(method, step: int) -> dict[str, torch.Tensor]:
    """One training step of a method with discriminator_step / generator_step: train.n_dis D updates, then
    one G update; the last D update's terms and G's, detached."""
    terms: dict[str, torch.Tensor] = {}
    for sub in range(method.recipe.train.n_dis):
        terms = method.discriminator_step(step, sub)
    terms.update(method.generator_step(step))
    return {k: v.detach() for k, v in terms.items()}


class ConditionalGAN(AveragedGenerator):
    """Owns G, D, EMA-G and their optimisers; `train_step` is one generator update.

    Under torch.distributed, G and D train through DDP wrappers (gradients
    averaged across processes) while `self.G` / `self.D` stay the plain
    networks that are saved, sampled from and used where no gradient of their
    own is needed (G's forward for the D step, D's forward for the G step).
    """

    produces = "images"  # runs are used by `synthgen sample`: (latent, class) -> image
    # data / train / loss / conditioning keys read beyond the loop's (loop.LOOP_KEYS); a family that uses fewer narrows this
    reads = frozenset({
        "data.sampling", "conditioning.type", "conditioning.aux_weight",
        "loss.gp_weight", "loss.r1_gamma", "loss.r2_gamma", "loss.r1_every", "loss.lecam_weight", "loss.lecam_decay",
        "train.n_dis", "train.unroll_steps", "train.unroll_backprop", "train.ema", "train.ema_decay", "train.ema_halflife_kimg",
        "train.ema_rampup", "train.diffaugment", "train.ada_target", "train.ada_kimg", "train.ada_interval", "train.ada_heldout",
        "train.patience",  # stops on the KID of the evaluation at checkpoints, which translators do not have
    })
    distributed = True  # trains under torchrun (DDP wrappers, sharded batches); a method that cannot says False

    def __init__(self, recipe, data: LabelledImages, precision: Precision):
        self.recipe, self.precision, self.device = recipe, precision, precision.device
        self.num_classes = len(data.class_names)
        t, fmt = recipe.train, precision.memory_format
        self.G, self.D = (m.to(self.device, memory_format=fmt) for m in self.build_networks(recipe, self.num_classes))
        self.ema = EMA.from_recipe(self.G, t)
        distributed.shard_size(t.batch_size, recipe.model.pack)  # the global batch must split evenly
        self.G_train, self.D_train = distributed.wrap(self.G, self.device), distributed.wrap(self.D, self.device)
        self.opt_G = adam(self.G.parameters(), t.lr_g, (t.beta1, t.beta2))
        self.opt_D = adam(self.D.parameters(), t.lr_d, (t.beta1, t.beta2))
        self.scaler_G, self.scaler_D = precision.grad_scaler(), precision.grad_scaler()
        shard = (distributed.rank(), distributed.world_size())
        self.augment = AdaptiveAugment.from_recipe(recipe)
        heldout = t.ada_heldout if self.augment.wants_heldout else 0.0  # with ADA off (no diffaugment) D trains on every image
        self.batches = BatchDrawer(data, t.batch_size, recipe.data.sampling, recipe.data.hflip, recipe.seed, shard, heldout)
        self.loss = LOSSES[recipe.loss.type]
        self.gp_weight = gp_weight(recipe.loss)
        self.images_per_step = t.batch_size * t.n_dis  # real images D sees per generator update (all processes)
        self.lecam = LeCam(recipe.loss.lecam_weight, recipe.loss.lecam_decay)

    @staticmethod
    def load_data(recipe) -> tuple[LabelledImages, object]:
        """The labelled folder as tensors, and the recipe with `auto` size and channels resolved."""
        d = recipe.data
        data = load_labelled(d.root, d.image_size, d.channels, d.resize)
        _, channels, size, _ = data.images.shape
        return data, recipe.model_copy(update={"data": d.model_copy(update={"image_size": size, "channels": channels})})

    @staticmethod
    def build_networks(recipe, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        """G and D, freshly initialised; a family with another D (BiGAN's joint D(x, z)) overrides this."""
        return build_models(recipe, num_classes)

    # --- state the loop saves and restores ---------------------------------

    @property
    def networks(self) -> dict:
        return {"G": self.G, "D": self.D, **self.averaged_networks()}

    @property
    def optimizers(self) -> dict:
        return {"G": self.opt_G, "D": self.opt_D}

    def training_state(self) -> dict:
        """JSON state beside weights and optimisers, saved in checkpoints and restored by --resume."""
        return {"augment": self.augment.state(), "lecam": self.lecam.state()}

    def load_training_state(self, state: dict) -> None:
        if "augment" in state:
            self.augment.load_state(state["augment"])
        if "lecam" in state:
            self.lecam.load_state(state["lecam"])

    # --- what `synthgen sample` rebuilds from a checkpoint (a subclass with other latents overrides) ---

    @classmethod
    def sampling_network(cls, recipe, num_classes: int) -> torch.nn.Module:
        """The network that maps (latent, class) to images, built empty for a checkpoint's weights."""
        return cls.build_networks(recipe, num_classes)[0]

    @staticmethod
    def latent(recipe, seed: int, truncation: float | None) -> torch.Tensor:
        """The latent vector image `seed` is generated from."""
        from synthgen.sample import latent

        return latent(seed, recipe.model.z_dim, truncation)

    # --- one step ------------------------------------------------------------

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x).contiguous(memory_format=self.precision.memory_format)

    def _class_loss(self, class_logits, labels) -> torch.Tensor:
        if class_logits is None:
            return torch.zeros((), device=self.device)
        return F.cross_entropy(class_logits.flatten(0, 1).float(), labels)

    def _noise(self) -> torch.Tensor:
        """G's input for one training batch: z, and whatever a family joins to it (InfoGAN's codes)."""
        z = torch.randn(self.batches.shard_size, self.recipe.model.z_dim, device=self.device)
        return self._with_codes(z)

    def _with_codes(self, z: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """z as G takes it: here z alone; InfoGAN joins latent codes drawn from `gen` (the global RNG when None)."""
        return z

    def _code_terms(self, latent: torch.Tensor, extra: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A loss on generated images from D's extra outputs (InfoGAN's mutual-information bound), added to
        both D's and G's loss, and the terms to log; none here."""
        return torch.zeros((), device=self.device), {}

    def discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        # Spectral norm's weights are computed once for the whole D update (one
        # power iteration, one W / sigma graph) and shared by the real, fake and
        # penalty passes, instead of once per pass.
        with parametrize.cached():
            return self._discriminator_step(step, sub)

    def _discriminator_step(self, step: int, sub: int) -> dict[str, torch.Tensor]:
        lcfg, aux_weight = self.recipe.loss, self.recipe.conditioning.aux_weight
        real, y_real = self.batches.real(step, sub, self.device)
        y_fake = self.batches.fake_labels(step, sub, self.device)
        d_step = step * self.recipe.train.n_dis + sub
        lazy = d_step % lcfg.r1_every == 0
        use_r1, use_r2 = lcfg.r1_gamma > 0 and lazy, lcfg.r2_gamma > 0 and lazy
        real.requires_grad_(use_r1)
        with self.precision.autocast():
            with torch.no_grad():
                latent = self._noise()
                fake = self.G(latent, y_fake)
            fake.requires_grad_(use_r2)
            real_in, fake_in = self._augment(real), self._augment(fake)
            real_logits, real_classes, *_ = self.D_train(real_in, y_real)
            fake_logits, fake_classes, *fake_extra = self.D_train(fake_in, y_fake)
            adversarial = self.loss.discriminator(real_logits, fake_logits)
            aux = self._class_loss(real_classes, y_real) + self._class_loss(fake_classes, y_fake)
            code_loss, code_terms = self._code_terms(latent, fake_extra)
            total = adversarial + aux_weight * aux + code_loss
            terms = {"d_loss": adversarial, "d_aux": aux, **code_terms}
            if self.gp_weight > 0:
                critic = lambda mixed: self.D_train(mixed, y_real)[0]  # noqa: E731
                gp = gradient_penalty(critic, real_in.detach(), fake_in.detach())
                total = total + self.gp_weight * gp
                terms["gp"] = gp
            penalty_scale = 0.5 * lcfg.r1_every * penalty_factor(self.recipe, step)  # gamma/2, lazy: scaled by the interval
            if use_r1:  # R1: zero-centred gradient penalty on real images
                r1 = zero_centred_penalty(real_logits, real)
                total = total + penalty_scale * lcfg.r1_gamma * r1
                terms["r1"] = r1
            if use_r2:  # R2: the same on generated images (R3GAN)
                r2 = zero_centred_penalty(fake_logits, fake)
                total = total + penalty_scale * lcfg.r2_gamma * r2
                terms["r2"] = r2
            if self.lecam.weight > 0:
                terms["lecam"] = self.lecam(real_logits, fake_logits)
                total = total + self.lecam.weight * terms["lecam"]
            heldout_logits = self._heldout_logits(step, sub, d_step)
        self._update(self.opt_D, self.scaler_D, total)
        self.augment.observe(real_logits, fake_logits, heldout_logits)
        return terms

    @torch.no_grad()
    def _heldout_logits(self, step: int, sub: int, d_step: int) -> torch.Tensor | None:
        """D's logits on held-out real images, augmented as its training images are, before this step's update (ADA's
        r_v); on every ada_interval-th D step only, which costs one forward of D in about four steps."""
        if not self.augment.wants_heldout or d_step % self.recipe.train.ada_interval:
            return None
        images, labels = self.batches.heldout(step, sub, self.device)
        whole = len(labels) // self.recipe.model.pack * self.recipe.model.pack  # PacGAN's D judges whole packs
        return self.D(self._augment(images[:whole]), labels[:whole])[0] if whole else None

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        y_fake = self.batches.fake_labels(step, self.recipe.train.n_dis, self.device)
        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            real_logits = self._real_logits_for_generator(step) if self.loss.relativistic else None
            latent = self._noise()
            fake_in = self._augment(self.G_train(latent, y_fake))
            fake_logits, fake_classes, *fake_extra = self.D(fake_in, y_fake)
            if self.recipe.train.unroll_steps:  # judged instead by D unrolled k steps ahead (Metz et al. 2016)
                fake_logits, fake_classes, real_logits = self._unrolled_judgement(step, fake_in, y_fake)
            adversarial = self.loss.generator(fake_logits, real_logits)
            aux = self._class_loss(fake_classes, y_fake)
            code_loss, code_terms = self._code_terms(latent, fake_extra)
            total = adversarial + self.recipe.conditioning.aux_weight * aux + code_loss
        self._update(self.opt_G, self.scaler_G, total)
        self._after_generator_update(step)
        return {"g_loss": adversarial, "g_aux": aux, **code_terms}

    def _unrolled_judgement(self, step: int, fake_in: torch.Tensor, y_fake: torch.Tensor):
        """(fake logits, fake class logits, real logits) of D unrolled train.unroll_steps Adam steps ahead (train/unroll.py).

        D's ordinary forward above has already run, so D's buffers (spectral norm's
        vectors) have moved exactly as in an ordinary G step; D is left as it is.
        """
        t, aux_weight = self.recipe.train, self.recipe.conditioning.aux_weight
        real, y_real = self.batches.real(step, t.n_dis, self.device)  # the batch a relativistic G's step judges against
        real_in = self._augment(real)
        fakes = fake_in if t.unroll_backprop else fake_in.detach()

        def d_loss(weights):
            real_logits, real_classes, *_ = functional_call(self.D, weights, (real_in, y_real))
            fake_logits, fake_classes, *_ = functional_call(self.D, weights, (fakes, y_fake))
            aux = self._class_loss(real_classes, y_real) + self._class_loss(fake_classes, y_fake)
            return self.loss.discriminator(real_logits, fake_logits) + aux_weight * aux

        weights = unrolled_weights(self.D, self.opt_D, d_loss, t.unroll_steps, t.unroll_backprop)
        fake_logits, fake_classes, *_ = functional_call(self.D, weights, (fake_in, y_fake))
        real_logits = functional_call(self.D, weights, (real_in, y_real))[0] if self.loss.relativistic else None
        return fake_logits, fake_classes, real_logits

    def _after_generator_update(self, step: int) -> None:
        self.D.requires_grad_(True)
        self.update_average(step)

    def _real_logits_for_generator(self, step: int) -> torch.Tensor:
        """A relativistic G judges its fakes against reals: D's logits on a real batch (no gradient needed)."""
        real, y_real = self.batches.real(step, self.recipe.train.n_dis, self.device)
        with torch.no_grad():
            return self.D(self._augment(real), y_real)[0]

    def _update(self, optimizer, scaler, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        terms = alternating_updates(self, step)
        if self.recipe.conditioning.type != "acgan" or self.num_classes == 1:
            terms.pop("d_aux", None), terms.pop("g_aux", None)
        terms = {k: v.detach() for k, v in terms.items()}
        terms.update(self.augment.adjusted_terms(step, lambda stats: distributed.mean_across_ranks(stats, self.device)))
        return terms

    # --- what the loop shows and saves ----------------------------------------

    def random_inputs(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent, class) for `n` random samples from `gen`, on the CPU: what G is fed outside training."""
        z = torch.randn(n, self.recipe.model.z_dim, generator=gen)
        y = torch.randint(0, self.num_classes, (n,), generator=gen)
        return self._with_codes(z, gen), y

    @torch.no_grad()
    def evaluation_images(self, z: torch.Tensor, class_index: int) -> torch.Tensor:
        """uint8 samples of one class from fixed z, by the sampling generator (as `synthgen sample` would draw them)."""
        from synthgen.imaging import to_uint8

        y = torch.full((len(z),), class_index, dtype=torch.long)
        latent = self._with_codes(z, torch.Generator().manual_seed(self.recipe.seed + 3))  # the same codes at every checkpoint
        return to_uint8(self._draw(latent, y))

    @torch.no_grad()
    def grid_images(self, columns: int = 10, max_rows: int = 20) -> tuple[torch.Tensor, int]:
        """One row per class (fixed z across rows and over training), as float images."""
        gen = torch.Generator().manual_seed(self.recipe.seed + 1)
        if self.num_classes == 1:  # unconditional: an 8x8 grid of different z
            rows, columns = [0] * 8, 8
            z = self._with_codes(torch.randn(len(rows) * columns, self.recipe.model.z_dim, generator=gen), gen)
        else:  # the same z (and codes) in every row, so rows differ only by class
            rows = list(range(min(self.num_classes, max_rows)))
            z = self._with_codes(torch.randn(columns, self.recipe.model.z_dim, generator=gen), gen).repeat(len(rows), 1)
        y = torch.tensor(rows).repeat_interleave(columns)
        return self._draw(z, y), columns

    @torch.no_grad()
    def _draw(self, latent: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The sampling generator's images of (latent, condition) in eval mode, its train/eval mode restored after."""
        with eval_mode(self.sampling_generator):
            return self.sampling_generator(latent.to(self.device), condition.to(self.device))
