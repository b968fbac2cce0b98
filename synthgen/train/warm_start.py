"""train.init_from: start a new run from another run's weights.

A rare-class model can start from one trained on everything the user has, or
a new dataset from an old run. Tensors are matched by name and shape: what
fits is loaded, what does not (the class embeddings of a run with other
classes, a layer of another width) keeps its fresh initialisation and is
listed. Optimiser state, the step and the RNG start fresh: this is a new run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthgen import checkpoint as ckpt
from synthgen.errors import SynthgenError


def source_checkpoint(source: str) -> ckpt.Checkpoint:
    """A run folder (its best checkpoint, else its latest) or one checkpoint folder."""
    path = Path(source)
    if (path / ckpt.STATE_FILE).is_file():
        return ckpt.read_checkpoint(path)
    if not path.is_dir():
        raise SynthgenError(f"train.init_from: {source} is not a run folder or a checkpoint folder")
    found = ckpt.best_checkpoint(path) or ckpt.latest_checkpoint(path)
    if found is None:
        raise SynthgenError(f"train.init_from: {source} has no checkpoint (expected {source}/{ckpt.CHECKPOINTS}/step-*/)")
    return found


def load_matching(network: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor whose name and shape fit; returns (loaded, left at their initialisation)."""
    own = network.state_dict()
    fits = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    with torch.no_grad():
        for name, value in fits.items():
            own[name].copy_(value)
    return sorted(fits), sorted(k for k in own if k not in fits)


def init_from(method, source: str, class_names: list[str], device, progress=None) -> dict:
    """Load `source`'s weights into the method's networks; the report is kept in run.json."""
    checkpoint = source_checkpoint(source)
    report = {"source": str(checkpoint.path), "step": checkpoint.step, "networks": {}}
    for name, network in method.networks.items():
        # A source without an EMA generator gives G_ema its G.
        saved = next((n for n in (name, "G" if name == "G_ema" else None) if n and (checkpoint.path / f"{n}.safetensors").is_file()), None)
        if saved is None:
            report["networks"][name] = {"loaded": 0, "initialised": "all (not in the source)"}
            continue
        checkpoint.verified_sha256(saved)
        loaded, fresh = load_matching(network, checkpoint.weights(saved))
        report["networks"][name] = {"loaded": len(loaded), "initialised": fresh}
    if not any(n["loaded"] for n in report["networks"].values()):
        raise SynthgenError(f"train.init_from: no tensor of {checkpoint.path} fits this recipe's model (another backbone, size or width?)")
    if checkpoint.class_names != class_names:
        report["classes"] = {"source": checkpoint.class_names, "now": class_names}
    if progress and hasattr(progress, "note"):
        fresh = sum(len(n["initialised"]) for n in report["networks"].values() if isinstance(n["initialised"], list))
        progress.note(f"init_from {checkpoint.path} (step {checkpoint.step}): "
                      + ", ".join(f"{k} {v['loaded']} tensors" for k, v in report["networks"].items())
                      + (f"; {fresh} left initialised (they did not fit)" if fresh else ""))
    return report
