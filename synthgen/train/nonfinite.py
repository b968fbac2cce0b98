"""NaN or inf in training: never saved; rolled back with a lower learning rate, or stopped (train.on_nonfinite).

A diverging GAN shows it as a NaN/inf loss (or, one step later, NaN
weights). The loop asks `NonFiniteGuard.check` after every step and before
every checkpoint. `rollback` restores the last checkpoint (weights,
optimisers, RNG: as --resume) and multiplies every learning rate by
`train.nonfinite_lr_factor`, at most `train.nonfinite_retries` times per
run; `stop` (or no retries left, or no checkpoint yet) stops with a message
naming the step and the losses. The number of rollbacks travels in
state.json, so the lowered rates and the count survive a --resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from synthgen import checkpoint as ckpt
from synthgen import distributed
from synthgen.errors import SynthgenError

ROLLBACKS = "nonfinite_rollbacks"  # key in state.json


class NonFiniteGuard:
    def __init__(self, recipe, method, run_dir: Path, device: torch.device, state: dict, restore):
        self.train, self.method, self.run_dir, self.device = recipe.train, method, run_dir, device
        self.state, self.restore = state, restore  # restore(method, checkpoint) -> step, as --resume does
        state.setdefault(ROLLBACKS, 0)

    def check(self, step: int, losses: dict[str, float]) -> int | None:
        """None when every loss is finite; else the step to continue after (rolled back), or raises SynthgenError."""
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if not distributed.any_rank(bool(bad), self.device):
            return None
        return self._recover(step, "non-finite loss " + (", ".join(f"{k}={v}" for k, v in bad.items()) or "on another process"))

    def check_weights(self, step: int) -> int | None:
        """Before a checkpoint: None when every weight is finite (a NaN weight is never saved)."""
        finite = all(bool(torch.isfinite(p).all()) for net in self.method.networks.values() for p in net.state_dict().values() if p.is_floating_point())
        if not distributed.any_rank(not finite, self.device):
            return None
        return self._recover(step, "non-finite weights")

    def _recover(self, step: int, what: str) -> int:
        done = self.state[ROLLBACKS]
        last = ckpt.latest_checkpoint(self.run_dir)
        if self.train.on_nonfinite == "stop":
            raise SynthgenError(f"step {step}: {what}; stopped (train.on_nonfinite: stop).{_advice(last)}")
        if done >= self.train.nonfinite_retries:
            raise SynthgenError(f"step {step}: {what} after {done} rollback(s) with lower learning rates (train.nonfinite_retries: {self.train.nonfinite_retries}); stopped.{_advice(last)}")
        if last is None:
            raise SynthgenError(f"step {step}: {what} before the first checkpoint, nothing to roll back to; lower train.lr_g / train.lr_d or save earlier with train.checkpoint_every")
        back = self.restore(self.method, last)
        self.state[ROLLBACKS] = done + 1
        # The checkpoint's rates already carry the rollbacks made before it was saved.
        factor = self.train.nonfinite_lr_factor ** (done + 1 - last.state.get(ROLLBACKS, 0))
        for optimizer in self.method.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:  # train.lr_decay's base rate
                    group["initial_lr"] *= factor
        if distributed.is_main():
            with open(self.run_dir / "log.jsonl", "a") as handle:
                event = {"step": step, "event": "nonfinite", "what": what, "rolled_back_to": back, "lr_scale": self.train.nonfinite_lr_factor ** (done + 1)}
                handle.write(json.dumps(event) + "\n")
        return back


def _advice(last) -> str:
    where = f" The last good checkpoint is step {last.step} ({last.path})." if last else ""
    return f"{where} Lower train.lr_g / train.lr_d, or set train.on_nonfinite: rollback."
