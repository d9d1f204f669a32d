"""Output-layer losses.

:func:`linear_cross_entropy` is ``F.cross_entropy(F.linear(x, weight, bias), target, reduction="sum")``
with the gradient computed in the forward pass. On a CPU a word-level LM spends as much time moving its
``(N, V)`` logits through memory (log-softmax output, its backward, the dense gradient of the NLL) as it does
in the output GEMMs. Here the GEMM writes the logits into a workspace kept from call to call (a fresh
``(N, V)`` buffer each step costs page faults: glibc returns large blocks to the system when they are freed),
they are turned in place into ``e = exp(logits - max)``, and the softmax's ``1 / sum(e)`` and the one-hot
target are folded into the small ``(N, H)`` operands of the two gradient GEMMs, so the ``(N, V)`` block
is written once, updated twice and read three times (max, sum, and the GEMMs) instead of about six passes.
Without gradients (evaluation) the same blocks give the loss alone, in the same workspace.
Rows are taken in blocks only to bound the workspace (:data:`MAX_BLOCK_ELEMENTS`): smaller, cache-sized
blocks were measured slower on the 2-core machine (each block re-reads and re-writes the whole ``(V, H)``
weight gradient). Same loss and gradients as the unfused form, to float rounding (tests/test_losses.py).
The gradients are scaled in place in the backward pass, so the graph can be run backward only once
(a second ``backward(retain_graph=True)`` pass raises autograd's in-place error rather than being wrong).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = ["linear_cross_entropy"]

#: At most this many logits (rows x vocabulary) at a time: 2^26 floats = 256 MiB, the workspace's largest size.
MAX_BLOCK_ELEMENTS = 1 << 26


def linear_cross_entropy(x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                         ignore_index: int = -100, block_rows: int | None = None) -> Tensor:
    """Summed cross-entropy of ``x @ weight.T + bias`` against ``target``, gradients computed in the forward.

    Args:
        x: ``(N, H)`` inputs of the output layer.
        weight: ``(V, H)``; bias: ``(V,)`` or None.
        target: ``(N,)`` class ids; ``ignore_index`` entries do not count.
        block_rows: rows per block (default: all rows, or :data:`MAX_BLOCK_ELEMENTS` // V if fewer).

    Returns:
        A scalar: the summed loss over the counted rows. Differentiable in ``x``, ``weight`` and ``bias``.
    """
    if x.dim() != 2 or target.shape != x.shape[:1]:
        raise ValueError(f"x: expected (N, H) and target (N,), got {tuple(x.shape)} and {tuple(target.shape)}")
    if x.dtype != weight.dtype:
        raise ValueError(f"x and weight must share a dtype, got {x.dtype} and {weight.dtype}")
    rows = block_rows or max(1, min(x.size(0), MAX_BLOCK_ELEMENTS // weight.size(0)))
    grad_wanted = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if not grad_wanted:  # evaluation: the same blocks, the loss only
        return sum((_block(x[i:i + rows], weight, bias, target[i:i + rows], ignore_index)[0]
                    for i in range(0, x.size(0), rows)), x.new_zeros(()))
    return _LinearCrossEntropy.apply(x, weight, bias, target, ignore_index, rows)


_local = threading.local()


def _workspace(rows: int, cols: int, like: Tensor) -> Tensor:
    """A ``(rows, cols)`` scratch tensor of ``like``'s dtype and device, reused by later calls in this thread."""
    buf = getattr(_local, "buf", None)
    n = rows * cols
    if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
        buf = _local.buf = torch.empty(n, dtype=like.dtype, device=like.device)
    return buf[:n].view(rows, cols)


def _block(xs: Tensor, weight: Tensor, bias: Tensor | None, ys: Tensor,
           ignore_index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One block of rows: (summed loss, e, s, counted, safe targets).

    The logits go into the workspace and are turned in place into ``e = exp(logits - max)`` with row sums
    ``s``, so softmax = e / s; ``counted`` marks the rows whose target is not ``ignore_index`` and ``safe``
    is the target with ignored rows set to class 0. ``e`` is only valid until the next call in this thread.
    """
    counted = ys != ignore_index
    safe = torch.where(counted, ys, 0)  # (r,)
    logits = _workspace(xs.size(0), weight.size(0), xs)  # (r, V), reused from call to call
    if bias is None:
        torch.mm(xs, weight.t(), out=logits)
    else:
        torch.addmm(bias, xs, weight.t(), out=logits)
    picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)  # (r,) the targets' logits
    top = logits.amax(dim=1, keepdim=True)
    e = logits.sub_(top).exp_()
    s = e.sum(dim=1)  # (r,)
    loss = ((top.squeeze(1) + s.log() - picked) * counted).sum()
    return loss, e, s, counted, safe


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and the gradients; backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, ignore_index: int,
                rows: int) -> Tensor:
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        total = x.new_zeros(())
        for i in range(0, x.size(0), rows):
            xs = x[i:i + rows]
            loss, e, s, counted, safe = _block(xs, weight, bias, target[i:i + rows], ignore_index)
            total += loss
            # the 1/s of the softmax and the rows that do not count are folded into the small (r, H)
            # operands of the GEMMs below instead of passes over the (r, V) block
            one_hot = counted.to(x.dtype).unsqueeze(1)  # (r, 1): 1 where the row counts
            scale = one_hot.squeeze(1) / s  # (r,): d loss / d logits = scale * e - one_hot (counted rows)
            if grad_x is not None:  # (e @ W) * scale - W[y]
                gx = torch.mm(e, weight, out=grad_x[i:i + rows])
                gx.mul_(scale.unsqueeze(1)).sub_(weight[safe] * one_hot)
            if grad_w is not None:  # e^T (x * scale) - scatter of x into the targets' rows
                grad_w.addmm_(e.t(), xs * scale.unsqueeze(1))
                grad_w.index_add_(0, safe, xs * one_hot, alpha=-1)
            if grad_b is not None:
                grad_b.addmv_(e.t(), scale)
                grad_b.index_add_(0, safe, one_hot.squeeze(1), alpha=-1)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        scaled = [None if g is None else g.mul_(grad_out) for g in ctx.saved_tensors]
        return (*scaled, None, None, None)
