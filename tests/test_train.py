"""Training on real images: every variant runs, resume equals uninterrupted, Ctrl-C checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthgen.checkpoint import latest_checkpoint
from synthgen.errors import SynthgenError
from synthgen.train.loop import train
from tests.conftest import REPO, tiny_recipe


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = latest_checkpoint(run_dir)
    tensors = {}
    for file in sorted(checkpoint.path.glob("*.safetensors")):
        tensors.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    return tensors


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


VARIANTS = [
    # (backbone, conditioning, loss, extra model keys, extra loss keys, extra train keys)
    ("dcgan", "acgan", "ns", {"pack": 2, "minibatch_std": True}, {}, {"diffaugment": ["color", "translation", "cutout"]}),
    ("dcgan", "concat", "wgan-gp", {"spectral_norm": False}, {}, {"n_dis": 2}),
    ("dcgan", "projection", "lsgan", {"g_cond_bn": True, "d_norm": "batch"}, {}, {}),
    ("resnet", "projection", "hinge", {"g_cond_bn": True, "minibatch_std": True}, {"r1_gamma": 1.0, "r1_every": 2}, {}),
    ("resnet", "acgan", "minimax", {"pack": 2, "g_spectral_norm": True}, {}, {"ema": False}),
]


@pytest.mark.parametrize("backbone,cond,loss,model,loss_extra,train_extra", VARIANTS)
def test_every_variant_trains_and_checkpoints(four_classes, tmp_path, backbone, cond, loss, model, loss_extra, train_extra):
    recipe = tiny_recipe(
        four_classes, tmp_path, model={"backbone": backbone, **model}, conditioning={"type": cond},
        loss={"type": loss, **loss_extra}, train={"steps": 4, **train_extra},
    )
    result = train(recipe)
    assert result.step == 4
    checkpoint = latest_checkpoint(result.run_dir)
    assert checkpoint.step == 4 and checkpoint.class_names == sorted(["Trouser", "Sneaker", "Bag", "T-shirt-top"])
    assert (checkpoint.path / "G_ema.safetensors").exists() == train_extra.get("ema", True)
    lines = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(torch.isfinite(torch.tensor(line["d_loss"])) and line["img_per_s"] > 0 for line in lines)
    assert sorted(p.name for p in (result.run_dir / "grids").iterdir()) == ["step-0000003.png", "step-0000004.png"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resumed_run_equals_uninterrupted_run(four_classes, tmp_path, precision):
    common = dict(model={"minibatch_std": True}, train={"precision": precision, "diffaugment": ["translation", "cutout"]})
    whole = train(tiny_recipe(four_classes, tmp_path / "a", **{**common, "train": {**common["train"], "steps": 8}}))
    first = tiny_recipe(four_classes, tmp_path / "b", **{**common, "train": {**common["train"], "steps": 5}})
    train(first)
    resumed = train(tiny_recipe(four_classes, tmp_path / "b", **{**common, "train": {**common["train"], "steps": 8}}), resume=True)
    assert resumed.step == 8
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))


def test_weights_are_prepared_for_sampling_once_per_step_when_grid_and_checkpoint_coincide(four_classes, tmp_path, monkeypatch):
    """G_ema's batch-norm recalibration serves the grid, the evaluation and the checkpoint of one step."""
    from synthgen.train.cgan import ConditionalGAN

    calls = []
    original = ConditionalGAN.prepare_for_sampling
    monkeypatch.setattr(ConditionalGAN, "prepare_for_sampling", lambda self: calls.append(1) or original(self))
    train(tiny_recipe(four_classes, tmp_path, train={"steps": 6, "sample_every": 3, "checkpoint_every": 3}))
    assert len(calls) == 2  # steps 3 and 6, each with a grid and a checkpoint


def test_existing_run_is_never_overwritten(four_classes, tmp_path):
    recipe = tiny_recipe(four_classes, tmp_path, train={"steps": 2})
    train(recipe)
    with pytest.raises(SynthgenError, match="exists.*--resume"):
        train(recipe)



class Notes:
    """A progress receiver that keeps the notes the loop sends (the CLI's TrainProgress prints them)."""

    def __init__(self):
        self.notes = []

    def start(self, total, done):
        self.done = done

    def update(self, step, line):
        pass

    def note(self, text):
        self.notes.append(text)


def test_resume_before_the_first_checkpoint_starts_from_step_0_with_a_note(four_classes, tmp_path):
    """A run killed before its first checkpoint (here: its folder with a log, no checkpoint) under a `--resume` loop."""
    killed = tmp_path / "tiny"
    killed.mkdir()
    (killed / "log.jsonl").write_text('{"step": 1, "loss_d": 1.0}\n')
    notes = Notes()
    result = train(tiny_recipe(four_classes, tmp_path, train={"steps": 3}), resume=True, progress=notes)
    assert result.step == 3 and notes.done == 0
    assert any("no checkpoint to resume yet; starting from step 0" in note for note in notes.notes), notes.notes
    assert [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()] == [2, 3]


def test_ctrl_c_checkpoints_exits_130_and_resumes_exactly(four_classes, tmp_path):
    """SIGINT mid-run: a checkpoint at the last finished step, exit 130; resuming matches a run never stopped."""
    sets = [f"data.root={four_classes}", "data.image_size=28", "data.channels=1", "model.g_channels=16",
            "model.d_channels=16", "model.z_dim=32", "train.batch_size=16", "train.log_every=1",
            "train.checkpoint_every=100000", "train.sample_every=100000", "train.precision=fp32", "train.compile=off", "name=sig",
            "gate.eval_during_training=false"]
    command = [str(Path(sys.executable).with_name("synthgen")), "train", "recipes/acgan.yaml", "--set", "train.steps=100000"]
    command += [arg for s in sets + [f"train.out_dir={tmp_path / 'b'}"] for arg in ("--set", s)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "b" / "sig" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    stopped = latest_checkpoint(tmp_path / "b" / "sig")
    assert stopped is not None and stopped.step >= 3

    from synthgen.recipe import load_recipe

    target = stopped.step + 3
    resumed = train(load_recipe("recipes/acgan.yaml", sets + [f"train.steps={target}", f"train.out_dir={tmp_path / 'b'}"]), resume=True)
    whole = train(load_recipe("recipes/acgan.yaml", sets + [f"train.steps={target}", f"train.out_dir={tmp_path / 'a'}"]))
    assert_same_tensors(final_tensors(whole.run_dir), final_tensors(resumed.run_dir))


def test_single_folder_trains_unconditionally(fashion_test_split, tmp_path):
    """Images directly in a folder: one class, the same commands, no class conditioning."""
    result = train(tiny_recipe(fashion_test_split / "Bag", tmp_path, train={"steps": 2}))
    checkpoint = latest_checkpoint(result.run_dir)
    assert checkpoint.class_names == ["Bag"]
    assert not any("classifier" in k or "embed" in k for k in load_file(checkpoint.path / "D.safetensors"))


def test_cpu_step_is_the_same_code_on_cuda_when_present(four_classes, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (the same test runs on one when present)")
    result = train(tiny_recipe(four_classes, tmp_path, train={"steps": 3, "device": "cuda"}))
    assert latest_checkpoint(result.run_dir).state["device"].startswith("cuda")
