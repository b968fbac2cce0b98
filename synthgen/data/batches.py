"""Which real images and fake labels each training step uses.

Every draw comes from a generator seeded by (seed, step, sub-step), so a
resumed run draws exactly what an uninterrupted one would, with no sampler
state to save. Under torch.distributed every process draws the same global
batch and keeps its strided shard `[rank::world_size]` (DistributedSampler's
split): together the processes train on exactly what one process would.
"""

from __future__ import annotations

import torch

from synthgen.data.loading import LabelledImages
from synthgen.imaging import to_model


def split_heldout(members: list[torch.Tensor], fraction: float, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each class's rows split into (trained on, held out): `fraction` of the class, rounded, at least one where the
    class has two or more, chosen by a generator seeded by `seed` alone (the same split after a resume)."""
    if fraction <= 0:
        return members, [rows[:0] for rows in members]
    gen = torch.Generator().manual_seed(seed + 7)
    kept, held = [], []
    for rows in members:
        n_held = max(1, round(len(rows) * fraction)) if len(rows) >= 2 else 0
        shuffled = rows[torch.randperm(len(rows), generator=gen)]
        kept.append(shuffled[n_held:].sort().values), held.append(shuffled[:n_held].sort().values)
    return kept, held


class BatchDrawer:
    def __init__(self, data: LabelledImages, batch_size: int, sampling: str, hflip: bool, seed: int, shard: tuple[int, int] = (0, 1),
                 heldout: float = 0.0):
        self.data, self.batch_size, self.hflip, self.seed = data, batch_size, hflip, seed
        self.rank, self.world_size = shard  # this process's part of each global batch
        self.shard_size = batch_size // self.world_size
        self.num_classes = len(data.class_names)
        counts = torch.tensor(data.class_counts(), dtype=torch.float64)
        # balanced: every class equally often, real and fake; natural: as in the data.
        self.class_weights = (counts > 0).double() if sampling == "balanced" else counts
        order = torch.argsort(data.labels, stable=True)
        # heldout: rows D never trains on, shown to it only to measure how much it overfits (ADA's r_v)
        self.members, self.heldout_members = split_heldout([order[data.labels[order] == c] for c in range(self.num_classes)], heldout, seed)

    def generator(self, step: int, sub: int, stream: int) -> torch.Generator:
        """The seeded random stream of one (step, sub-step, purpose): the same on every process and after a resume."""
        return torch.Generator().manual_seed(hash((self.seed, step, sub, stream)) & 0x7FFF_FFFF_FFFF_FFFF)

    def _shard(self, drawn: torch.Tensor) -> torch.Tensor:
        return drawn[self.rank :: self.world_size]

    def labels(self, step: int, sub: int, stream: int) -> torch.Tensor:
        """The global batch's labels (every process draws the same)."""
        return torch.multinomial(self.class_weights, self.batch_size, replacement=True, generator=self.generator(step, sub, stream))

    def real(self, step: int, sub: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's shard of a batch of real images in [-1, 1] and their labels."""
        images, labels, _ = self.real_rows(step, sub, device)
        return images, labels

    def real_rows(self, step: int, sub: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `real`, plus each image's row in the data (to look up what else is known of it, e.g. its attributes)."""
        labels, rows, mirror = self._draw(self.members, step, sub, stream=1)
        return self._images(rows, mirror, device), labels.to(device), rows

    def heldout(self, step: int, sub: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's shard of held-out images with the labels of the same step's real batch (classes with none
        held out are left out), drawn as real batches are: D's view of images it has not trained on, beside the ones it has."""
        labels, rows, mirror = self._draw(self.heldout_members, step, sub, stream=3)
        return self._images(rows, mirror, device), labels.to(device)

    def _draw(self, members: list[torch.Tensor], step: int, sub: int, stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labels, rows, mirror) of this process's shard: the step's labels, for each a row of its class in `members`
        (labels whose class has none there are left out), and which to mirror (at random under data.hflip)."""
        labels = self.labels(step, sub, stream=0)
        gen = self.generator(step, sub, stream)
        picks = torch.rand(self.batch_size, generator=gen, dtype=torch.float64)
        mirror = torch.rand(self.batch_size, generator=gen) < 0.5 if self.hflip else torch.zeros(self.batch_size, dtype=torch.bool)
        labels, picks, mirror = self._shard(labels), self._shard(picks), self._shard(mirror)
        found = torch.tensor([len(members[c]) > 0 for c in labels.tolist()], dtype=torch.bool)
        labels, picks, mirror = labels[found], picks[found], mirror[found]
        rows = torch.tensor([int(members[c][int(p * len(members[c]))]) for c, p in zip(labels.tolist(), picks)], dtype=torch.long)
        return labels, rows, mirror  # an empty draw keeps the images' shape below

    def _images(self, rows: torch.Tensor, mirror: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The rows' images in [-1, 1] (only this shard's are converted), mirrored where asked."""
        images = to_model(self.data.images[rows])
        images[mirror] = images[mirror].flip(-1)
        return images.to(device, non_blocking=True)

    def fake_labels(self, step: int, sub: int, device: torch.device) -> torch.Tensor:
        return self._shard(self.labels(step, sub, stream=2)).to(device)
