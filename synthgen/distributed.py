"""Training on several processes with torch.distributed: started by torchrun, nothing home-made.

`torchrun --nproc_per_node N -m synthgen train RECIPE` starts N copies of
the command with RANK, LOCAL_RANK and WORLD_SIZE set; `init` joins them into
one process group (gloo on CPU, NCCL on CUDA) and `wrap` puts a network under
DistributedDataParallel, which averages its gradients across processes in
backward. Without torchrun every helper here is a no-op, so the same loop
runs on one process unchanged.

Batch size: `train.batch_size` is the global batch. Each step the
BatchDrawer draws the global batch from its (seed, step) generator exactly as
a single process does, and every process keeps the strided shard
`[rank::world_size]` of it (DistributedSampler's split), so the processes
together see the same real images and labels as one process would, and a
recipe means the same training on any number of processes.

Buffers: `forward_sync_buffers=False` (formerly `broadcast_buffers=False`);
DDP still copies rank 0's buffers once at construction. Spectral norm's u/v vectors are updated
by a deterministic power iteration from weights that DDP keeps identical, so
they stay identical without communication; batch norm's running statistics
are only used in eval mode (grids, sampling), where the EMA generator gets
its own recalibrated ones and rank 0's are what is saved. Broadcasting them
on every forward would cost a collective per call and is the known source of
in-place-modification errors when D runs twice before one backward.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from synthgen.errors import SynthgenError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Only the main process writes checkpoints, grids, logs and progress."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device):
    """Join torchrun's process group for the duration of a run (no-op on one process)."""
    if not is_distributed() or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield
        # Every process leaves together: a rank tearing gloo down while rank 0 still saves has aborted
        # ("terminate called without an active exception"). Not on an error: the others may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """Under torchrun each process on a node takes its own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def shard_size(batch_size: int, pack: int = 1, world: int | None = None) -> int:
    """This process's part of the global batch; the global batch must split evenly."""
    world = world or world_size()
    if batch_size % world:
        raise SynthgenError(f"train.batch_size ({batch_size}) is the global batch: it must be a multiple of the number of processes ({world})")
    local = batch_size // world
    if local % pack:
        raise SynthgenError(f"train.batch_size ({batch_size}) / {world} processes = {local} per process must be a multiple of model.pack ({pack})")
    return local


def seed_this_rank(seed: int) -> None:
    """Distinct noise per process (rank 0 keeps the single-process stream), identical weights from the shared seed before."""
    if rank() > 0:
        # SeedSequence, not hash(): Python salts str hashes per process, which made a rerun draw other noise.
        torch.manual_seed(int(np.random.SeedSequence([seed, rank()]).generate_state(1, np.uint64)[0]) >> 1)


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module under DDP when distributed, else the module itself."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)


def mean_across_ranks(stats: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average logged numbers over processes (each saw its own shard)."""
    if not is_distributed() or not stats:
        return stats
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(keys, (values / world_size()).tolist()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when it is true on one (e.g. Ctrl-C reached only some)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_tensors(local: dict[str, torch.Tensor], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every process's `local` (same keys and shapes everywhere), on every process, in rank order."""
    if not is_distributed():
        return [local]
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(world_size())]
    for key in sorted(local):
        value = local[key].to(device)
        parts = [torch.empty_like(value) for _ in range(world_size())]
        dist.all_gather(parts, value)
        for r, part in enumerate(parts):
            gathered[r][key] = part.cpu()
    return gathered


def torchrun_command(nproc: int, synthgen_args: list[str]) -> list[str]:
    """`synthgen ARGS --nproc N` is `torchrun --standalone --nproc-per-node N -m synthgen ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "synthgen", *synthgen_args]


def barrier() -> None:
    if is_distributed() and dist.is_initialized():
        dist.barrier()
