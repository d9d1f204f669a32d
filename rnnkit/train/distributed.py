"""torch.distributed plumbing: one process per device under ``torchrun``, and the few collectives the loop needs.

Under ``torchrun --nproc_per_node=N -m rnnkit <task> train ...`` every process runs the same command. The
environment variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) are
read by :func:`setup`, which joins the process group (NCCL on GPUs, gloo on CPUs). The engine wraps the
model in :class:`torch.nn.parallel.DistributedDataParallel`; tasks shard their data by rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rnnkit.errors import ConfigError, RnnkitError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank ``rank`` of ``world_size`` (1 = not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process prints progress and writes metrics, checkpoints and plots."""
        return self.rank == 0


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when run under torchrun (``WORLD_SIZE`` > 1) and pick this rank's device.

    ``device_name`` is the config's ``device``: ``auto`` takes the local rank's GPU when there is one.
    Without torchrun this is ``(DistInfo(), device)`` and touches nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("field 'device': CUDA was asked for but torch sees no GPU")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank), device


def resolve_device(name: str) -> torch.device:
    """The device a ``device`` field names (``auto``: the GPU when torch sees one, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RnnkitError(f"field 'device': unknown device {name!r} (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnkitError("field 'device': CUDA was asked for but torch sees no GPU")
    return device


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 under it (from the environment; no process group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def shard(n: int, info: DistInfo, what: str) -> slice:
    """Rank r's share ``r*n/W .. (r+1)*n/W - 1`` of ``n`` items; ``n`` must divide evenly."""
    if n % info.world_size:
        raise ConfigError(f"field '{what}': {n} does not divide evenly over {info.world_size} processes")
    per = n // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of a 0/1 tensor over all ranks."""
    if dist.is_initialized():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def gather_cat(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every rank's ``t`` along ``dim`` in rank order (all ranks get the result)."""
    if not dist.is_initialized():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
