"""Recipes: one pydantic schema with every default; a YAML file only overrides.

A recipe is validated as a whole, so a typo (`train.step`), a wrong type or a
bad value is reported as one line naming the file and the key, before any
work starts.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from synthgen.errors import SynthgenError

BUNDLED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def parse_budget(text: str) -> float:
    """'90s', '30m', '2h', '1h30m', '1.5h' -> seconds."""
    import re

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", str(text))
    if not text or not str(text).strip() or parts is None:
        raise ValueError(f"train.budget: '{text}' is not a duration like 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"train.budget: '{text}' must be longer than 0")
    return total


class Section(BaseModel):
    """A recipe section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def is_set(self, key: str) -> bool:
        """Whether `key` differs from its default: a key set to its default changes nothing, so no check refuses it."""
        return getattr(self, key) != type(self).model_fields[key].get_default(call_default_factory=True)


class DataConfig(Section):
    root: str = Field(
        "",
        description="Folder of images: one subfolder per class, or images directly inside (one class); pix2pix: A/ + B/ or side-by-side AB images; cyclegan: trainA/ + trainB/.",
    )
    image_size: int | Literal["auto"] = Field(
        "auto",
        description="Training size in px (square), b*2^k with 4 <= b <= 8, k >= 2 (28, 32, 48, 64, 96, 128); auto: the images' own size, at most 64 (translation: 32..256, a power of 2).",
    )
    channels: Literal[1, 3, "auto"] = Field(
        "auto", description="1 = grayscale, 3 = RGB; auto: 1 when every image is grayscale, else 3 (translation: decided per side, A and B may differ)."
    )
    resize: Literal["crop", "pad", "stretch"] = Field(
        "crop", description="How non-square or other-sized images reach image_size: centre crop, pad with black, or stretch."
    )
    strict: bool = Field(False, description="Refuse a dataset with unreadable files (by default they are skipped and listed in run.json).")
    hflip: bool = Field(False, description="Randomly mirror real images left-right (only where mirrored images are still valid).")
    sampling: Literal["balanced", "natural"] = Field(
        "balanced",
        description="balanced: every class drawn equally often (real and fake); natural: as often as it occurs in the data.",
    )
    # Translation (pix2pix, cyclegan). data.root then holds A/ + B/ (matched by stem), side-by-side AB
    # images, or trainA/ + trainB/ (unpaired); data.channels `auto` is decided per side.
    direction: Literal["AtoB", "BtoA"] = Field("AtoB", description="pix2pix: translate A into B (AtoB) or B into A (BtoA).")
    on_mismatch: Literal["error", "skip"] = Field(
        "error", description="pix2pix A/ + B/ folders: a file without its partner is an error listing them all, or is skipped."
    )
    dir_a: str = Field("A", description="pix2pix: the folder below data.root holding the A side (e.g. label).")
    dir_b: str = Field("B", description="pix2pix: the folder below data.root holding the B side, files named as their A partners (e.g. image).")
    jitter: float = Field(
        1.117, ge=1.0, le=2.0,
        description="Translation: load at image_size*jitter, then random-crop image_size (pix2pix: 286 -> 256); 1 = no jitter.",
    )

    @field_validator("image_size")
    @classmethod
    def _size_has_a_base(cls, size: int | str) -> int | str:
        from synthgen.models.layers import resolution_plan

        if size != "auto":
            resolution_plan(size)  # raises ValueError with the rule when it has none
        return size


class MinibatchDiscriminationConfig(Section):
    kernels: int = Field(0, ge=0, le=1000, description="Minibatch discrimination (Salimans et al. 2016): closeness kernels B of D's T-tensor layer, one feature each (0 = off; the paper: 100).")
    dims: int = Field(5, ge=1, le=100, description="Minibatch discrimination: dimensions C of each kernel's projection (the paper: 5).")


class ModelConfig(Section):
    backbone: str = Field(
        "dcgan",
        description="G and D architecture family (models/ registry: dcgan, resnet, r3, stylegan, progan); r3: R3GAN's normalisation-free ResNet (use spectral_norm: false); stylegan: StyleGAN2's G with the resnet D; progan: ProGAN's growable G and D (method progan grows them; spectral_norm: false).",
    )
    z_dim: int = Field(128, ge=1, description="Size of the latent noise vector z.")
    g_channels: int = Field(64, ge=4, description="G width at full resolution; doubles at each lower resolution.")
    d_channels: int = Field(64, ge=4, description="D width after its first layer; doubles at each lower resolution.")
    max_channels: int = Field(512, ge=4, description="Cap on the width of any layer of G or D.")
    g_cond_bn: bool = Field(False, description="Condition G through class-conditional batch norm instead of joining a one-hot label to z.")
    d_norm: Literal["none", "batch"] = Field("none", description="Normalisation inside the dcgan D (use none with wgan-gp; the resnet D never normalises).")
    spectral_norm: bool = Field(True, description="Spectral normalisation on every layer of D.")
    g_upsample: Literal["transposed", "resize", "bilinear"] = Field(
        "transposed",
        description="dcgan G and the resnet translator (cyclegan, stargan): how G doubles its resolution: transposed convolutions (DCGAN's 4x4, CycleGAN's 3x3), or a nearest-neighbour (resize) or bilinear resize then a 3x3 convolution (Odena et al. 2016: no checkerboard texture; a dcgan training step about 1.5x slower at 64 px, 43 against 64-66 img/s on flowers5, AMD EPYC lscpu model 49, AVX2, fp32).",
    )
    g_spectral_norm: bool = Field(False, description="Spectral normalisation on every layer of G (SAGAN/BigGAN style).")
    blocks_per_stage: int = Field(1, ge=1, le=8, description="r3: residual blocks per resolution in G and D.")
    expansion: int = Field(2, ge=1, le=8, description="r3: inverted-bottleneck expansion of each residual block.")
    group_width: int = Field(16, ge=1, description="r3: channels per group in the grouped 3x3 convolutions.")
    mapping_layers: int = Field(2, ge=1, le=8, description="stylegan: layers of the mapping MLP z -> w (StyleGAN: 8; stylegan2-ada's small-data configs: 2).")
    style_mixing: float = Field(
        0.9, ge=0, le=1, description="stylegan: probability that a training batch mixes two z's styles at a random layer (StyleGAN2: 0.9; 0 = off)."
    )
    minibatch_std: bool = Field(False, description="Append a minibatch standard-deviation channel late in D (anti-collapse).")
    pack: int = Field(1, ge=1, le=8, description="PacGAN: D judges this many samples at once, all real or all fake (anti-collapse).")
    minibatch_discrimination: MinibatchDiscriminationConfig = Field(default_factory=MinibatchDiscriminationConfig)

    @field_validator("minibatch_discrimination", mode="before")
    @classmethod
    def _null_is_off(cls, value):
        return {} if value is None else value  # `minibatch_discrimination:` with nothing under it: the defaults (off)
    # Translation (pix2pix, cyclegan): the generator is image -> image, D a PatchGAN.
    translator: Literal["unet", "resnet"] = Field(
        "unet", description="Translation G (models/ registry): unet (skips; pix2pix) or resnet (residual blocks; CycleGAN)."
    )
    norm: Literal["instance", "batch"] = Field(
        "instance", description="Translation G and D normalisation; instance: each image alone, the same output in any batch."
    )
    n_blocks: int = Field(9, ge=1, description="Residual blocks of the resnet translator (CycleGAN: 9 at 256 px, 6 at 128 px).")
    dropout: float = Field(0.5, ge=0, lt=1, description="unet: dropout in the three decoder blocks below the bottleneck (pix2pix's noise).")
    d_layers: int = Field(3, ge=1, le=6, description="PatchGAN D stride-2 layers: 3 = 70x70 patches, 2 = 34x34, 4 = 142x142.")

    @field_validator("backbone")
    @classmethod
    def _backbone_is_known(cls, backbone: str) -> str:
        from synthgen.models.registry import known_backbones

        if backbone not in known_backbones():
            raise ValueError(f"unknown backbone (known: {', '.join(known_backbones())})")
        return backbone


class ConditioningConfig(Section):
    type: Literal["acgan", "concat", "projection"] = Field("projection", description="How the class label enters D (models/conditioning.py).")
    aux_weight: float = Field(1.0, ge=0, description="Weight of the auxiliary classification loss (acgan only).")


class LossConfig(Section):
    type: Literal["minimax", "ns", "lsgan", "hinge", "wgan-gp", "rpgan"] = Field(
        "hinge", description="Adversarial loss (losses.py); rpgan: R3GAN's relativistic pairing, use with r1_gamma and r2_gamma."
    )
    gp_weight: float | None = Field(None, ge=0, description="Gradient-penalty weight; empty = the loss's default (10 for wgan-gp, else 0).")
    r1_gamma: float = Field(0.0, ge=0, description="R1 penalty weight on real images (0 = off).")
    r2_gamma: float = Field(0.0, ge=0, description="R2 penalty weight: R1's zero-centred gradient penalty on generated images (0 = off).")
    r1_every: int = Field(16, ge=1, description="Apply R1 and R2 lazily every this many D steps (scaled to compensate).")
    lecam_weight: float = Field(0.0, ge=0, description="LeCam regularisation (Tseng et al. 2021) of D's outputs toward the other side's moving average (0 = off).")
    lecam_decay: float = Field(0.99, ge=0, lt=1, description="LeCam: decay of the moving averages of D's real and fake outputs.")
    l1_weight: float = Field(100.0, ge=0, description="pix2pix: weight of the L1 distance between output and target.")
    cycle_weight: float = Field(10.0, ge=0, description="cyclegan: weight of the cycle-consistency L1 (A -> B -> A and B -> A -> B).")
    identity_weight: float = Field(
        0.5, ge=0, description="cyclegan: identity L1 weight as a fraction of cycle_weight (needs the same channels in A and B)."
    )


class TrainConfig(Section):
    steps: int = Field(10000, ge=1, description="Number of generator updates.")
    batch_size: int = Field(64, ge=1, description="Images per batch, real and fake each (cgan: at least 2; CycleGAN: 1 per domain).")
    lr_g: float = Field(2e-4, gt=0, description="Generator learning rate.")
    lr_d: float = Field(2e-4, gt=0, description="Discriminator learning rate (TTUR: may differ from lr_g).")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    n_dis: int = Field(1, ge=1, description="Discriminator updates per generator update.")
    unroll_steps: int = Field(
        0, ge=0, le=20,
        description="Unrolled GAN (Metz et al. 2016, cgan): G's loss is taken against D after this many more Adam steps of its own on this step's batch; D's real update is unchanged (0 = off; the paper: 5).",
    )
    unroll_backprop: bool = Field(
        True, description="Unrolled GAN: G's gradient also flows through D's unrolled updates (the paper's surrogate loss); false: only through the final judgement (cheaper)."
    )
    ema: bool = Field(True, description="Keep an exponential moving average of G, used for grids and sampling.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA decay, ramped up from 0 over the first steps (when ema_halflife_kimg is not set).")
    ema_halflife_kimg: float | None = Field(
        None, gt=0, description="EMA half-life in thousands of generated images (StyleGAN2/R3GAN), at most ema_rampup x the images seen so far; empty = ema_decay."
    )
    ema_rampup: float = Field(0.05, gt=0, le=1, description="EMA half-life limit as a share of the images trained on so far (with ema_halflife_kimg).")
    diffaugment: list[Literal["color", "translation", "cutout", "geometric"]] = Field(
        default_factory=list, description="DiffAugment policies applied to real and fake images before D (small datasets); geometric: ADA's affine warp (scale, stretch, rotation, sub-pixel shift)."
    )
    ada_target: float | None = Field(
        None, gt=0, lt=1,
        description="ADA (Karras et al. 2020): apply each diffaugment transform with a probability p steered so D's overfitting measure r_t approaches this (0.6); empty = always apply.",
    )
    ada_kimg: float = Field(100.0, gt=0, description="ADA: thousands of real images over which p can move from 0 to 1.")
    ada_interval: int = Field(4, ge=1, description="ADA: steps between adjustments of p.")
    ada_heldout: float = Field(
        0.0, ge=0, le=0.25,
        description="ADA: share of each class's images (at least one where a class has two) that D never trains on; p is then steered by ADA's r_v, how much more D trusts its training images than these, against train.ada_target, instead of r_t, which also rises while G is merely behind (on large datasets too). 0 = r_t.",
    )
    budget: str | None = Field(
        None, description="Training-time budget (e.g. 90s, 30m, 2h, 1h30m), counted from the first step (the gate's one-time set-up is timed apart) and over resumes: training stops when it is spent, with a final checkpoint; train.steps stays the upper limit."
    )
    patience: int = Field(0, ge=0, description="Early stopping: stop when the mean KID of the evaluation at checkpoints has not improved for this many evaluations (0 = off).")
    init_from: str | None = Field(
        None, description="Start from another run's weights (a run folder or checkpoint): tensors that fit are loaded, the rest (e.g. other classes' embeddings) initialised and listed."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: on a CPU with native bf16 (AVX512-BF16/AMX) the faster of fp32 and bf16, measured for this recipe and cached (speed.py); fp32 on other CPUs; bf16 AMP on CUDA (fp16 + grad scaling on older GPUs).",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile G and D: auto compiles only where it measures faster with its warm-up counted (runs of 5000+ steps; never with a gradient penalty, which compiled graphs cannot differentiate twice); on; off."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value  # YAML reads on/off as booleans
    log_every: int = Field(50, ge=1, description="Steps between log lines (log.jsonl and the progress bar).")
    sample_every: int = Field(500, ge=1, description="Steps between sample grids (grids/step-N.png).")
    checkpoint_every: int = Field(1000, ge=1, description="Steps between checkpoints (one is always written at the end).")
    keep_checkpoints: int = Field(3, ge=1, description="How many recent checkpoints to keep.")
    out_dir: str = Field("weights", description="Runs are written to out_dir/name/.")
    lr_decay: Literal["none", "linear", "cosine"] = Field(
        "none",
        description="linear: learning rates constant for the first half of steps, then linearly to 0 (CycleGAN); cosine: R3GAN's decay of the rates to lr_final_ratio and of r1/r2 gamma to a tenth over decay_kimg.",
    )
    decay_kimg: float = Field(1000.0, gt=0, description="lr_decay cosine: thousands of real images over which the rates and penalties decay (then held).")
    lr_final_ratio: float = Field(0.25, gt=0, le=1, description="lr_decay cosine: the final learning rate as a share of lr_g / lr_d.")
    on_nonfinite: Literal["rollback", "stop"] = Field(
        "rollback", description="A NaN/inf loss or weight (never saved): roll back to the last checkpoint with lower learning rates, or stop."
    )
    nonfinite_retries: int = Field(3, ge=0, description="Rollbacks allowed per run before training stops (train.on_nonfinite: rollback).")
    nonfinite_lr_factor: float = Field(0.5, gt=0, lt=1, description="Every learning rate is multiplied by this at each rollback.")
    pool_size: int = Field(50, ge=0, description="cyclegan: D also sees fakes from a history of this many (Shrivastava 2017); 0 = off.")


class GateConfig(Section):
    """The gate (metrics/gate.py): thresholds relative to real batches of the same class and size."""

    enabled: bool = Field(True, description="Check every generated batch against the real class before writing it (sample --no-gate skips).")
    percentile: float = Field(99.0, gt=50, le=100, description="Null percentile: a figure must be worse than this share of real batches (plus the margin) to fail.")
    kid_margin: float = Field(
        0.5, ge=0, description="KID may exceed the real batches' percentile by this fraction of the KID between the class and its nearest other class."
    )
    kid_spread_ratio: float = Field(
        1.0, ge=0, description="KID's margin is also capped at this multiple of the class's own spread (the KID of a batch of copies of one of its real images)."
    )
    coverage_ratio: float = Field(0.05, ge=0, le=1, description="Coverage must reach this fraction of real batches' median coverage.")
    diversity_headroom: float = Field(
        0.5, ge=0, le=1, description="Within-batch MS-SSIM may use up this share of the room between the real batches' percentile and 1 (identical images)."
    )
    duplicate_margin: float = Field(0.1, ge=0, le=1, description="Share of near-copies may exceed the real batches' percentile by this much.")
    diversity_ratio: float = Field(
        1.5, ge=1, description="Within-batch MS-SSIM may also not exceed this multiple of real batches' median (the tighter of the two limits, never below the real percentile)."
    )
    fidelity_margin: float = Field(
        0.15, ge=0, le=1, description="Share put in the intended class may fall this far below real batches' low percentile (the classifier's held-out accuracy at the batch size)."
    )
    fidelity_ratio: float = Field(0.5, ge=0, le=1, description="Floor of the fidelity limit: never below this fraction of the classifier's held-out accuracy on the class.")
    set_ratio: float = Field(
        0.5, ge=0, le=1, description="Once a class is complete: the recall of everything written for it must reach this fraction of real sets' low percentile at the same N."
    )
    recognised_only: bool = Field(
        False, description="Per image, before its batch is checked: an image the domain classifier puts in another class is drawn again (a fresh seed for the same index, at most 64 draws), so every written image is one it recognises as its class."
    )
    null_trials: int = Field(200, ge=20, description="Real batches drawn per class to calibrate the thresholds.")
    retries: int = Field(3, ge=0, description="A rejected batch is regenerated with fresh seeds this many times before its class is stopped.")
    domain_steps: int = Field(600, ge=10, description="Training steps of the domain classifier (trained once per run on its real images).")
    eval_during_training: bool = Field(True, description="At every checkpoint: KID per class on a fixed z set, best checkpoint kept, collapse warnings.")


class Recipe(Section):
    name: str = Field("run", description="Run name: the run is saved in train.out_dir/name/.")
    description: str = Field("", description="One line shown by `synthgen recipes`.")
    seed: int = Field(0, description="Seed for everything random in training.")
    method: str = Field("cgan", description="Training method (the train/ registry; `synthgen recipes --keys` lists them with their options).")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    conditioning: ConditioningConfig = Field(default_factory=ConditioningConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keys of the chosen method alone (options.KEY), validated by the method's own schema."
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, name: str) -> str:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
        return name


    @field_validator("method")
    @classmethod
    def _method_is_known(cls, method: str) -> str:
        from synthgen.train import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method (known: {', '.join(METHODS)})")
        return method

    @model_validator(mode="after")
    def _method_options(self) -> "Recipe":
        # Filled in with the method's defaults, so a saved recipe says every option it trained with.
        self.options = method_options(self).model_dump(mode="json")
        return self

    @model_validator(mode="after")
    def _model_keys_fit_the_backbone(self, info: ValidationInfo) -> "Recipe":
        from synthgen.models.registry import backbones_reading, keys_only_translation_reads, keys_other_backbones_read, keys_translation_ignores

        if not (info.context or {}).get("new_run"):
            return self  # a trained run's recipe is read as it was saved: refusing it now would strand its weights
        if translates(self):  # its networks are the translator and a PatchGAN-style D, not a backbone
            ignored = keys_translation_ignores(self.model)
            if ignored:
                raise ValueError(f"model.{ignored[0]}: not read by {self.method}'s networks (the {self.model.translator} translator and its D); remove the key")
            return self
        only_translation = keys_only_translation_reads(self.model)
        if only_translation:
            raise ValueError(f"model.{only_translation[0]}: read only by the translation methods (pix2pix, cyclegan, stargan), and method is {self.method}; remove the key")
        ignored = keys_other_backbones_read(self.model)  # set for another backbone: this one would ignore them
        if ignored:
            key, readers = ignored[0], backbones_reading(ignored[0])
            raise ValueError(f"model.{key}: read only by the {' and '.join(readers)} backbone{'s' * (len(readers) > 1)}, "
                             f"and model.backbone is {self.model.backbone}; remove the key or change the backbone")
        return self

    @model_validator(mode="after")
    def _keys_the_method_reads(self, info: ValidationInfo) -> "Recipe":
        """A data, train, loss or conditioning key set away from its default that neither the loop nor the method reads
        would be ignored without a word (l1_weight on acgan, diffaugment on pix2pix, jitter on acgan): refuse it."""
        from synthgen.train import METHODS
        from synthgen.train.loop import LOOP_KEYS

        if not (info.context or {}).get("new_run"):
            return self  # a trained run's recipe is read as it was saved
        reads = LOOP_KEYS | METHODS[self.method].reads
        for section in ("data", "conditioning", "loss", "train"):
            config = getattr(self, section)
            for key in type(config).model_fields:
                if f"{section}.{key}" not in reads and config.is_set(key):
                    raise ValueError(f"{section}.{key}: not read by method {self.method}; remove the key")
        return self

    @model_validator(mode="after")
    def _keys_agree(self) -> "Recipe":
        if translates(self):
            from synthgen.train import METHODS

            losses = getattr(METHODS[self.method], "losses", ("lsgan", "ns"))  # the papers' losses unless a method says
            if self.loss.type not in losses:
                raise ValueError(f"loss.type: {self.method} uses {' or '.join(losses)} (got {self.loss.type})")
            size = self.data.image_size
            if self.model.translator == "unet" and size != "auto" and size % 8:
                raise ValueError(f"data.image_size: the unet translator halves the size at least 3 times; use a multiple of 8 (got {size})")
        elif self.train.batch_size < 2:
            raise ValueError("train.batch_size: cgan needs at least 2 (batch norm and D compare images within a batch)")
        if self.train.budget is not None:
            parse_budget(self.train.budget)  # raises ValueError naming the format
        if self.train.batch_size % self.model.pack:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be a multiple of model.pack ({self.model.pack})")
        if self.train.unroll_steps and self.method != "cgan":
            raise ValueError(f"train.unroll_steps: only method cgan unrolls D (got method {self.method}); use 0")
        if self.train.unroll_steps and self.train.compile == "on":
            raise ValueError("train.compile: on does not combine with train.unroll_steps (D's unrolled weights are new tensors every step, and backpropagating through them needs eager autograd); use auto or off")
        if self.train.patience and not self.gate.eval_during_training:
            raise ValueError(f"train.patience: {self.train.patience} stops on the evaluation at checkpoints, which gate.eval_during_training: false turns off; turn it on or use patience 0")
        from synthgen.losses import penalises_gradients

        if self.train.compile == "on" and penalises_gradients(self.loss):
            raise ValueError("train.compile: on does not combine with a gradient penalty (loss.gp_weight, loss.r1_gamma, loss.r2_gamma; wgan-gp has one by default): torch.compile cannot differentiate D's gradient again; use auto or off")
        if self.loss.type == "wgan-gp" and self.model.d_norm == "batch":
            raise ValueError("model.d_norm: batch norm in D breaks the gradient penalty of wgan-gp; use none")
        from synthgen.train import METHODS

        if (check := getattr(METHODS[self.method], "check_recipe", None)) is not None:
            check(self)  # the method's own rules across sections (raises ValueError naming the key)
        return self


SECTIONS = {"data", "model", "conditioning", "loss", "train", "gate", "options"}


class NoOptions(Section):
    """The schema of a method without keys of its own: options must stay empty."""


def method_options(recipe: Recipe) -> Section:
    """recipe.options validated by its method's schema (the method class's `Options`)."""
    from synthgen.train import METHODS

    schema = getattr(METHODS[recipe.method], "Options", NoOptions)
    try:
        return schema.model_validate(recipe.options)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(["options", *map(str, error["loc"])])
        if error["type"] == "extra_forbidden":
            known = ", ".join(schema.model_fields) or "none"
            raise ValueError(f"{key}: not an option of method {recipe.method} (its options: {known})") from None
        raise ValueError(f"{key}: {error['msg'].removeprefix('Value error, ')} (got {error.get('input')!r})") from None


def translates(recipe: Recipe) -> bool:
    """Whether the recipe's method maps images to images (translate) rather than labels to images (sample)."""
    from synthgen.train import METHODS

    return METHODS[recipe.method].produces == "translations"


# --- loading -----------------------------------------------------------------


def find_recipe(name_or_path: str | Path) -> Path:
    """A path, or the name of a bundled recipe (`acgan` -> recipes/acgan.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = BUNDLED_RECIPES / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(p.stem for p in bundled_recipes())
    raise SynthgenError(f"{name_or_path}: no such recipe file (bundled recipes: {known})")


# recipes/ also holds the example augmentation pipeline (albumentations' format, for `augment --pipeline`).
NOT_TRAINING_RECIPES = {"augment.yaml"}


def bundled_recipes() -> list[Path]:
    return sorted(p for p in BUNDLED_RECIPES.glob("*.yaml") if p.name not in NOT_TRAINING_RECIPES)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, validate the result."""
    path = find_recipe(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthgenError(f"{path}: unreadable recipe ({exc}); expected a UTF-8 YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SynthgenError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise SynthgenError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    # A section whose keys are all commented out reads as null: it means "all defaults".
    raw = {key: ({} if value is None and key in SECTIONS else value) for key, value in raw.items()}
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source=str(path), new_run=True)


def apply_override(raw: dict, item: str) -> None:
    """`train.steps=2000` -> raw["train"]["steps"] = 2000 (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SynthgenError(f"--set {item}: expected key=value, e.g. --set train.steps=2000")
    node = raw
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SynthgenError(f"--set {item}: '{part}' is not a section")
    try:
        node[leaf] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise SynthgenError(f"--set {item}: value is not valid YAML ({getattr(exc, 'problem', None) or 'parse error'})") from None


def with_gate_overrides(gate: GateConfig, overrides: list[str]) -> GateConfig:
    """`gate.KEY=VALUE` overrides from a command line (sample, eval), validated like a recipe."""
    raw = {"gate": gate.model_dump(mode="json")}
    for item in overrides:
        if not item.strip().startswith("gate."):
            raise SynthgenError(f"--set {item}: only gate.* keys can be set here (the rest of the recipe is the trained run's)")
        apply_override(raw, item)
    return validate(raw, source="--set").gate


def validate(raw: dict, source: str = "recipe", new_run: bool = False) -> Recipe:
    """The recipe of `raw`; new_run adds the checks that only a recipe about to be trained must pass."""
    try:
        return Recipe.model_validate(raw, context={"new_run": new_run})
    except ValidationError as exc:
        raise SynthgenError(describe_error(exc.errors()[0], source)) from None


def describe_error(error: dict, source: str) -> str:
    """One line: file, dotted key, what was wrong, and the closest valid key for a typo."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    if not loc:  # a cross-key rule (model validator): its message names the keys
        return f"{source}: {error['msg'].removeprefix('Value error, ')}"
    if error["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join(loc[:-1] + close)}'?" if close else f"valid keys: {', '.join(valid)}"
        return f"{source}: unknown key '{key}' ({hint})"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    key = ".".join(_field_path(error["loc"]))  # drops union-member tags: data.image_size.int -> data.image_size
    return f"{source}: {key}: {message} (got {error.get('input')!r})"


def _field_path(loc) -> list[str]:
    """The leading part of a pydantic error location that is recipe keys (and list indices)."""
    model: Any = Recipe
    parts = []
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if isinstance(part, int):
            parts.append(str(part))
        elif fields is not None and part in fields:
            parts.append(part)
            model = fields[part].annotation
        else:
            break
    return parts


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields)


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def describe_keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, description) for every key: the recipe reference."""
    from synthgen.train import METHODS

    rows = []
    for section_name, section in Recipe.model_fields.items():
        annotation = section.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            rows += _section_rows(section_name, annotation)
        elif section_name != "options":
            rows.append((section_name, section.default, section.description or ""))
    options: dict[str, tuple] = {}  # options.KEY -> (default, description -> the methods that have it)
    for name, method in METHODS.items():
        for key, default, description in _section_rows("options", getattr(method, "Options", NoOptions)):
            options.setdefault(key, (default, {}))[1].setdefault(description, []).append(name)
    for key, (default, described) in options.items():  # a key several methods share is one row naming them
        text = "; ".join(f"{d} (method{'s' if len(names) > 1 else ''} {', '.join(names)})" for d, names in described.items())
        rows.append((key, default, text))
    return rows


def _section_rows(prefix: str, section: type[Section], suffix: str = "") -> list[tuple[str, Any, str]]:
    rows = []
    for key, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):  # a sub-section: its keys, dotted
            rows += _section_rows(f"{prefix}.{key}", field.annotation, suffix)
            continue
        default = field.default_factory() if field.default_factory else field.default
        rows.append((f"{prefix}.{key}", default, (field.description or "") + suffix))
    return rows
