"""What pix2pix and CycleGAN share: the adversarial loss scale, network placement, optimiser updates, grids."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from synthgen.imaging import to_model
from synthgen.losses import LOSSES
from synthgen.models.layers import batch_norms
from synthgen.precision import Precision

# losses.py's lsgan generator loss is 0.5 * (D(G(x)) - 1)^2 (Mao et al.); both papers use the plain
# MSE, and the L1 / cycle weights (100, 10) are set against that. Scale it back so they mean the same.
PAPER_G_SCALE = {"lsgan": 2.0, "ns": 1.0}


class TranslationMethod:
    """Base of the image -> image methods; subclasses build their networks and define train_step."""

    produces = "translations"  # runs are used by `synthgen translate`
    reads = frozenset()  # data / train / loss / conditioning keys beyond the loop's: each translator names its own
    # One process: the translators' networks are not under DDP, so N processes would train N unsynchronised copies.
    distributed = False

    def __init__(self, recipe, precision: Precision):
        self.recipe, self.precision, self.device = recipe, precision, precision.device
        self.loss = LOSSES[recipe.loss.type]
        self.g_scale = PAPER_G_SCALE.get(recipe.loss.type, 1.0)
        self.scaler_G, self.scaler_D = precision.grad_scaler(), precision.grad_scaler()
        self.images_per_step = recipe.train.batch_size

    # What the loop saves: one G and one D with their optimisers (CycleGAN names its four networks itself).
    @property
    def networks(self) -> dict:
        return {"G": self.G, "D": self.D}

    @property
    def optimizers(self) -> dict:
        return {"G": self.opt_G, "D": self.opt_D}

    load_images = None  # the data kind's loader (load_paired, load_unpaired), set by each method

    @classmethod
    def load_data(cls, recipe):
        """The method's images, and the recipe with `auto` image_size replaced by the size they were loaded for."""
        data = cls.load_images(recipe.data)
        return data, recipe.model_copy(update={"data": recipe.data.model_copy(update={"image_size": data.image_size})})

    def _place(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device, memory_format=self.precision.memory_format)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=self.precision.memory_format)

    def _adam(self, *modules: torch.nn.Module, lr: float) -> torch.optim.Adam:
        t = self.recipe.train
        return torch.optim.Adam([p for m in modules for p in m.parameters()], lr=lr, betas=(t.beta1, t.beta2))

    def _update(self, optimizer, scaler, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def prepare_for_sampling(self) -> None:
        """Nothing to do: no EMA copy, and grids run the networks in eval mode."""

    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        return self._input(to_model(images).to(self.device))

    @staticmethod
    def _grid(*groups: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Groups of columns (each [n, C, H, W]) -> one batch of rows for save_grid, and the row length."""
        channels = max(column.shape[1] for group in groups for column in group)
        rows = [
            torch.stack([column.float().expand(-1, channels, -1, -1) for column in group], dim=1).flatten(0, 1)
            for group in groups
        ]
        return torch.cat(rows), len(groups[0])  # a gray side shown beside an RGB one: repeated to 3 channels


@contextmanager
def running_stats_kept(network: torch.nn.Module):
    """Batch norm inside the block normalises by the batch's statistics, as in training, but leaves the running
    statistics as they were (momentum 0), so that a pass whose inputs are not what the network sees at inference
    (StarGAN's cycle: G's own, noisy outputs) does not shift how it normalises there."""
    norms = batch_norms(network)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@contextmanager
def eval_mode(*networks: torch.nn.Module):
    """Networks in eval mode (no dropout, BN running statistics) inside the block, as they were after it."""
    modes = [network.training for network in networks]
    for network in networks:
        network.eval()
    try:
        yield
    finally:
        for network, mode in zip(networks, modes):
            network.train(mode)
