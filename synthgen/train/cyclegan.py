"""CycleGAN (Zhu et al. 2017): two translators learnt from unpaired domains A and B.

G_AB: A -> B and G_BA: B -> A, with PatchGAN critics D_B (is it a B?) and
D_A. Without pairs, the cycle loss ties them together: G_BA(G_AB(a)) must
give back a, and G_AB(G_BA(b)) give back b (L1, weight loss.cycle_weight,
10). The identity loss (G_AB(b) = b, weight identity_weight * cycle_weight)
keeps colours from drifting. D learns from a history of 50 earlier fakes
(Shrivastava et al. 2017), which damps oscillation. One G step (both
generators), then one D step (both critics), as in the paper's code.
"""

from __future__ import annotations

import torch
from torch import nn

from synthgen.data.translation import TranslationBatches, TranslationImages, load_unpaired
from synthgen.models.patchgan import build_patch_discriminator
from synthgen.models.registry import build_translator
from synthgen.train.translation import TranslationMethod, eval_mode

POOL_STREAM = 3  # random stream of the pool's draws (data batches use 0-2): seeded by (seed, step, stream)


class HistoryPool(nn.Module):
    """CycleGAN's image pool: fakes D trains on are, half the time, older fakes it saw before.

    A module with buffers so that the loop saves it in every checkpoint as
    tensors and restores it on resume, like a network: a resumed run draws
    the same history as an uninterrupted one.
    """

    def __init__(self, size: int, channels: int, image_size: int):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, channels, image_size, image_size))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def query(self, fakes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """While filling: store and return each fake. Then, per fake, with p = 0.5 return a stored one and keep the fake in its place."""
        out = []
        for fake in fakes.detach().float():
            filled = int(self.filled)
            if filled < self.size:
                self.images[filled] = fake
                self.filled += 1
                out.append(fake)
            elif torch.rand((), generator=gen) < 0.5:
                slot = int(torch.randint(self.size, (), generator=gen))
                out.append(self.images[slot].clone())
                self.images[slot] = fake
            else:
                out.append(fake)
        return torch.stack(out).to(fakes.dtype)


class CycleGAN(TranslationMethod):
    reads = frozenset({"data.jitter", "loss.cycle_weight", "loss.identity_weight", "train.pool_size"})
    load_images = staticmethod(load_unpaired)

    def __init__(self, recipe, data: TranslationImages, precision):
        super().__init__(recipe, precision)
        m, t, size = recipe.model, recipe.train, data.image_size
        c_a, c_b = data.a.shape[1], data.b.shape[1]
        self.G_AB = self._place(build_translator(m, size, c_a, c_b))
        self.G_BA = self._place(build_translator(m, size, c_b, c_a))
        self.D_A = self._place(build_patch_discriminator(m, c_a))
        self.D_B = self._place(build_patch_discriminator(m, c_b))
        self.pools = {"pool_A": HistoryPool(t.pool_size, c_a, size), "pool_B": HistoryPool(t.pool_size, c_b, size)}
        for pool in self.pools.values():
            pool.to(self.device)
        self.opt_G = self._adam(self.G_AB, self.G_BA, lr=t.lr_g)
        self.opt_D = self._adam(self.D_A, self.D_B, lr=t.lr_d)
        self.batches = TranslationBatches(data, t.batch_size, recipe.data.hflip, recipe.seed)
        # Identity (G_AB(b) = b) only makes sense when both domains have the same channels.
        self.identity = recipe.loss.identity_weight * recipe.loss.cycle_weight if c_a == c_b else 0.0
        self.grid_a, self.grid_b = data.test_a, data.test_b
        self.images_per_step = 2 * t.batch_size  # one batch from each domain

    @property
    def networks(self) -> dict:
        nets = {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}
        return nets | (self.pools if self.recipe.train.pool_size else {})

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        a, b = (self._input(x) for x in self.batches.unpaired(step, self.device))
        cycle_weight = self.recipe.loss.cycle_weight
        critics = (self.D_A, self.D_B)
        for critic in critics:
            critic.requires_grad_(False)  # no D gradients needed for the generators' update
        with self.precision.autocast():
            fake_b, fake_a = self.G_AB(a), self.G_BA(b)
            rec_a, rec_b = self.G_BA(fake_b), self.G_AB(fake_a)
            adversarial = self.g_scale * (self.loss.generator(self.D_B(fake_b)) + self.loss.generator(self.D_A(fake_a)))
            cycle_a, cycle_b = _l1(rec_a, a), _l1(rec_b, b)
            total = adversarial + cycle_weight * (cycle_a + cycle_b)
            terms = {"g_loss": adversarial, "cycle": (cycle_a + cycle_b) / 2}
            if self.identity:
                identity = _l1(self.G_AB(b), b) + _l1(self.G_BA(a), a)
                total = total + self.identity * identity
                terms["identity"] = identity / 2
        self._update(self.opt_G, self.scaler_G, total)
        for critic in critics:
            critic.requires_grad_(True)

        if self.recipe.train.pool_size:
            gen = torch.Generator().manual_seed(hash((self.recipe.seed, step, POOL_STREAM)) & 0x7FFF_FFFF_FFFF_FFFF)
            fake_a = self._input(self.pools["pool_A"].query(fake_a, gen))
            fake_b = self._input(self.pools["pool_B"].query(fake_b, gen))
        with self.precision.autocast():
            d_a = self.loss.discriminator(self.D_A(a), self.D_A(fake_a.detach()))
            d_b = self.loss.discriminator(self.D_B(b), self.D_B(fake_b.detach()))
        self._update(self.opt_D, self.scaler_D, d_a + d_b)
        terms["d_loss"] = (d_a + d_b) / 2
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def grid_images(self) -> tuple[torch.Tensor, int]:
        """Rows A -> G_AB(A) -> G_BA(G_AB(A)), then B -> G_BA(B) -> G_AB(G_BA(B))."""
        a, b = self._to_model(self.grid_a), self._to_model(self.grid_b)
        with eval_mode(self.G_AB, self.G_BA):
            fake_b, fake_a = self.G_AB(a), self.G_BA(b)
            return self._grid([a, fake_b, self.G_BA(fake_b)], [b, fake_a, self.G_AB(fake_a)])


def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.float() - y.float()).abs().mean()
