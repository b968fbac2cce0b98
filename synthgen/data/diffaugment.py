"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees.

Applied to real and fake batches alike, in both D and G steps, so G cannot
learn the augmentations. Pure functions of a float batch in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synthgen.losses import LOSSES

Tensor = torch.Tensor


def color(x: Tensor) -> Tensor:
    """Random brightness, saturation and contrast per image."""
    n, dev = len(x), x.device
    x = x + (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=x.dtype) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to 1/8 of its size, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None] + dy  # [n, h, 1]
    cols = torch.arange(w, device=x.device)[None, None, :] + dx  # [n, 1, w]
    padded = F.pad(x, [1, 1, 1, 1])
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device)[:, None, None].expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a random square of half the image size in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = ((rows - cy).abs() <= ch // 2) & ((cols - cx).abs() <= cw // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def geometric(x: Tensor, scale_std: float = 0.2, rotation_std: float = math.pi / 8, aniso_std: float = 0.2,
              shift_std: float = 0.125) -> Tensor:
    """ADA's geometric group (Karras et al. 2020): one random affine warp per image.

    Isotropic and anisotropic scaling (log2-normal, std 0.2: ADA's), rotation and
    fractional translation (std 1/8 of the size: ADA's). Unlike ADA's uniform
    full-turn rotation, every parameter here is Gaussian around the identity, so even
    at p = 1 the augmented distribution still pins down the clean one and G has no
    reason to draw tilted or stretched images (ADA's "leak" above p ~ 0.8).
    """
    n = len(x)
    def normal(std: float) -> Tensor:
        return torch.randn(n, device=x.device, dtype=torch.float32) * std
    scale, aniso = torch.exp2(normal(scale_std)), torch.exp2(normal(aniso_std))
    return affine_warp(x, angle=normal(rotation_std), scale_x=scale * aniso, scale_y=scale / aniso,
                       shift_x=normal(shift_std), shift_y=normal(shift_std))


def affine_warp(x: Tensor, angle: Tensor, scale_x: Tensor, scale_y: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Rotate each image by `angle` (radians, clockwise as seen; torchvision's `affine` convention), scale its content and shift it by a
    share of its size (positive: right, down), about the centre; bilinear, with reflection padding so no
    black border tells D that an image was augmented. Differentiable twice (R1 through the augmentation)."""
    _, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps each output position to the input position it reads, in [-1, 1] coordinates: the
    # inverse warp, in = M (out - shift). Rotation is done in pixel units (h != w), then written in those coordinates.
    inverse = torch.stack([
        torch.stack([cos / scale_x, sin / scale_y * h / w], dim=1),
        torch.stack([-sin / scale_x * w / h, cos / scale_y], dim=1),
    ], dim=1)
    shift = torch.stack([shift_x, shift_y], dim=1)[:, :, None] * 2
    theta = torch.cat([inverse, -inverse @ shift], dim=2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def whole_pixel_shift(x: Tensor, ratio: float = 1 / 16) -> Tensor:
    """Each image shifted by up to `ratio` of its size in x and y, in whole pixels (reflected at the border): a
    perturbation that keeps any image's class, whatever the data (Laine & Aila shift CIFAR-10 by up to 2 pixels of 32)."""
    n, device = len(x), x.device
    size = torch.tensor([[x.shape[3]], [x.shape[2]]], device=device)
    # whole pixels, so the shifted copy is not also blurred by the interpolation
    shift_x, shift_y = ((torch.rand(2, n, device=device) * 2 - 1) * ratio * size).round() / size
    ones = torch.ones(n, device=device)
    return affine_warp(x, angle=torch.zeros(n, device=device), scale_x=ones, scale_y=ones, shift_x=shift_x, shift_y=shift_y)


POLICIES = {"color": color, "translation": translation, "cutout": cutout, "geometric": geometric}


def diff_augment(x: Tensor, policies: list[str]) -> Tensor:
    for name in policies:
        x = POLICIES[name](x)
    return x


class AdaptiveAugment:
    """DiffAugment's transforms, each applied to an image with probability p (ADA, Karras et al. 2020).

    Without a target p is 1: plain DiffAugment. With one, p starts at 0 and
    every `interval` steps moves by sign(r - target) * (images seen in the
    interval) / (kimg * 1000), where r is D's overfitting measure over the
    interval, one of MEASURES:
    - "signs": E[sign(D(real))], ADA's r_t;
    - "relative": E[sign(D(real) - D(fake))], for a loss whose logits only mean
      something relative to each other (relativistic pairing, a WGAN critic: the
      loss's `offset_free`), where the sign of D(real) alone says nothing;
    - "heldout": ADA's r_v, (E[D(train)] - E[D(held out)]) / (E[D(train)] - E[D(fake)]),
      on real images D never trains on (train.ada_heldout): 0 while D judges unseen
      images as it judges its training images, 1 when it takes them for fakes. Unlike
      the sign measures it does not rise merely because G is still far behind D, as
      it is early in every run: on a large dataset p then stays near 0.
    p is training state: the loop saves it with each checkpoint and --resume restores it.
    """

    MEASURES = ("signs", "relative", "heldout")
    LOG_KEYS = {"signs": "ada_rt", "relative": "ada_rt", "heldout": "ada_rv"}  # ADA's names: r_t on training images, r_v on held-out ones

    def __init__(self, policies: list[str], target: float | None, kimg: float, interval: int, batch_size: int, measure: str = "signs"):
        if measure not in self.MEASURES:
            raise ValueError(f"ADA measure {measure!r}: expected one of {', '.join(self.MEASURES)}")
        self.policies, self.target, self.interval, self.measure = list(policies), target, interval, measure
        self.step_size = batch_size * interval / (kimg * 1000)
        self.p = 1.0 if target is None else 0.0
        self.sums = dict.fromkeys(self._terms(), 0.0)

    def _terms(self) -> tuple[str, ...]:
        if self.measure == "heldout":
            return ("train", "train_count", "heldout", "heldout_count", "fake", "fake_count")
        return ("signs", "count")

    @classmethod
    def from_recipe(cls, recipe) -> "AdaptiveAugment":
        """The recipe's train.diffaugment / ada_* keys; p moves with the real images D sees per G step. The measure:
        held-out images where train.ada_heldout sets some aside, else relative where the recipe's loss is offset-free."""
        t = recipe.train
        if t.ada_heldout > 0:
            measure = "heldout"
        else:
            measure = "relative" if LOSSES[recipe.loss.type].offset_free else "signs"
        return cls(t.diffaugment, t.ada_target, t.ada_kimg, t.ada_interval, t.batch_size * t.n_dis, measure)

    @property
    def adaptive(self) -> bool:
        return self.target is not None and bool(self.policies)

    @property
    def wants_heldout(self) -> bool:
        """Whether the trainer should show D held-out images (then every `interval`-th D step is enough)."""
        return self.adaptive and self.measure == "heldout"

    def __call__(self, x: Tensor) -> Tensor:
        if not self.policies or self.p <= 0:
            return x
        if self.p >= 1:
            return diff_augment(x, self.policies)
        for name in self.policies:
            chosen = (torch.rand(len(x), 1, 1, 1, device=x.device) < self.p).to(x.dtype)
            x = torch.lerp(x, POLICIES[name](x), chosen)  # per image: augmented where chosen
        return x

    def observe(self, real_logits: Tensor, fake_logits: Tensor | None = None, heldout_logits: Tensor | None = None) -> None:
        """Accumulate r's terms from one D step: the signs of D(real) or of D(real) - D(fake); or (heldout) D's mean
        logits on the three kinds of image, from the steps that showed D held-out images (others are skipped)."""
        if not self.adaptive:
            return
        if self.measure == "heldout":
            if heldout_logits is None:
                return
            for name, logits in (("train", real_logits), ("heldout", heldout_logits), ("fake", fake_logits)):
                self.sums[name] += float(logits.detach().float().sum())
                self.sums[f"{name}_count"] += logits.numel()
            return
        if self.measure == "relative" and fake_logits is None:
            raise ValueError("an offset-free loss's r_t needs D's logits on the fakes of the same step")
        margin = real_logits.detach().float() - (fake_logits.detach().float() if self.measure == "relative" else 0.0)
        self.sums["signs"] += float(margin.sign().sum())
        self.sums["count"] += margin.numel()

    def _overfitting(self, sums: dict) -> float | None:
        """r over the interval's sums (all processes'), None where the interval observed nothing."""
        if self.measure != "heldout":
            return sums["signs"] / sums["count"] if sums["count"] else None
        if not (sums["train_count"] and sums["heldout_count"] and sums["fake_count"]):
            return None
        train, heldout, fake = (sums[k] / sums[f"{k}_count"] for k in ("train", "heldout", "fake"))
        gap = train - fake
        return (train - heldout) / gap if gap > 0 else 0.0  # D does not even rank its training images above fakes

    def adjust(self, step: int, mean_across_ranks=lambda stats: stats) -> float | None:
        """After step `step` (0-based): every `interval` steps, move p; returns r when it did."""
        if not self.adaptive or (step + 1) % self.interval:
            return None
        r = self._overfitting(mean_across_ranks(dict(self.sums)))
        self.sums = dict.fromkeys(self.sums, 0.0)
        if r is None:
            return None
        sign = (r > self.target) - (r < self.target)
        self.p = min(1.0, max(0.0, self.p + sign * self.step_size))
        return r

    def adjusted_terms(self, step: int, mean_across_ranks=lambda stats: stats) -> dict[str, Tensor]:
        """`adjust` after step `step`, and what to log: ada_p while adaptive (averaged over the log interval, like
        the losses) and the measure when p moved (ada_rt, or ada_rv on held-out images)."""
        r = self.adjust(step, mean_across_ranks)
        terms = {"ada_p": torch.tensor(self.p)} if self.adaptive else {}
        if r is not None:
            terms[self.LOG_KEYS[self.measure]] = torch.tensor(r)
        return terms

    def state(self) -> dict:
        return {"p": self.p, **self.sums}

    def load_state(self, state: dict) -> None:
        self.p = float(state["p"])
        self.sums = {name: float(state.get(name, 0.0)) for name in self.sums}
