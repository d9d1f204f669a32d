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


def shard_batches(batches: list[list[int]], info: DistInfo) -> list[list[int]]:
    """Rank r's items ``r, r + W, ...`` of each batch of indices; a batch with fewer than W items (the last,
    shorter one) is skipped by every rank, so that all ranks take the same number of steps."""
    w = info.world_size
    return [b[info.rank::w] for b in batches if len(b) >= w]


def sharded_batch_count(n: int, batch_size: int, info: DistInfo) -> int:
    """The number of :func:`shard_batches` batches in an epoch of ``n`` items cut into ``batch_size`` batches."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= info.world_size else 0)


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


class SingleProcess:
    """What the training loop does differently with several processes, for one process: nothing.

    :class:`Processes` (torchrun) overrides each method; the loop calls them unconditionally, so it reads
    the same either way. Collectives run on the training ``device``.
    """

    def __init__(self, info: DistInfo, device: torch.device) -> None:
        self.info, self.device = info, device

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def wrap(self, module: torch.nn.Module, *, find_unused_parameters: bool) -> torch.nn.Module:
        """The module the loop calls for a training step (DistributedDataParallel averages gradients)."""
        return module

    def mean_loss(self, loss_sum: torch.Tensor, tokens: int) -> torch.Tensor:
        """The loss to back-propagate: ``loss_sum`` over the real tokens of every process."""
        return loss_sum.float() / max(1, tokens)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over processes."""
        return t

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Additive statistics (evaluation sums and counts) summed over processes."""
        return stats

    def any(self, flags: list[bool]) -> list[bool]:
        """Element-wise OR over processes, so that all of them take the same decision."""
        return flags

    def gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every process's ``t`` concatenated along ``dim`` in rank order, on the CPU."""
        return t

    def own_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """This process's share of ``t`` along ``dim`` (the inverse of :meth:`gather`)."""
        return t

    def barrier(self) -> None:
        """Wait until every process gets here."""


class Processes(SingleProcess):
    """:class:`SingleProcess`'s methods for ``world_size`` processes under torchrun."""

    def wrap(self, module: torch.nn.Module, *, find_unused_parameters: bool) -> torch.nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                         find_unused_parameters=find_unused_parameters)

    def mean_loss(self, loss_sum: torch.Tensor, tokens: int) -> torch.Tensor:
        # DDP averages gradients over processes: scale by world size so the result is the global mean
        all_tokens = all_sum(torch.tensor(float(tokens), device=self.device))
        return loss_sum.float() * self.info.world_size / all_tokens

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        return all_sum(t)

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        keys = sorted(stats)
        summed = all_sum(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.device))
        return dict(zip(keys, summed.tolist()))

    def any(self, flags: list[bool]) -> list[bool]:
        return [bool(f) for f in any_rank(torch.tensor(flags, dtype=torch.int32, device=self.device))]

    def gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        return gather_cat(t.to(self.device), dim).cpu()

    def own_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        rows = shard(t.size(dim), self.info, "batch_size")
        return t.narrow(dim, rows.start, rows.stop - rows.start).contiguous()

    def barrier(self) -> None:
        barrier()


def processes(info: DistInfo, device: torch.device) -> SingleProcess:
    """The loop's view of the processes: :class:`Processes` under torchrun, else :class:`SingleProcess`."""
    return Processes(info, device) if info.enabled else SingleProcess(info, device)
