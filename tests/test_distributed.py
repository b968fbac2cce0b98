"""Training on 2 processes with torchrun (gloo on CPU): it runs, --resume is exact, losses match one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthgen import distributed
from synthgen.data.batches import BatchDrawer
from synthgen.data.loading import load_labelled
from synthgen.errors import SynthgenError
from synthgen.recipe import load_recipe
from synthgen.train.loop import refuse_if_one_process, train
from tests.conftest import REPO
from tests.test_train import assert_same_tensors, final_tensors

STEPS, HALF = 16, 8


def recipe_sets(root: Path, out_dir: Path, name: str, steps: int = STEPS) -> list[str]:
    return [
        f"data.root={root}", "data.image_size=28", "data.channels=1", "model.g_channels=16", "model.d_channels=16",
        "model.z_dim=32", "train.batch_size=32", "train.log_every=4", f"train.sample_every={HALF}",
        f"train.checkpoint_every={HALF}", "train.precision=fp32", "train.diffaugment=[translation]",
        f"train.out_dir={out_dir}", f"name={name}", f"train.steps={steps}", "gate.eval_during_training=false",
    ]


def torchrun_train(sets: list[str], *extra: str) -> subprocess.CompletedProcess:
    command = distributed.torchrun_command(2, ["train", "recipes/acgan.yaml", *[a for s in sets for a in ("--set", s)], *extra])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def log_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(four_classes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    torchrun_train(recipe_sets(four_classes, out, "ddp"))
    return out / "ddp"


def test_two_process_run_writes_one_run_from_rank_0(ddp_run):
    lines = log_of(ddp_run)
    assert [line["step"] for line in lines] == list(range(4, STEPS + 1, 4))  # one writer: no duplicated lines
    assert all(torch.isfinite(torch.tensor(line["d_loss"])) for line in lines)
    assert json.loads((ddp_run / "run.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == [f"step-{HALF:07d}", f"step-{STEPS:07d}"]
    assert sorted(p.name for p in (ddp_run / "grids").iterdir()) == [f"step-{HALF:07d}.png", f"step-{STEPS:07d}.png"]


def test_resumed_ddp_run_equals_uninterrupted_ddp_run(ddp_run, four_classes, tmp_path):
    # The uninterrupted run's own mid-run checkpoint is where an interrupted run would resume from.
    stopped = tmp_path / "resumed"
    shutil.copytree(ddp_run, stopped)
    shutil.rmtree(stopped / "checkpoints" / f"step-{STEPS:07d}")
    torchrun_train(recipe_sets(four_classes, tmp_path, "resumed"), "--resume")
    assert_same_tensors(final_tensors(ddp_run), final_tensors(stopped))


def test_ddp_and_one_process_with_the_same_global_batch_reach_comparable_losses(ddp_run, four_classes, tmp_path):
    single = train(load_recipe(REPO / "recipes" / "acgan.yaml", recipe_sets(four_classes, tmp_path, "single")))
    ddp, one = log_of(ddp_run), log_of(single.run_dir)
    assert [line["step"] for line in ddp] == [line["step"] for line in one]
    # Same real images and labels, same initial weights; only the noise differs (measured: within 2%).
    for key in ("d_loss", "g_loss", "d_aux", "g_aux"):
        for a, b in zip(ddp, one):
            assert abs(a[key] - b[key]) < 0.08 * abs(b[key]), (key, a["step"], a[key], b[key])


def test_processes_split_the_global_batch_like_distributed_sampler(four_classes):
    data = load_labelled(four_classes, 28, 1, "crop")
    whole = BatchDrawer(data, 8, "balanced", hflip=True, seed=3)
    shards = [BatchDrawer(data, 8, "balanced", hflip=True, seed=3, shard=(r, 2)) for r in range(2)]
    images, labels = whole.real(5, 0, torch.device("cpu"))
    parts = [s.real(5, 0, torch.device("cpu")) for s in shards]
    assert all(len(p[0]) == 4 for p in parts)
    assert torch.equal(torch.stack([parts[0][0], parts[1][0]], 1).flatten(0, 1), images)  # rank r holds [r::2]
    assert torch.equal(torch.stack([parts[0][1], parts[1][1]], 1).flatten(0, 1), labels)
    fake = whole.fake_labels(5, 0, torch.device("cpu"))
    assert torch.equal(torch.cat([s.fake_labels(5, 0, torch.device("cpu")) for s in shards]).view(2, 4).T.flatten(), fake)


def test_a_rank_draws_the_same_noise_in_every_run_of_the_same_seed():
    """Each process's seed is a function of (seed, rank) alone: a rerun of a recipe is the same run."""
    script = "from synthgen import distributed; import torch; distributed.seed_this_rank(7); print(torch.initial_seed())"
    seeds = {
        subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                       env={**os.environ, "RANK": "1", "WORLD_SIZE": "2", "PYTHONHASHSEED": salt}).stdout
        for salt in ("1", "2")
    }
    assert len(seeds) == 1 and int(seeds.pop()) != 7


def test_global_batch_must_split_evenly(four_classes, tmp_path):
    with pytest.raises(SynthgenError, match=r"train.batch_size \(30\).*multiple of the number of processes \(4\)"):
        distributed.shard_size(30, pack=1, world=4)
    with pytest.raises(SynthgenError, match=r"8 per process must be a multiple of model.pack \(3\)"):
        distributed.shard_size(16, pack=3, world=2)
    bad = subprocess.run(
        [sys.executable, "-m", "synthgen", "train", "recipes/acgan.yaml", "--set", f"data.root={four_classes}",
         "--set", "train.batch_size=33", "--set", f"train.out_dir={tmp_path}", "--nproc", "2"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "train.batch_size (33)" in bad.stderr


def test_methods_without_ddp_are_refused_on_several_processes(four_classes, tmp_path):
    """The translators and text2image are not under DDP: N processes would train N unsynchronised copies."""
    refused = subprocess.run(
        [sys.executable, "-m", "synthgen", "train", "recipes/stargan.yaml", "--set", f"data.root={four_classes}",
         "--set", f"train.out_dir={tmp_path}", "--nproc", "2"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "method stargan trains in one process" in refused.stderr and not (tmp_path / "stargan").exists()
    with pytest.raises(SynthgenError, match="method pix2pix trains in one process"):
        refuse_if_one_process(load_recipe(str(REPO / "recipes/pix2pix.yaml"), []), 2)
    for name in ("acgan", "sgan", "progan"):  # methods under DDP pass
        refuse_if_one_process(load_recipe(str(REPO / f"recipes/{name}.yaml"), []), 2)
