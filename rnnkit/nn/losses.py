"""Output-layer losses.

:func:`linear_cross_entropy` is ``F.cross_entropy(F.linear(x, weight, bias), target, reduction="sum")``
with the gradient computed in the forward pass. On a CPU a word-level LM spends as much time moving its
``(N, V)`` logits through memory (log-softmax output, its backward, the dense gradient of the NLL) as it does
in the output GEMMs; here the forward pass turns the logits, in place, into the loss *and* their gradient
(``softmax - one_hot``) and contracts that with ``x`` and ``weight`` at once, so the logits are written
once and read twice instead of about six passes, and nothing of size ``(N, V)`` outlives the forward call.
Rows are taken in blocks only to bound that temporary (:data:`MAX_BLOCK_ELEMENTS`): smaller, cache-sized
blocks were measured slower on the 2-core machine (each block re-reads and re-writes the whole ``(V, H)``
weight gradient). Same loss and gradients as the unfused form, to float rounding (tests/test_losses.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear_cross_entropy"]

#: At most this many logits (rows x vocabulary) at a time: 2^26 floats = 256 MiB.
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
    rows = block_rows or max(1, min(x.size(0), MAX_BLOCK_ELEMENTS // weight.size(0)))
    grad_wanted = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if not grad_wanted:
        return sum((F.cross_entropy(F.linear(x[i:i + rows], weight, bias), target[i:i + rows],
                                    ignore_index=ignore_index, reduction="sum")
                    for i in range(0, x.size(0), rows)), x.new_zeros(()))
    return _LinearCrossEntropy.apply(x, weight, bias, target, ignore_index, rows)


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
            xs, ys = x[i:i + rows], target[i:i + rows]
            logits = F.linear(xs, weight, bias)  # (r, V)
            lse = torch.logsumexp(logits, dim=1)  # (r,)
            counted = ys != ignore_index
            safe = torch.where(counted, ys, 0).unsqueeze(1)  # (r, 1)
            total += ((lse - logits.gather(1, safe).squeeze(1)) * counted).sum()
            # d loss / d logits = softmax - one_hot, zero on rows that do not count; in place over the logits
            grad = logits.sub_(lse.unsqueeze(1)).exp_()
            grad.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=grad.dtype))
            if not bool(counted.all()):
                grad.mul_(counted.unsqueeze(1))
            if grad_x is not None:
                torch.mm(grad, weight, out=grad_x[i:i + rows])
            if grad_w is not None:
                grad_w.addmm_(grad.t(), xs)
            if grad_b is not None:
                grad_b += grad.sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        scaled = [None if g is None else g * grad_out for g in ctx.saved_tensors]
        return (*scaled, None, None, None)
