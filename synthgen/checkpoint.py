"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `run/checkpoints/step-0002000/` holding one
safetensors file per network (G, D, G_ema), `optim.safetensors` for the
optimisers' tensors and the RNG states, and `state.json` for the step, the
optimisers' hyper-parameters, the class names and the resolved recipe. The
folder is written under a temporary name and renamed when complete, and an
old one is renamed away before it is deleted, so a crash (even SIGKILL) never
leaves a checkpoint that looks whole but is not. Readers verify every weights
file against the sha256 recorded in state.json.
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

from synthgen.errors import SynthgenError, WriteFailed

STATE_FILE = "state.json"
OPTIM_FILE = "optim.safetensors"
CHECKPOINTS = "checkpoints"
LEGACY_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"}
MOVE_AWAY = "move that checkpoint folder out of checkpoints/ to use an earlier one"


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
        try:
            return hashlib.sha256((self.path / f"{name}.safetensors").read_bytes()).hexdigest()
        except OSError as exc:
            raise SynthgenError(f"{self.path / name}.safetensors: unreadable weights ({exc.strerror or exc})") from None

    @property
    def generator_name(self) -> str:
        """The generator to sample or translate with: G_ema where the run kept one, else G. The recorded sha256s say
        which networks the checkpoint holds, so a missing G_ema file is an error (verified_sha256), never a silent G."""
        return "G_ema" if "G_ema" in self.state.get("weights_sha256", {}) else "G"

    def verified_sha256(self, name: str) -> str:
        """The weights file's sha256, after checking it against the one recorded when it was saved."""
        expected = self.state.get("weights_sha256", {}).get(name)
        if expected is None:
            raise SynthgenError(f"{self.path / STATE_FILE}: no sha256 recorded for {name}.safetensors (expected weights_sha256.{name}); the checkpoint is incomplete or edited")
        if not (self.path / f"{name}.safetensors").is_file():
            raise SynthgenError(f"{self.path / name}.safetensors: missing, though {STATE_FILE} records its sha256 {expected[:16]}: the checkpoint is incomplete; refusing it")
        actual = self.sha256(name)
        if actual != expected:
            raise SynthgenError(f"{self.path / name}.safetensors: sha256 {actual[:16]} differs from the {expected[:16]} recorded at training (damaged or replaced); refusing it")
        return actual


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
    try:
        _remove_leftovers(root)  # from a process killed while saving
        tmp.mkdir(parents=True)
        _write_files(tmp, step, networks, optimizers, state, rng)
    except OSError as exc:  # disk full, read-only folder: nothing of this checkpoint remains
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(run_dir)
        kept = f"the last checkpoint (step {previous.step}) is intact" if previous else "no earlier checkpoint"
        raise WriteFailed(tmp.with_name(final.name), exc, kept) from None
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a checkpoint)
        _discard(final)
    os.replace(tmp, final)
    _fsync_path(root)
    _prune(root, keep, protect)
    return final


def _write_files(folder: Path, step: int, networks: dict[str, nn.Module], optimizers: dict, state: dict, rng: dict | None) -> None:
    metadata = {"class_names": json.dumps(state["class_names"]), "recipe": json.dumps(state["recipe"])}
    for name, network in networks.items():
        save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, folder / f"{name}.safetensors", metadata)
    tensors, optim_json = optimizer_tensors(optimizers)
    tensors.update(rng_tensors() if rng is None else rng)
    save_file(tensors, folder / OPTIM_FILE)
    # Recorded so that readers (sample, translate, --resume) can tell a damaged or swapped weights file.
    sha256 = {name: hashlib.sha256((folder / f"{name}.safetensors").read_bytes()).hexdigest() for name in networks}
    _write_json(folder / STATE_FILE, {**state, "step": step, "optimizers": optim_json, "weights_sha256": sha256})
    _fsync_dir(folder)


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
    _fsync_path(path)


def _fsync_path(path: Path) -> None:
    """Make a folder's entries (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: int, protect: int | None = None) -> None:
    for old in sorted(root.glob("step-*"))[:-keep]:
        if protect is None or old.name != f"step-{protect:07d}":
            _discard(old)


def _discard(checkpoint: Path) -> None:
    """Rename a checkpoint out of sight first, then delete it: killed half-way, no half-deleted `step-*` remains."""
    trash = checkpoint.with_name(f".{checkpoint.name}.old-{os.getpid()}")
    os.replace(checkpoint, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Temporary and discarded checkpoint folders (`.step-*`) of a process that was killed; one process writes a run."""
    for leftover in root.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# --- loading -----------------------------------------------------------------


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint of a run, or None.

    A damaged one is an error naming it, never silently passed over for an
    older one: checkpoints appear only when complete, so damage came later.
    """
    complete = [p for p in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*")) if (p / STATE_FILE).is_file()]
    return read_checkpoint(complete[-1]) if complete else None


def read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint folder's state.json, checked for what readers rely on (it may come from anyone)."""
    state_file = Path(path) / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise SynthgenError(f"{state_file}: unreadable checkpoint state ({exc}); {MOVE_AWAY}") from None
    expected = {"step": int, "class_names": list, "recipe": dict, "weights_sha256": dict}
    for key, kind in expected.items():
        if not isinstance(state, dict) or not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise SynthgenError(f"{state_file}: '{key}' missing or not a {kind.__name__} (not a synthgen checkpoint, or edited); {MOVE_AWAY}")
    for name in state["class_names"]:
        check_folder_name(name, f"{state_file}: class name")
    return Checkpoint(Path(path), state)


def check_folder_name(name: object, what: str) -> None:
    """Class names become output folders (OUT/<class>/): refuse anything that is not one plain folder name."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SynthgenError(f"{what} {name!r} is not a plain folder name (it could write outside the output folder); refusing it")


def best_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint that scored best during training (see train/evaluation.py), when recorded and still there."""
    latest = latest_checkpoint(run_dir)
    best = (latest.state.get("best") or {}).get("step") if latest else None
    if best is None:
        return None
    try:
        return read_checkpoint(Path(run_dir) / CHECKPOINTS / f"step-{int(best):07d}")
    except (SynthgenError, ValueError, TypeError):
        return None


def require_checkpoint(run_dir: Path, which: str = "latest") -> Checkpoint:
    """`latest`, `best` (falls back to latest when none was recorded) or a step number."""
    refuse_legacy_weights(Path(run_dir))
    if which == "best":
        checkpoint = best_checkpoint(run_dir) or latest_checkpoint(run_dir)
    elif which.isdigit():
        path = Path(run_dir) / CHECKPOINTS / f"step-{int(which):07d}"
        if not (path / STATE_FILE).is_file():
            steps = ", ".join(str(int(p.name[5:])) for p in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*")))
            raise SynthgenError(f"--checkpoint {which}: {run_dir} has no checkpoint at that step (have: {steps or 'none'})")
        checkpoint = read_checkpoint(path)
    elif which == "latest":
        checkpoint = latest_checkpoint(run_dir)
    else:
        raise SynthgenError(f"--checkpoint {which}: expected best, latest or a step number")
    if checkpoint is None:
        raise SynthgenError(f"{run_dir}: no checkpoint found (expected {run_dir}/{CHECKPOINTS}/step-*/)")
    return checkpoint


def refuse_legacy_weights(path: Path) -> None:
    """A .pt/.pth file (or a folder of them) is a pickle: loading one can run any code its author put in it."""
    legacy = [path] if path.suffix.lower() in LEGACY_SUFFIXES else []
    if path.is_dir() and not (path / CHECKPOINTS).is_dir():
        legacy = sorted(p for p in path.iterdir() if p.suffix.lower() in LEGACY_SUFFIXES)
    if legacy:
        raise SynthgenError(
            f"{legacy[0]}: a PyTorch pickle file; synthgen loads only safetensors checkpoints, because unpickling a file "
            "can run any code in it. Pass a run folder written by `synthgen train` (weights/<name>/)"
        )


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
