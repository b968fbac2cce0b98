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

A fixed count of images does not fit a time budget: the same count takes
minutes on one machine and hours on another, so a short train.budget may end
before the full size is reached. `images_per_stage: auto` (with train.budget)
measures the img/s of every stage on this machine before training, on a
fresh copy of the networks, and picks the count for which the last stage has
faded in at `full_size_at` (0.5) of the budget; the rest of the budget trains
at the full size. The count is then fixed: it is in state.json and run.json,
and --resume continues with it, so the route stays a function of the step.

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

import time
from typing import Annotated, Literal

import torch
from pydantic import Field

from synthgen import distributed
from synthgen.errors import SynthgenError
from synthgen.models.layers import resolution_plan
from synthgen.models.progan import downsample, growing_parts, upsample
from synthgen.models.registry import BACKBONES, get_backbone
from synthgen.rng import rng_untouched
from synthgen.recipe import Section, method_options
from synthgen.speed import step_rate
from synthgen.train.cgan import ConditionalGAN

PROBE_STEPS = (2, 3)  # per stage: warm-up steps, then timed steps (the best of little noise on 2 cores)


class GrowOptions(Section):
    start: int | None = Field(None, description="Resolution in px training starts at, one of data.image_size / 2^k down to its base (28: 7, 14, 28); empty: the base (4..8 px).")
    images_per_stage: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1_600_000,
        description="Real images D sees per resolution before the next one is added (the paper: 800k fading in + 800k stabilising); "
        "auto (needs train.budget): measured on this machine so that the full size has faded in at full_size_at of the budget.",
    )
    fade_fraction: float = Field(0.5, ge=0, le=1, description="Share of each new stage's images over which its layers fade in (alpha 0 -> 1); 0: added at once.")
    full_size_at: float = Field(0.5, gt=0, lt=1, description="With images_per_stage auto: the share of train.budget by which the last stage has faded in; the rest trains at the full size.")


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


def images_per_stage_for(seconds: float, rates: list[float], fade_fraction: float) -> int:
    """The images per stage for which the last stage has faded in after `seconds`, given the real images per
    second D sees at each stage from the first to the last: N (sum of 1/r over the stages before the last
    + fade_fraction / r_last) = seconds."""
    *before, last = rates
    return max(1, int(seconds / (sum(1 / r for r in before) + fade_fraction / last)))


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
        return self._faded(*self.drawer.real(step, sub, device))

    def heldout(self, step: int, sub: int, device):
        return self._faded(*self.drawer.heldout(step, sub, device))

    def _faded(self, x, y):
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
        # auto: unknown until plan_for_budget (or --resume) sets it; until then the first stage trains
        self.images_per_stage = None if self.grow.images_per_stage == "auto" else self.grow.images_per_stage
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
        grow = method_options(recipe).grow
        if grow.images_per_stage == "auto" and not recipe.train.budget:
            raise ValueError("options.grow.images_per_stage: auto spreads the stages over train.budget; set train.budget (e.g. 30m) or give a number of images")
        if recipe.data.image_size != "auto":
            start_stage(grow, recipe.data.image_size)

    # --- the route ----------------------------------------------------------------

    def growth_at(self, step: int) -> tuple[int, float]:
        if self.images_per_stage is None:  # auto, not planned yet (the precision probe's copies)
            return self.start, 1.0
        return growth_at(step * self.reals_per_step, self.start, self.levels, self.images_per_stage, self.grow.fade_fraction)

    @property
    def reals_per_step(self) -> int:
        return self.recipe.train.batch_size * self.recipe.train.n_dis

    def plan_for_budget(self, budget_seconds: float, fresh_copy) -> dict | None:
        """images_per_stage auto: each stage's speed measured on `fresh_copy()` (so this run's weights, optimiser and
        random streams are untouched), then the count that reaches the full size at full_size_at of the budget."""
        if self.images_per_stage is not None:  # a number in the recipe, or restored by --resume
            return None
        started, stages = time.perf_counter(), range(self.start, self.levels + 1)
        with rng_untouched(self.device):
            probe = fresh_copy()
            warmup, timed = PROBE_STEPS
            rates = []
            for stage in stages:
                probe.start, probe.images_per_stage = stage, 10**15  # held at this stage, alpha 1
                step_rate(probe, range(warmup))
                rates.append(step_rate(probe, range(warmup, warmup + timed)) * self.reals_per_step / probe.images_per_step)
        rates = distributed.mean_across_ranks({str(s): r for s, r in zip(stages, rates)}, self.device)  # one schedule for all
        rates = [rates[str(s)] for s in stages]
        seconds = self.grow.full_size_at * budget_seconds
        # One stage only (start at the full size): nothing to spread, any count trains it.
        self.images_per_stage = images_per_stage_for(seconds, rates, self.grow.fade_fraction) if len(rates) > 1 else self.reals_per_step
        sizes = stage_sizes(self.recipe.data.image_size)
        return {
            "images_per_stage": self.images_per_stage,
            "full_size_by_s": round(seconds, 1),
            "real_images_per_s": {str(sizes[s]): round(r, 1) for s, r in zip(stages, rates)},
            "probe_s": round(time.perf_counter() - started, 1),
        }

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
        growth = {"stage": stage, "alpha": alpha, "resolution": self.resolution, "images_per_stage": self.images_per_stage}
        return {**super().training_state(), "growth": growth}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if "growth" in state:
            if state["growth"].get("images_per_stage") is not None:  # auto's planned count: --resume keeps the route
                self.images_per_stage = int(state["growth"]["images_per_stage"])
            self.set_growth(int(state["growth"]["stage"]), float(state["growth"]["alpha"]))

    # --- one step -------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        self.set_growth(*self.growth_at(step))
        terms = super().train_step(step)
        terms["resolution"], terms["alpha"] = torch.tensor(float(self.resolution)), torch.tensor(self.growth[1])
        return terms
