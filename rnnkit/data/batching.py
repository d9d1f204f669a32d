"""Batches of variable-length sequences: right padding, length bucketing, restoring input order.

For the tagging and seq2seq tasks: examples are grouped into batches of indices by
:func:`length_batches` (similar lengths together, so little padding), padded by :func:`pad_batch`,
and predictions made in batch order are put back into input order by :func:`restore_order`.

Randomness comes only from a local :class:`torch.Generator` seeded from ``(seed, epoch)``, so the
batches of an epoch are the same in a resumed run and the global RNG is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["RankBatches", "length_batches", "pad_batch", "padding_fraction", "restore_order"]

T = TypeVar("T")


def pad_batch(seqs: Sequence[Sequence[int]] | Sequence[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """Pad sequences of ids on the right into one batch.

    Args:
        seqs: B sequences of ids: lists of ints or 1-D integer tensors; empty sequences are allowed.
        pad_id: id written after the end of each sequence.

    Shape:
        - Output padded: (B, T) int64, T = longest length; ``padded[b, lengths[b]:] == pad_id``.
        - Output lengths: (B,) int64.

    Returns:
        ``(padded, lengths)``.

    Example::

        >>> x, n = pad_batch([[5, 6, 7], [8]], pad_id=0)
        >>> x.tolist(), n.tolist()
        ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    if len(seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence, got 0")
    rows = []
    for i, s in enumerate(seqs):
        if isinstance(s, Tensor):
            if s.dim() != 1:
                raise ValueError(f"sequence {i}: expected a 1-D tensor, got shape {tuple(s.shape)}")
            if s.is_floating_point() or s.is_complex():
                raise ValueError(f"sequence {i}: expected an integer tensor, got dtype {s.dtype}")
            rows.append(s.to(torch.int64))
        else:
            rows.append(torch.as_tensor(list(s), dtype=torch.int64))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    max_len = int(lengths.max())
    padded = torch.full((len(rows), max_len), pad_id, dtype=torch.int64, device=rows[0].device)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return padded, lengths


def _generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose seed depends on both ``seed`` and ``epoch`` (no collisions in practice)."""
    digest = hashlib.sha256(f"rnnkit.batching:{int(seed)}:{int(epoch)}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return g


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    bucket: bool = True,
    pool: int | None = 50,
) -> list[list[int]]:
    """Group example indices into batches, similar lengths together.

    With ``bucket=True`` the examples (shuffled first when ``shuffle``) are cut into pools of
    ``pool * batch_size`` consecutive examples; inside a pool they are sorted by decreasing
    length (stable: ties keep pool order) and cut into batches. Only the very last batch can be
    smaller than ``batch_size``. When ``shuffle``, the order of the batches is shuffled too, so
    batch lengths do not follow a pattern. ``pool=None`` sorts all examples as one pool (least
    padding; good for evaluation, with :func:`restore_order` to undo it). With ``bucket=False``
    batches are consecutive runs of the (shuffled) examples.

    Args:
        lengths: length of each example (any non-negative ints; only their order matters).
        batch_size: examples per batch, >= 1.
        shuffle: shuffle examples and batch order (training); ``False`` is fully deterministic
            without any generator (evaluation).
        seed, epoch: the shuffle is a function of both, so every epoch differs and a resumed run
            recreates the same batches. A local generator is used; the global RNG is untouched.
        bucket: sort by length within pools. Default True.
        pool: pool size in batches, >= 1, or None for one pool. Default 50.

    Returns:
        Batches of indices into ``lengths``; every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pool is not None and pool < 1:
        raise ValueError(f"pool must be >= 1 or None, got {pool}")
    n = len(lengths)
    lens = [int(x) for x in lengths]
    if any(x < 0 for x in lens):
        raise ValueError("lengths must be non-negative")
    g = _generator(seed, epoch) if shuffle else None
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    if bucket:
        step = n if pool is None else pool * batch_size
        sorted_order: list[int] = []
        for start in range(0, n, max(step, 1)):
            chunk = order[start : start + step]
            sorted_order.extend(sorted(chunk, key=lambda i: -lens[i]))
        order = sorted_order
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and len(batches) > 1:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    return batches


class RankBatches:
    """One process's share of the shuffled training batches of every epoch (:func:`length_batches`).

    Process ``rank`` of ``world_size`` takes examples ``rank, rank + world_size, ...`` of every batch
    (``batch_size`` should divide by ``world_size``); a last batch with fewer than ``world_size``
    examples is skipped by all processes. With one process these are the batches of :func:`length_batches`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int, bucket: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.lengths, self.batch_size, self.seed, self.bucket = lengths, batch_size, seed, bucket
        self.rank, self.world_size = rank, world_size

    def epoch(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch`` (indices into ``lengths``), a function of (seed, epoch)."""
        batches = length_batches(self.lengths, self.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
                                 bucket=self.bucket)
        w = self.world_size
        return [b[self.rank::w] for b in batches if len(b) >= w]

    def __len__(self) -> int:
        """Batches per epoch (the same every epoch)."""
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest >= self.world_size else 0)


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of the padded (B, T) cells, summed over batches, that are padding.

    ``1 - sum(lengths) / sum(len(batch) * max length in batch)``; 0.0 when there are no cells.
    """
    total = real = 0
    for b in batches:
        if len(b) == 0:
            continue
        ls = [int(lengths[i]) for i in b]
        total += len(b) * max(ls)
        real += sum(ls)
    return 0.0 if total == 0 else 1.0 - real / total


def restore_order(items_in_batch_order: Sequence[T], batches: Sequence[Sequence[int]]) -> list[T]:
    """Put per-example results made batch by batch back into the original example order.

    Args:
        items_in_batch_order: one item per example, flat, in the order the examples appear when
            ``batches`` are visited in order (``[x for b in batches for x in results_of(b)]``).
        batches: the batches of indices (from :func:`length_batches`), covering ``0 .. N-1`` once.

    Returns:
        ``out`` with ``out[batches[k][j]]`` = the item of batch ``k``, position ``j``.
    """
    flat = [i for b in batches for i in b]
    if len(flat) != len(items_in_batch_order):
        raise ValueError(
            f"expected {len(flat)} items (one per example in batches), got {len(items_in_batch_order)}"
        )
    out: list[Any] = [_MISSING] * len(flat)
    for item, i in zip(items_in_batch_order, flat):
        if not 0 <= i < len(flat) or out[i] is not _MISSING:
            raise ValueError(f"batches must hold each index 0..{len(flat) - 1} exactly once (index {i})")
        out[i] = item
    return out


_MISSING = object()
