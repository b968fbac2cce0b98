"""Learning-rate and penalty schedules: functions of the step alone, so a resumed run follows the same curve."""

from __future__ import annotations

import math


def cosine_progress(recipe, step: int) -> float:
    """R3GAN's cosine decay: 1 at the start, 0 after train.decay_kimg thousand real images, then held."""
    images = step * recipe.train.batch_size * recipe.train.n_dis
    done = min(1.0, images / (recipe.train.decay_kimg * 1000))
    return 0.5 * (1 + math.cos(math.pi * done))


def lr_factor(recipe, step: int) -> float:
    """Multiplier of lr_g and lr_d at `step` (0-based)."""
    t = recipe.train
    if t.lr_decay == "linear":  # CycleGAN: constant for the first half of the steps, then linearly to 0
        half = t.steps // 2
        return 1.0 - max(0, step - half) / (t.steps - half)
    if t.lr_decay == "cosine":
        return t.lr_final_ratio + (1 - t.lr_final_ratio) * cosine_progress(recipe, step)
    return 1.0


def penalty_factor(recipe, step: int) -> float:
    """Multiplier of r1_gamma and r2_gamma: with lr_decay cosine they fall to a tenth, as R3GAN's gamma does."""
    if recipe.train.lr_decay == "cosine":
        return 0.1 + 0.9 * cosine_progress(recipe, step)
    return 1.0
