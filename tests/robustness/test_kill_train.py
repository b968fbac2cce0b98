"""SIGKILL during training, at random moments and at chosen points of a checkpoint write.

After every kill: each checkpoint on disk is complete (state.json readable,
every weights file matching its recorded sha256, optimiser state loadable);
`--resume` (or a fresh start when no checkpoint was finished) then completes
the run, and its final weights equal an uninterrupted run's bit for bit.
Most trials fork this already-imported process (a run takes about a second);
one goes through the real command line in subprocesses.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from synthgen import checkpoint as ckpt
from synthgen.train import loop as loop_module
from synthgen.recipe import recipe_to_yaml
from synthgen.train.loop import run_dir_of, train
from tests.conftest import REPO
from tests.robustness import tally
from tests.robustness.conftest import fork, kill_after, kill_self, small_recipe, timed, wait
from tests.test_train import assert_same_tensors, final_tensors

STEPS = 24


def kill_recipe(root: Path, out_dir: Path):
    return small_recipe(root, out_dir, train={"steps": STEPS, "checkpoint_every": 3, "keep_checkpoints": 2, "sample_every": 4})


@pytest.fixture(scope="module")
def reference(two_classes, tmp_path_factory) -> dict:
    """The final weights of the same run never interrupted (and how long it took, in `timing`)."""
    result, timing["train"] = timed(lambda: train(kill_recipe(two_classes, tmp_path_factory.mktemp("reference"))))
    return final_tensors(result.run_dir)


timing: dict[str, float] = {}


def train_or_resume(recipe) -> None:
    train(recipe, resume=ckpt.latest_checkpoint(run_dir_of(recipe)) is not None)


def assert_sound(run_dir: Path) -> None:
    """Every checkpoint a reader can find is whole and verified."""
    for path in sorted((run_dir / ckpt.CHECKPOINTS).glob("step-*")):
        checkpoint = ckpt.read_checkpoint(path)
        for name in ("G", "D", "G_ema"):
            checkpoint.verified_sha256(name)
            checkpoint.weights(name)
        load_file(path / ckpt.OPTIM_FILE)


def finish_and_compare(recipe, reference: dict) -> None:
    run_dir = run_dir_of(recipe)
    assert_sound(run_dir)
    train_or_resume(recipe)
    assert_same_tensors(reference, final_tensors(run_dir))
    assert not list((run_dir / ckpt.CHECKPOINTS).glob(".*")), "leftover temporary checkpoint folders"
    assert not [p for p in run_dir.rglob(".*.tmp-*")], "leftover temporary files"
    steps = [line["step"] for line in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "d_loss" in line]
    assert steps == list(range(1, STEPS + 1)), "log.jsonl: a step missing or repeated"


@pytest.mark.parametrize("seed", range(8))
def test_sigkill_at_random_moments(two_classes, tmp_path, reference, seed):
    """Two kills at random moments (seeded), then the run is completed."""
    recipe = kill_recipe(two_classes, tmp_path)
    rng = random.Random(seed)
    pending = []
    for share in (0.9, 0.5):  # the second kill lands in what is left after the resume
        pid = fork(lambda: train_or_resume(recipe))
        if kill_after(pid, rng.uniform(0.05, share) * timing["train"]):
            pending.append(tally.fault("train: SIGKILL at a random moment"))
            assert_sound(run_dir_of(recipe))
    finish_and_compare(recipe, reference)
    for fault in pending:
        fault.survived()


def _on_call(target, attribute: str, nth: int, action) -> None:
    """In the child: from the `nth` call of target.attribute on, call action(original, *args) instead."""
    original, calls = getattr(target, attribute), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= nth:
            return action(original, *args, **kwargs)
        return original(*args, **kwargs)

    setattr(target, attribute, patched)


def _half_written_then_killed(original, tensors, path, *rest):
    original(tensors, path, *rest)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    kill_self()


def _json_half_written_then_killed(original, path, data):
    text = json.dumps(data)
    Path(path).write_text(text[: len(text) // 2])
    kill_self()


def _checkpoint_rename_killed(which: int):
    """Kill at the `which`-th rename of a finished temporary checkpoint folder into place."""
    seen = [0]

    def action(original, src, dst):
        if Path(src).name.startswith(".step-"):
            seen[0] += 1
            if seen[0] == which:
                kill_self()
        return original(src, dst)

    return action


def _delete_killed_half_way(original, path, *args, **kwargs):
    files = sorted(Path(path).iterdir())
    if files:
        files[0].unlink()  # one file of the old checkpoint gone, the rest still there
    kill_self()


def _log_line_cut(original, run_dir, step, timer, stats, progress, clock=None):
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write('{"step": %d, "d_lo' % step)
    kill_self()


def _grid_temp_left(original, src, dst):
    if ".tmp-" in Path(src).name and Path(dst).suffix == ".png":
        kill_self()  # the grid's temporary file is written, not renamed
    return original(src, dst)


INJECTIONS = {
    # where the child kills itself: (object, attribute, from which call on, what it does instead)
    "weights file half written": (ckpt, "save_file", 5, _half_written_then_killed),  # 2nd checkpoint's G
    "state.json half written": (ckpt, "_write_json", 3, _json_half_written_then_killed),
    "first checkpoint complete, not yet renamed": (os, "replace", 1, _checkpoint_rename_killed(1)),
    "checkpoint complete, not yet renamed": (os, "replace", 1, _checkpoint_rename_killed(2)),
    "old checkpoint half deleted": (shutil, "rmtree", 1, _delete_killed_half_way),
    "log line cut": (loop_module, "_log", 7, _log_line_cut),
    "grid temporary file left": (os, "replace", 1, _grid_temp_left),
}


@pytest.mark.parametrize("point", list(INJECTIONS))
def test_sigkill_at_chosen_points_of_a_save(two_classes, tmp_path, reference, point):
    recipe = kill_recipe(two_classes, tmp_path)

    def killed_at_point():
        _on_call(*INJECTIONS[point])  # only in the child
        train_or_resume(recipe)

    fault = tally.fault(f"train: SIGKILL, {point}")
    assert wait(fork(killed_at_point)) == -signal.SIGKILL, "the injected kill point was never reached"
    assert_sound(run_dir_of(recipe))
    finish_and_compare(recipe, reference)
    fault.survived()


def test_cli_train_killed_then_resumed_through_the_command_line(two_classes, tmp_path, reference):
    """The real process boundary: `synthgen train` SIGKILLed mid-run, then `synthgen train --resume`."""
    recipe = kill_recipe(two_classes, tmp_path)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(recipe_to_yaml(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the thread count of `reference`
    command = [sys.executable, "-m", "synthgen", "train", str(recipe_file)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = run_dir_of(recipe) / "log.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    fault = tally.fault("train: SIGKILL of the synthgen train process")
    assert_sound(run_dir_of(recipe))
    resumed = subprocess.run(command + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert_same_tensors(reference, final_tensors(run_dir_of(recipe)))
    fault.survived()
