"""InfoGAN (Chen et al. 2016): latent codes that G must keep recoverable, so they come to mean something.

G takes z and the codes declared in options.codes (models/infogan.py); Q,
a head on D's trunk, guesses the codes back from G's images. Both D's and
G's losses add -sum_i lambda_i * E log Q(c_i | G(z, c)), the variational
lower bound of the mutual information I(c; G(z, c)) up to the constant
H(c): cross-entropy for a categorical code, a Gaussian log-likelihood for
a continuous one. The rest is the conditional GAN (cgan.py): with one class
it is the paper's unconditional InfoGAN; with several, G and D are also
class-conditioned and the codes capture the style within a class.

Logged per code: mi_<name> = H(c) + E log Q(c | x), the bound in nats
(log K for a perfectly recovered K-way code, 0 at chance).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator

from synthgen.errors import SynthgenError
from synthgen.models.infogan import InfoDiscriminator, LatentCodes
from synthgen.models.registry import get_backbone
from synthgen.recipe import Section, method_options
from synthgen.train.cgan import ConditionalGAN

CODES_SEED = 0x1F0_6A4  # the codes of sampled image `seed` come from their own stream, apart from its z


class CodeSpec(Section):
    kind: Literal["categorical", "continuous"] = Field(..., description="categorical: one of `size` values (one-hot); continuous: uniform in [-1, 1].")
    size: int = Field(10, ge=2, description="categorical: the number of values.")
    name: str = Field("", description="The code's name for --code NAME=VALUE; empty: c<position> (c0, c1, ...).")


class InfoGANOptions(Section):
    codes: list[CodeSpec] = Field(
        default_factory=lambda: [CodeSpec(kind="categorical", size=10), CodeSpec(kind="continuous"), CodeSpec(kind="continuous")],
        description="Latent codes beside z, each {kind: categorical (one-hot of `size` values, default 10) or continuous (uniform in [-1, 1]), name: optional (default c<position>)}, e.g. [{kind: categorical, size: 10}, {kind: continuous}]; default: the paper's MNIST codes (one 10-way, two continuous).",
    )
    lambda_categorical: float = Field(1.0, ge=0, description="Weight of the mutual-information bound of each categorical code (the paper: 1).")
    lambda_continuous: float = Field(0.1, ge=0, description="Weight of each continuous code's bound (smaller: its Gaussian log-likelihood has a larger scale).")
    q_hidden: int = Field(128, ge=1, description="Width of the hidden layer of the Q head on D's trunk features.")

    @field_validator("codes")
    @classmethod
    def _names_are_unique(cls, codes: list[CodeSpec]) -> list[CodeSpec]:
        if not codes:
            raise ValueError("declare at least one code")
        names = [code.name or f"c{i}" for i, code in enumerate(codes)]
        if len(set(names)) != len(names):
            raise ValueError(f"code names must differ (got {names})")
        return [code.model_copy(update={"name": name}) for code, name in zip(codes, names)]


def latent_codes(recipe) -> LatentCodes:
    codes = method_options(recipe).codes
    return LatentCodes(tuple(c.name for c in codes), tuple(c.size if c.kind == "categorical" else 0 for c in codes))


class InfoGAN(ConditionalGAN):
    Options = InfoGANOptions

    def __init__(self, recipe, data, precision):
        super().__init__(recipe, data, precision)
        self.codes = latent_codes(recipe)
        options = method_options(recipe)
        self.weights = [options.lambda_categorical if size else options.lambda_continuous for size in self.codes.sizes]

    @staticmethod
    def check_recipe(recipe) -> None:
        if recipe.model.pack > 1:
            raise ValueError("model.pack: infogan's Q recovers the codes of each image; use 1")

    @staticmethod
    def build_networks(recipe, num_classes: int):
        codes, m, d = latent_codes(recipe), recipe.model, recipe.data
        backbone = get_backbone(m.backbone)
        generator = backbone.generator(m.model_copy(update={"z_dim": m.z_dim + codes.input_dim}), d.image_size, d.channels, num_classes)
        hidden = method_options(recipe).q_hidden
        discriminator = InfoDiscriminator(backbone.trunk, m, d.image_size, d.channels, num_classes, recipe.conditioning.type, codes.q_dim, hidden)
        return generator, discriminator

    # --- G's input: z and the codes ---------------------------------------------

    def _with_codes(self, z: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        values = self.codes.draw(len(z), gen, device=z.device if gen is None else "cpu")
        return torch.cat([z, self.codes.encode(values).to(z.device)], dim=1)

    def _code_terms(self, latent: torch.Tensor, extra: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-sum_i lambda_i E log Q(c_i | x) on the generated batch, and the bound per code for the log."""
        values = self.codes.decode(latent[:, self.recipe.model.z_dim :])
        log_q = self.codes.log_likelihoods(extra[0], values)
        loss = -sum(weight * ll.mean() for weight, ll in zip(self.weights, log_q))
        bounds = {f"mi_{name}": self.codes.entropy(i) + ll.mean().detach() for i, (name, ll) in enumerate(zip(self.codes.names, log_q))}
        return loss, bounds

    # --- what `synthgen sample` and `traverse` call ------------------------------

    @staticmethod
    def latent(recipe, seed: int, truncation: float | None, codes: dict[int, float] | None = None) -> torch.Tensor:
        """[z, codes] of image `seed`: random codes from the seed, except those fixed by `codes` (index -> value)."""
        from synthgen.sample import latent

        declared = latent_codes(recipe)
        values = declared.draw(1, torch.Generator().manual_seed(seed ^ CODES_SEED))
        for index, value in (codes or {}).items():
            values[0, index] = value
        return torch.cat([latent(seed, recipe.model.z_dim, truncation), declared.encode(values)[0]])

    @staticmethod
    def parse_codes(recipe, assignments: list[str]) -> dict[int, float]:
        """`NAME=VALUE` strings -> {code index: value}: a categorical code takes one of its values, a continuous one any number."""
        declared, fixed = latent_codes(recipe), {}
        for item in assignments:
            name, sep, text = item.partition("=")
            index = code_index(declared, name.strip(), f"--code {item}")
            if not sep:
                raise SynthgenError(f"--code {item}: expected NAME=VALUE, e.g. --code {name.strip()}=1")
            fixed[index] = code_value(declared, index, text, f"--code {item}")
        return fixed

    @staticmethod
    def code_sweep(recipe, name: str, steps: int, span: float) -> tuple[int, list[float]]:
        """The code `name` and the values a traversal shows: every value of a categorical code, `steps` from -span to span of a continuous one."""
        declared = latent_codes(recipe)
        index = code_index(declared, name, f"--code {name}")
        if declared.categorical(index):
            return index, [float(v) for v in range(declared.sizes[index])]
        return index, torch.linspace(-span, span, steps).tolist()


def code_index(declared: LatentCodes, name: str, option: str) -> int:
    if name not in declared.names:
        raise SynthgenError(f"{option}: unknown code '{name}' (this run's codes: {', '.join(declared.names)})")
    return declared.names.index(name)


def code_value(declared: LatentCodes, index: int, text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if declared.categorical(index):
        size = declared.sizes[index]
        if not value.is_integer() or not 0 <= value < size:
            raise SynthgenError(f"{option}: {declared.names[index]} is a categorical code with values 0..{size - 1}")
    elif not math.isfinite(value):
        raise SynthgenError(f"{option}: {declared.names[index]} is a continuous code; expected a number (trained on -1..1)")
    return value
