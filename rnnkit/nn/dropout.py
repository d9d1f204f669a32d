"""Dropout for recurrent networks: locked (variational) dropout and weight dropout (DropConnect).

Locked dropout (Gal & Ghahramani 2016; Merity et al. 2018, AWD-LSTM) draws one Bernoulli mask per sequence
and feature and applies it at every time step, instead of a fresh mask per element. Weight dropout
(Wan et al. 2013, DropConnect; AWD-LSTM's ``WeightDrop``) zeroes entries of a weight matrix, here the
hidden-to-hidden matrix, once per forward pass. Both scale kept values by ``1 / (1 - p)`` and are the
identity in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_probability(name: str, p: float) -> float:
    """Return ``p`` as a float if ``0 <= p < 1``, else raise ValueError naming the argument."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")
    return float(p)


def locked_dropout_mask(
    batch: int, features: int, p: float, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """One scaled Bernoulli keep-mask per sequence: ``(B, F)`` with entries 0 or ``1 / (1 - p)``."""
    keep = 1.0 - p
    return torch.empty(batch, features, device=device, dtype=dtype).bernoulli_(keep).div_(keep)


def locked_dropout(x: Tensor, p: float = 0.5, training: bool = True, batch_first: bool = True) -> Tensor:
    """Locked dropout of a padded batch ``(B, T, F)`` (``batch_first``) or ``(T, B, F)``.

    The mask has shape ``(B, 1, F)`` (or ``(1, B, F)``): constant over time, independent across sequences.
    """
    if not training or p == 0.0:
        return x
    if x.dim() != 3:
        layout = "(B, T, F)" if batch_first else "(T, B, F)"
        raise ValueError(f"locked_dropout: expected a 3-D input {layout}, got shape {tuple(x.shape)}")
    batch = x.size(0) if batch_first else x.size(1)
    mask = locked_dropout_mask(batch, x.size(2), p, device=x.device, dtype=x.dtype)  # (B, F)
    return x * (mask.unsqueeze(1) if batch_first else mask.unsqueeze(0))


class LockedDropout(torch.nn.Module):
    """Locked (variational) dropout: one mask per sequence and feature, shared by all time steps.

    Args:
        p: drop probability in [0, 1). Default 0.5.
        batch_first: input is ``(B, T, F)`` if True (default), else ``(T, B, F)``.

    Shape:
        input and output: (B, T, F) or (T, B, F).

    Example::

        drop = LockedDropout(0.3)
        y = drop(torch.randn(4, 10, 8))   # y[b, :, f] is 0 for all t, or x[b, :, f] / 0.7
    """

    def __init__(self, p: float = 0.5, batch_first: bool = True) -> None:
        super().__init__()
        self.p = check_probability("LockedDropout: p", p)
        self.batch_first = batch_first

    def forward(self, x: Tensor) -> Tensor:
        return locked_dropout(x, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


def weight_drop(weight: Tensor, p: float, training: bool = True) -> Tensor:
    """DropConnect: ``weight`` with each entry zeroed with probability ``p`` (kept ones scaled by 1/(1-p)).

    One mask per call (``torch.nn.functional.dropout`` on the whole matrix); gradients flow to ``weight``.
    """
    return F.dropout(weight, p, training)
