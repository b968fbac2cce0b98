"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `run/checkpoints/step-0002000/` holding one
safetensors file per network (G, D, G_ema), `optim.safetensors` for the
optimisers' tensors and the RNG states, and `state.json` for the step, the
optimisers' hyper-parameters, the class names and the resolved recipe. The
folder is written under a temporary name and renamed when complete, so a
crash never leaves a checkpoint that looks whole but is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from synthgen.errors import SynthgenError

STATE_FILE = "state.json"
OPTIM_FILE = "optim.safetensors"
CHECKPOINTS = "checkpoints"


@dataclass
class Checkpoint:
    path: Path
    state: dict

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def class_names(self) -> list[str]:
        return self.state["class_names"]

    @property
    def recipe(self) -> dict:
        return self.state["recipe"]

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        return _load_tensors(self.path / f"{name}.safetensors")

    def sha256(self, name: str) -> str:
        return hashlib.sha256((self.path / f"{name}.safetensors").read_bytes()).hexdigest()


# --- saving ------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path, step: int, networks: dict[str, nn.Module], optimizers: dict, state: dict, keep: int,
    rng: dict | None = None, protect: int | None = None,
) -> Path:
    """Write networks, optimisers, RNG states and JSON state for `step`; keep the newest `keep` and step `protect` (the best).

    `rng`: the RNG states to save (default: this process's, `rng_tensors()`);
    under torch.distributed the loop passes every process's (`rank_rng_tensors`).
    """
    root = run_dir / CHECKPOINTS
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metadata = {"class_names": json.dumps(state["class_names"]), "recipe": json.dumps(state["recipe"])}
    for name, network in networks.items():
        save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, tmp / f"{name}.safetensors", metadata)
    tensors, optim_json = optimizer_tensors(optimizers)
    tensors.update(rng_tensors() if rng is None else rng)
    save_file(tensors, tmp / OPTIM_FILE)
    # Recorded so that a reader (synthgen translate) can tell a damaged or swapped weights file.
    sha256 = {name: hashlib.sha256((tmp / f"{name}.safetensors").read_bytes()).hexdigest() for name in networks}
    _write_json(tmp / STATE_FILE, {**state, "step": step, "optimizers": optim_json, "weights_sha256": sha256})
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a checkpoint)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(root, keep, protect)
    return final


def optimizer_tensors(optimizers: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split optimiser state dicts into flat tensors and JSON (param groups, scalar state)."""
    tensors, as_json = {}, {}
    for name, optimizer in optimizers.items():
        sd = optimizer.state_dict()
        scalars = {}
        for index, slots in sd["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{name}/{index}/{key}"] = value.detach().contiguous()
                else:
                    scalars[f"{index}/{key}"] = value
        as_json[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, as_json


def rng_tensors() -> dict[str, torch.Tensor]:
    states = {"rng/cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"rng/cuda/{i}"] = s
    return states


def own_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's CPU RNG state and, on CUDA, its device's."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def rank_rng_tensors(per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every process's RNG states (index = rank) under `rng/rank<r>/...` keys."""
    return {f"rng/rank{r}/{k}": v for r, states in enumerate(per_rank) for k, v in states.items()}


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _prune(root: Path, keep: int, protect: int | None = None) -> None:
    for old in sorted(root.glob("step-*"))[:-keep]:
        if protect is None or old.name != f"step-{protect:07d}":
            shutil.rmtree(old, ignore_errors=True)


# --- loading -----------------------------------------------------------------


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of a run, or None."""
    for path in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"), reverse=True):
        if (path / STATE_FILE).is_file():
            try:
                return Checkpoint(path, json.loads((path / STATE_FILE).read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    return None


def best_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint that scored best during training (see train/evaluation.py), when recorded and still there."""
    latest = latest_checkpoint(run_dir)
    best = (latest.state.get("best") or {}).get("step") if latest else None
    if best is None:
        return None
    path = Path(run_dir) / CHECKPOINTS / f"step-{best:07d}"
    try:
        return Checkpoint(path, json.loads((path / STATE_FILE).read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def require_checkpoint(run_dir: Path, which: str = "latest") -> Checkpoint:
    """`latest`, `best` (falls back to latest when none was recorded) or a step number."""
    if which == "best":
        checkpoint = best_checkpoint(run_dir) or latest_checkpoint(run_dir)
    elif which.isdigit():
        path = Path(run_dir) / CHECKPOINTS / f"step-{int(which):07d}"
        if not (path / STATE_FILE).is_file():
            steps = ", ".join(str(int(p.name[5:])) for p in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*")))
            raise SynthgenError(f"--checkpoint {which}: {run_dir} has no checkpoint at that step (have: {steps or 'none'})")
        checkpoint = Checkpoint(path, json.loads((path / STATE_FILE).read_text()))
    elif which == "latest":
        checkpoint = latest_checkpoint(run_dir)
    else:
        raise SynthgenError(f"--checkpoint {which}: expected best, latest or a step number")
    if checkpoint is None:
        raise SynthgenError(f"{run_dir}: no checkpoint found (expected {run_dir}/{CHECKPOINTS}/step-*/)")
    return checkpoint


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise SynthgenError(f"{path}: unreadable weights ({exc})") from None


def restore_network(network: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    try:
        network.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SynthgenError(f"{source}: weights do not fit the recipe's model ({first})") from None


def _match_param_layouts(optimizer) -> None:
    """Give restored per-parameter state (Adam's moments) its parameter's memory layout.

    They are saved contiguous; a channels_last parameter's moments must be
    channels_last again, or a fused optimizer, which walks parameter, gradient
    and moments in memory order, pairs the wrong elements.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def restore_training_state(checkpoint: Checkpoint, optimizers: dict, rank: int | None = None, device: torch.device | None = None) -> None:
    """Optimiser state and RNG states, from one read of optim.safetensors.

    `rank` (under torch.distributed): restore that process's own RNG states. A
    checkpoint written with another number of processes has none for it: the
    process keeps its freshly seeded RNG (the run continues, not bit for bit).
    """
    tensors = _load_tensors(checkpoint.path / OPTIM_FILE)
    for name, optimizer in optimizers.items():
        saved = checkpoint.state["optimizers"][name]
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            owner, _, rest = key.partition("/")
            if owner == name:
                index, _, slot = rest.partition("/")
                state.setdefault(int(index), {})[slot] = value
        for key, value in saved["scalars"].items():
            index, _, slot = key.partition("/")
            state.setdefault(int(index), {})[slot] = value
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        _match_param_layouts(optimizer)
    if rank is not None:
        prefix = f"rng/rank{rank}/"
        if prefix + "cpu" in tensors:
            torch.set_rng_state(tensors[prefix + "cpu"])
        if prefix + "cuda" in tensors and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(tensors[prefix + "cuda"], device)
        return
    torch.set_rng_state(tensors["rng/cpu"] if "rng/cpu" in tensors else tensors["rng/rank0/cpu"])  # a DDP run resumed on one process
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
