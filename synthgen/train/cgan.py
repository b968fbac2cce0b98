"""The conditional GAN method: one discriminator step (or n_dis), then one generator step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from synthgen import distributed
from synthgen.data.batches import BatchDrawer
from synthgen.data.diffaugment import diff_augment
from synthgen.data.loading import LabelledImages, load_labelled
from synthgen.losses import LOSSES, gradient_penalty, r1_penalty
from synthgen.models.conditioning import build_models
from synthgen.precision import Precision
from synthgen.train.ema import EMA, recalibrate_batchnorm


def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    # fused: one kernel for the whole update instead of a handful of ops per
    # tensor (CPU and CUDA); the same maths, state dict and checkpoints.
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class ConditionalGAN:
    """Owns G, D, EMA-G and their optimisers; `train_step` is one generator update.

    Under torch.distributed, G and D train through DDP wrappers (gradients
    averaged across processes) while `self.G` / `self.D` stay the plain
    networks that are saved, sampled from and used where no gradient of their
    own is needed (G's forward for the D step, D's forward for the G step).
    """

    def __init__(self, recipe, data: LabelledImages, precision: Precision):
        self.recipe, self.precision, self.device = recipe, precision, precision.device
        self.num_classes = len(data.class_names)
        t, fmt = recipe.train, precision.memory_format
        self.G, self.D = (m.to(self.device, memory_format=fmt) for m in build_models(recipe, self.num_classes))
        self.ema = EMA(self.G, t.ema_decay) if t.ema else None
        distributed.shard_size(t.batch_size, recipe.model.pack)  # the global batch must split evenly
        self.G_train, self.D_train = distributed.wrap(self.G, self.device), distributed.wrap(self.D, self.device)
        self.opt_G = adam(self.G.parameters(), t.lr_g, (t.beta1, t.beta2))
        self.opt_D = adam(self.D.parameters(), t.lr_d, (t.beta1, t.beta2))
        self.scaler_G, self.scaler_D = precision.grad_scaler(), precision.grad_scaler()
        shard = (distributed.rank(), distributed.world_size())
        self.batches = BatchDrawer(data, t.batch_size, recipe.data.sampling, recipe.data.hflip, recipe.seed, shard)
        self.loss = LOSSES[recipe.loss.type]
        gp = recipe.loss.gp_weight
        self.gp_weight = self.loss.default_gp_weight if gp is None else gp
        self.images_per_step = t.batch_size * t.n_dis  # real images D sees per generator update (all processes)

    @staticmethod
    def load_data(recipe) -> tuple[LabelledImages, object]:
        """The labelled folder as tensors, and the recipe with `auto` size and channels resolved."""
        d = recipe.data
        data = load_labelled(d.root, d.image_size, d.channels, d.resize)
        _, channels, size, _ = data.images.shape
        return data, recipe.model_copy(update={"data": d.model_copy(update={"image_size": size, "channels": channels})})

    # --- state the loop saves and restores ---------------------------------

    @property
    def networks(self) -> dict:
        nets = {"G": self.G, "D": self.D}
        if self.ema:
            nets["G_ema"] = self.ema.model
        return nets

    @property
    def optimizers(self) -> dict:
        return {"G": self.opt_G, "D": self.opt_D}

    @property
    def sampling_generator(self):
        return self.ema.model if self.ema else self.G

    # --- one step ------------------------------------------------------------

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.recipe.train.diffaugment).contiguous(memory_format=self.precision.memory_format)

    def _class_loss(self, class_logits, labels) -> torch.Tensor:
        if class_logits is None:
            return torch.zeros((), device=self.device)
        return F.cross_entropy(class_logits.flatten(0, 1).float(), labels)

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.batches.shard_size, self.recipe.model.z_dim, device=self.device)

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
        use_r1 = lcfg.r1_gamma > 0 and d_step % lcfg.r1_every == 0
        real.requires_grad_(use_r1)
        with self.precision.autocast():
            with torch.no_grad():
                fake = self.G(self._noise(), y_fake)
            real_in, fake_in = self._augment(real), self._augment(fake)
            real_logits, real_classes = self.D_train(real_in, y_real)
            fake_logits, fake_classes = self.D_train(fake_in, y_fake)
            adversarial = self.loss.discriminator(real_logits, fake_logits)
            aux = self._class_loss(real_classes, y_real) + self._class_loss(fake_classes, y_fake)
            total = adversarial + aux_weight * aux
            terms = {"d_loss": adversarial, "d_aux": aux}
            if self.gp_weight > 0:
                critic = lambda mixed: self.D_train(mixed, y_real)[0]  # noqa: E731
                gp = gradient_penalty(critic, real_in.detach(), fake_in.detach())
                total = total + self.gp_weight * gp
                terms["gp"] = gp
            if use_r1:
                r1 = r1_penalty(real_logits, real)
                total = total + 0.5 * lcfg.r1_gamma * lcfg.r1_every * r1  # lazy: scaled by the interval
                terms["r1"] = r1
        self._update(self.opt_D, self.scaler_D, total)
        return terms

    def generator_step(self, step: int) -> dict[str, torch.Tensor]:
        y_fake = self.batches.fake_labels(step, self.recipe.train.n_dis, self.device)
        self.D.requires_grad_(False)  # no D gradients needed for G's update
        with self.precision.autocast():
            fake_logits, fake_classes = self.D(self._augment(self.G_train(self._noise(), y_fake)), y_fake)
            adversarial = self.loss.generator(fake_logits)
            aux = self._class_loss(fake_classes, y_fake)
            total = adversarial + self.recipe.conditioning.aux_weight * aux
        self._update(self.opt_G, self.scaler_G, total)
        self.D.requires_grad_(True)
        if self.ema:
            self.ema.update(self.G, step)
        return {"g_loss": adversarial, "g_aux": aux}

    def _update(self, optimizer, scaler, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for sub in range(self.recipe.train.n_dis):
            terms = self.discriminator_step(step, sub)
        terms.update(self.generator_step(step))
        if self.recipe.conditioning.type != "acgan" or self.num_classes == 1:
            terms.pop("d_aux"), terms.pop("g_aux")
        return {k: v.detach() for k, v in terms.items()}

    # --- what the loop shows and saves ----------------------------------------

    def prepare_for_sampling(self) -> None:
        """Give the sampling generator BN statistics that match its weights."""
        if self.ema:
            recalibrate_batchnorm(self.ema.model, self.recipe.model.z_dim, self.num_classes, self.device, seed=self.recipe.seed)

    @torch.no_grad()
    def evaluation_images(self, z: torch.Tensor, class_index: int) -> torch.Tensor:
        """uint8 samples of one class from fixed z, by the sampling generator (as `synthgen sample` would draw them)."""
        from synthgen.imaging import to_uint8

        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        y = torch.full((len(z),), class_index, dtype=torch.long, device=self.device)
        images = to_uint8(generator(z.to(self.device), y))
        generator.train(was_training)
        return images

    @torch.no_grad()
    def grid_images(self, columns: int = 10, max_rows: int = 20) -> tuple[torch.Tensor, int]:
        """One row per class (fixed z across rows and over training), as float images."""
        gen = torch.Generator().manual_seed(self.recipe.seed + 1)
        if self.num_classes == 1:  # unconditional: an 8x8 grid of different z
            rows, columns = [0] * 8, 8
            z = torch.randn(len(rows) * columns, self.recipe.model.z_dim, generator=gen)
        else:  # the same z in every row, so rows differ only by class
            rows = list(range(min(self.num_classes, max_rows)))
            z = torch.randn(columns, self.recipe.model.z_dim, generator=gen).repeat(len(rows), 1)
        y = torch.tensor(rows).repeat_interleave(columns)
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        images = generator(z.to(self.device), y.to(self.device))
        generator.train(was_training)
        return images, columns
