"""`synthgen traverse`: one latent code swept across the columns of a grid, z varied down the rows.

Each row keeps its own z (and the other codes, unless fixed with
`--code NAME=VALUE`) and changes only the swept code, so what changes along a
row is what that code controls. A categorical code shows each of its values;
a continuous one `steps` values from -span to span (trained on -1..1; the
InfoGAN paper also looks past that, at -2..2).
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthgen.errors import SynthgenError
from synthgen.imaging import save_grid
from synthgen.sample import TrainedGenerator, image_seed
from synthgen.train import METHODS


def split_code_arguments(arguments: list[str]) -> tuple[str, list[str]]:
    """`--code c1 --code c0=3` -> ("c1", ["c0=3"]): the one code without a value is the swept one."""
    swept = [a.strip() for a in arguments if "=" not in a]
    if len(swept) != 1:
        raise SynthgenError(f"--code: name exactly one code to sweep (got {swept or 'none'}); fix others with --code NAME=VALUE")
    return swept[0], [a for a in arguments if "=" in a]


def traverse_images(
    generator: TrainedGenerator, code: str, steps: int = 9, rows: int = 8, class_name: str | None = None,
    fixed: list[str] = (), seed: int = 0, span: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """uint8 images [rows * columns, C, H, W], row by row, and the number of columns."""
    method = generator.method
    if not hasattr(method, "code_sweep"):
        with_codes = [name for name, m in METHODS.items() if hasattr(m, "code_sweep")]
        raise SynthgenError(f"traverse: {generator.run_dir} is a run of method {generator.recipe.method}, which has no latent codes (methods with codes: {', '.join(with_codes)})")
    index, values = method.code_sweep(generator.recipe, code, steps, span)
    class_index = _class_index(generator, class_name)
    held = method.parse_codes(generator.recipe, list(fixed))
    if index in held:
        raise SynthgenError(f"--code {code}: swept and fixed at once; fix only the other codes")
    seeds = [image_seed(seed, "traverse", row) for row in range(rows)]
    columns = []
    for value in values:
        generator.latent_options = {"codes": {**held, index: value}}
        columns.append(generator.generate(class_index, seeds, truncation=None))
    generator.latent_options = {}
    return torch.stack(columns, dim=1).flatten(0, 1), len(values)


def _class_index(generator: TrainedGenerator, class_name: str | None) -> int:
    if class_name is None:
        if len(generator.class_names) > 1:
            raise SynthgenError(f"--class: this run is class-conditional; choose one of {', '.join(generator.class_names)}")
        return 0
    return generator.class_index(class_name)


def write_traverse(generator: TrainedGenerator, out: str | Path, code_arguments: list[str], **options) -> Path:
    """The traversal grid as one PNG at `out` (written atomically)."""
    out = Path(out)
    if out.is_dir():
        raise SynthgenError(f"--out {out}: is a folder, expected a PNG file name (e.g. grid.png)")
    code, fixed = split_code_arguments(code_arguments)
    images, columns = traverse_images(generator, code, fixed=fixed, **options)
    save_grid(images, out, nrow=columns)
    return out
