"""Progressive growing (Karras et al. 2018): train at the lowest resolution, then grow G and D an octave at a time.

The schedule is a function of the real images D has seen (step x batch_size x
n_dis), options.grow:
    stage `start` (default: the lowest resolution, 4..8 px; 7 for 28 px data)
        for images_per_stage images, alpha = 1;
    every next stage: alpha rises linearly from 0 to 1 over the first
        fade_fraction x images_per_stage images (the new layers fade in),
        then the stage trains as it is for the rest of its images_per_stage;
    the last stage (data.image_size) then trains until train.steps.
The paper: 800k images of fade-in and 800k of stabilisation per resolution
(images_per_stage 1,600,000, fade_fraction 0.5).

While a stage fades in, the real images D sees are faded the same way as G's
(lerp(upsample(avgpool(x)), x, alpha) at the stage's resolution: the paper's
Fig. 2), so D cannot tell G's images by the blockiness of their lower half.

Everything else is the conditional GAN (cgan.py): the losses, penalties, EMA,
augmentation and checkpoints. G's and D's routes (stage, alpha) are buffers
in their weights and method state in state.json; --resume restores both, and
since the schedule is a function of the step a resumed run takes the same
route as an uninterrupted one, bit for bit. The networks are in
models/progan.py (every layer built up front: fixed checkpoint keys and
optimiser parameter lists).
"""

from __future__ import annotations

import torch
from pydantic import Field

from synthgen.errors import SynthgenError
from synthgen.models.layers import resolution_plan
from synthgen.models.progan import downsample, growing_parts, upsample
from synthgen.models.registry import BACKBONES, get_backbone
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN


class GrowOptions(Section):
    start: int | None = Field(None, description="Resolution in px training starts at, one of data.image_size / 2^k down to its base (28: 7, 14, 28); empty: the base (4..8 px).")
    images_per_stage: int = Field(
        1_600_000, ge=1, description="Real images D sees per resolution before the next one is added (the paper: 800k fading in + 800k stabilising)."
    )
    fade_fraction: float = Field(0.5, ge=0, le=1, description="Share of each new stage's images over which its layers fade in (alpha 0 -> 1); 0: added at once.")


class ProGANOptions(Section):
    grow: GrowOptions = Field(default_factory=GrowOptions, description="Progressive growing: {start, images_per_stage, fade_fraction}.")


def stage_sizes(image_size: int) -> list[int]:
    """The resolutions of the stages, lowest first (28 -> [7, 14, 28])."""
    base, levels = resolution_plan(image_size)
    return [base * 2**k for k in range(levels + 1)]


def start_stage(grow: GrowOptions, image_size: int) -> int:
    sizes = stage_sizes(image_size)
    if grow.start is None:
        return 0
    if grow.start not in sizes:
        raise ValueError(f"options.grow.start: {grow.start} px is not a resolution of {image_size} px images; use one of {', '.join(map(str, sizes))}")
    return sizes.index(grow.start)


def growth_at(images: int, start: int, levels: int, images_per_stage: int, fade_fraction: float) -> tuple[int, float]:
    """(stage, alpha) after D has seen `images` real images."""
    added, into = divmod(images, images_per_stage)
    stage = start + added
    if added == 0 or stage > levels:
        return min(stage, levels), 1.0
    fade = fade_fraction * images_per_stage
    return stage, 1.0 if into >= fade else into / fade


def fade_reals(x: torch.Tensor, stage: int, alpha: float, levels: int) -> torch.Tensor:
    """Full-size real images as D sees them while `stage` fades in: blended with their lower resolution."""
    if stage == 0 or alpha >= 1.0:
        return x  # D average-pools them to its stage itself
    current = downsample(x, levels - stage)
    blended = torch.lerp(upsample(downsample(current)), current, alpha)
    return upsample(blended, levels - stage)


class FadedReals:
    """The batch drawer, with real images faded to the current stage (everything else passes through)."""

    def __init__(self, drawer, method: "ProGAN"):
        self.drawer, self.method = drawer, method

    def real(self, step: int, sub: int, device):
        x, y = self.drawer.real(step, sub, device)
        stage, alpha = self.method.growth
        return fade_reals(x, stage, alpha, self.method.levels), y

    def __getattr__(self, name: str):
        return getattr(self.drawer, name)


class ProGAN(ConditionalGAN):
    Options = ProGANOptions

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        self.grow = method_options(recipe).grow
        self.levels = resolution_plan(recipe.data.image_size)[1]
        try:
            self.start = start_stage(self.grow, recipe.data.image_size)
        except ValueError as exc:  # data.image_size auto: known only now
            raise SynthgenError(str(exc)) from None
        self.batches = FadedReals(self.batches, self)
        self.set_growth(*self.growth_at(0))

    @staticmethod
    def check_recipe(recipe) -> None:
        get_backbone(recipe.model.backbone)  # registers the backbones
        if not BACKBONES[recipe.model.backbone].grows:
            growing = ", ".join(name for name, b in BACKBONES.items() if b.grows)
            raise ValueError(f"model.backbone: method progan grows G and D a resolution at a time; use a growing backbone ({growing}), got {recipe.model.backbone}")
        for key in ("spectral_norm", "g_spectral_norm"):  # equalised learning rate is the paper's answer to the same problem
            if getattr(recipe.model, key):
                raise ValueError(f"model.{key}: the {recipe.model.backbone} backbone scales its weights by the equalised learning rate instead; set it to false")
        if recipe.data.image_size != "auto":
            start_stage(method_options(recipe).grow, recipe.data.image_size)

    # --- the route ----------------------------------------------------------------

    def growth_at(self, step: int) -> tuple[int, float]:
        t = self.recipe.train
        return growth_at(step * t.batch_size * t.n_dis, self.start, self.levels, self.grow.images_per_stage, self.grow.fade_fraction)

    def set_growth(self, stage: int, alpha: float) -> None:
        self.growth = (stage, alpha)
        for network in self.networks.values():
            for part in growing_parts(network):
                part.set_growth(stage, alpha)

    @property
    def resolution(self) -> int:
        return stage_sizes(self.recipe.data.image_size)[self.growth[0]]

    def training_state(self) -> dict:
        stage, alpha = self.growth
        return {**super().training_state(), "growth": {"stage": stage, "alpha": alpha, "resolution": self.resolution}}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if "growth" in state:
            self.set_growth(int(state["growth"]["stage"]), float(state["growth"]["alpha"]))

    # --- one step -------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        self.set_growth(*self.growth_at(step))
        terms = super().train_step(step)
        terms["resolution"], terms["alpha"] = torch.tensor(float(self.resolution)), torch.tensor(self.growth[1])
        return terms
