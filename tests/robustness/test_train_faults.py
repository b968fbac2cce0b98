"""Training faults that do not kill the process: NaN/inf, and a disk that fills up.

A non-finite loss or weight is never saved; `train.on_nonfinite: rollback`
(the default) goes back to the last checkpoint with every learning rate
halved, at most `train.nonfinite_retries` times; `stop` stops with one line.
A checkpoint that cannot be written stops the run with one line and leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from synthgen import checkpoint as ckpt
from synthgen.errors import SynthgenError, WriteFailed
from synthgen.recipe import recipe_to_yaml
from synthgen.train.cgan import ConditionalGAN
from synthgen.train.loop import run_dir_of, train
from tests.robustness import tally
from tests.robustness.conftest import cli, error_line, small_recipe
from tests.robustness.test_kill_train import assert_sound


def poison(monkeypatch, steps: set[int], network: str = "D", after: bool = False, every_time: bool = False) -> None:
    """Fill the first weight of `network` with NaN at these (0-based) steps, before (or after) the step runs."""
    original, done = ConditionalGAN.train_step, set()

    def train_step(self, step):
        def spoil():
            if step in steps and (every_time or step not in done):
                done.add(step)
                with torch.no_grad():
                    next(getattr(self, network).parameters()).fill_(float("nan"))

        if not after:
            spoil()
        losses = original(self, step)
        if after:
            spoil()
        return losses

    monkeypatch.setattr(ConditionalGAN, "train_step", train_step)


def assert_every_checkpoint_finite(run_dir: Path) -> None:
    assert_sound(run_dir)
    for path in (run_dir / ckpt.CHECKPOINTS).glob("step-*"):
        checkpoint = ckpt.read_checkpoint(path)
        for name in ("G", "D", "G_ema"):
            assert all(torch.isfinite(t).all() for t in checkpoint.weights(name).values() if t.is_floating_point()), path


def events(run_dir: Path) -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if e.get("event") == "nonfinite"]


def learning_rates(run_dir: Path) -> set[float]:
    state = ckpt.latest_checkpoint(run_dir).state
    return {group["lr"] for opt in state["optimizers"].values() for group in opt["param_groups"]}


def test_nan_loss_rolls_back_with_a_lower_learning_rate(two_classes, tmp_path, monkeypatch):
    fault = tally.fault("train: NaN loss (rollback)")
    poison(monkeypatch, {4})  # step 5: D's weights turn NaN, so do its losses
    result = train(small_recipe(two_classes, tmp_path))
    assert result.step == 12
    assert [(e["step"], e["rolled_back_to"]) for e in events(result.run_dir)] == [(5, 3)]
    assert learning_rates(result.run_dir) == {2e-4 * 0.5}
    assert ckpt.latest_checkpoint(result.run_dir).state["nonfinite_rollbacks"] == 1
    assert_every_checkpoint_finite(result.run_dir)
    fault.survived()


def test_nan_weights_are_never_saved(two_classes, tmp_path, monkeypatch):
    """G's weights turn NaN after step 6's update (its losses were finite): the step-6 checkpoint is not written from them."""
    fault = tally.fault("train: NaN weights at a checkpoint (rollback)")
    poison(monkeypatch, {5}, network="G", after=True)
    result = train(small_recipe(two_classes, tmp_path))
    assert [(e["step"], e["rolled_back_to"], e["what"]) for e in events(result.run_dir)] == [(6, 3, "non-finite weights")]
    assert_every_checkpoint_finite(result.run_dir)
    fault.survived()


def test_nan_every_time_stops_after_the_allowed_rollbacks(two_classes, tmp_path, monkeypatch):
    fault = tally.fault("train: NaN loss that keeps coming back")
    poison(monkeypatch, {4}, every_time=True)
    recipe = small_recipe(two_classes, tmp_path, train={"nonfinite_retries": 2})
    with pytest.raises(SynthgenError, match=r"step 5: non-finite loss .* after 2 rollback\(s\).*last good checkpoint is step 3"):
        train(recipe)
    assert len(events(run_dir_of(recipe))) == 2
    assert_every_checkpoint_finite(run_dir_of(recipe))
    fault.survived()


def test_on_nonfinite_stop_is_one_line_from_the_command_line(two_classes, tmp_path, monkeypatch):
    fault = tally.fault("train: NaN loss (stop)")
    poison(monkeypatch, {4})
    recipe = small_recipe(two_classes, tmp_path, train={"on_nonfinite": "stop"})
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
    code, output = cli("train", tmp_path / "r.yaml")
    assert code == 2
    assert "step 5: non-finite loss d_loss=nan" in error_line(output) and "on_nonfinite: stop" in output
    assert ckpt.latest_checkpoint(run_dir_of(recipe)).step == 3
    assert_every_checkpoint_finite(run_dir_of(recipe))
    fault.survived()


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(two_classes, tmp_path, monkeypatch):
    fault = tally.fault("train: disk full while writing a checkpoint")
    real, calls = ckpt.save_file, [0]

    def save_file(tensors, path, *args):
        calls[0] += 1
        if calls[0] == 6:  # the second checkpoint, half of its files written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(tensors, path, *args)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    recipe = small_recipe(two_classes, tmp_path)
    with pytest.raises(WriteFailed, match=r"step-0000006: could not write \(No space left on device\); the last checkpoint \(step 3\) is intact"):
        train(recipe)
    run_dir = run_dir_of(recipe)
    assert ckpt.latest_checkpoint(run_dir).step == 3 and not list((run_dir / ckpt.CHECKPOINTS).glob(".*"))
    assert_sound(run_dir)
    monkeypatch.undo()
    assert train(recipe, resume=True).step == 12  # space again: --resume finishes
    fault.survived()


def test_disk_full_from_the_command_line_is_one_line_and_exit_1(two_classes, tmp_path, monkeypatch):
    fault = tally.fault("train: disk full (CLI)")
    monkeypatch.setattr(ckpt, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    recipe = small_recipe(two_classes, tmp_path)
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe))
    code, output = cli("train", tmp_path / "r.yaml")
    assert code == 1 and "step-0000003: could not write (No space left on device); no earlier checkpoint" in error_line(output)
    fault.survived()
