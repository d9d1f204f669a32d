r"""Attention over a padded sequence of keys: additive (Bahdanau), dot, general (Luong) and scaled dot.

Every module scores one or more queries against the keys, masks padded keys, normalises with a softmax
over the key axis and returns the weighted sum of the values:

.. math::

    e_{ij} = \mathrm{score}(q_i, k_j), \qquad
    a_{ij} = \frac{\exp e_{ij}}{\sum_{j' \in \mathrm{valid}} \exp e_{ij'}}
             \;(a_{ij} = 0 \text{ where key } j \text{ is padding}), \qquad
    c_i = \sum_j a_{ij} v_j

Only the score differs between modules:

=========================  =========================================  ====================
module                     :math:`\mathrm{score}(q, k)`               ``project_keys(k)``
=========================  =========================================  ====================
``AdditiveAttention``      :math:`v^\top \tanh(W_1 k + W_2 q + b)`    :math:`W_1 k`
``DotAttention``           :math:`q^\top k`                            :math:`k`
``GeneralAttention``       :math:`q^\top W k`                          :math:`W k`
``ScaledDotAttention``     :math:`q^\top k / \sqrt{d_k}`               :math:`k`
=========================  =========================================  ====================

Common call, shared by all four::

    context, weights = attn(query, keys, values=None, mask=None, projected_keys=None)

Shape (B batch, T_q queries, T_k keys, D_q / D_k / D_v feature sizes):
    - query: ``(B, D_q)`` (one query per row, e.g. a decoder step) or ``(B, T_q, D_q)``.
    - keys: ``(B, T_k, D_k)``.
    - values: ``(B, T_k, D_v)``; defaults to ``keys``.
    - mask: ``(B, T_k)`` bool, True = valid key, False = padding. ``None``: every key is valid.
    - projected_keys: ``project_keys(keys)``, computed once per source so that each decoder step skips the
      key-side projection; ``(B, T_k, P)`` with P = ``hidden_size`` (additive), ``query_size`` (general)
      or D_k (dot, scaled dot).
    - context: ``(B, D_v)`` or ``(B, T_q, D_v)`` (same rank as ``query``).
    - weights: ``(B, T_k)`` or ``(B, T_q, T_k)``; each row sums to 1 and is exactly 0 on padding.

A row whose mask is all False has no valid key to attend to, so its softmax is undefined: ``forward``
raises ``ShapeError`` (a ``ValueError``) naming the batch rows rather than returning NaN or an arbitrary context.

Example::

    >>> attn = AdditiveAttention(query_size=8, key_size=6, hidden_size=5)
    >>> keys, mask = torch.randn(2, 4, 6), length_mask(torch.tensor([4, 2]), 4)
    >>> pk = attn.project_keys(keys)                       # once per source
    >>> context, weights = attn(torch.randn(2, 8), keys, mask=mask, projected_keys=pk)  # each step
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnkit.errors import ShapeError

__all__ = [
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "ScaledDotAttention",
    "length_mask",
]


def length_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean padding mask from sequence lengths: ``mask[b, t] = t < lengths[b]`` (True = valid).

    Args:
        lengths: ``(B,)`` integer lengths.
        max_len: number of time steps T; defaults to ``lengths.max()``.

    Returns:
        ``(B, T)`` bool tensor on ``lengths``' device.
    """
    if lengths.dim() != 1:
        raise ShapeError(f"length_mask: expected lengths of shape (B,), got {tuple(lengths.shape)}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    steps = torch.arange(max_len, device=lengths.device)  # (T,)
    return steps[None, :] < lengths[:, None]  # (B, T)


class _Attention(nn.Module):
    """Shared forward: validate, score, mask, softmax, weighted sum. Subclasses define the score."""

    def _check_sizes(self, query: Tensor, keys: Tensor) -> None:
        """Raise ValueError if the query or key feature sizes do not fit this module."""
        raise NotImplementedError

    def _projected_size(self, keys: Tensor) -> int:
        """Feature size of ``project_keys(keys)``."""
        raise NotImplementedError

    def project_keys(self, keys: Tensor) -> Tensor:
        """Key-side part of the score, computed once per source: ``(B, T_k, D_k) -> (B, T_k, P)``."""
        return keys

    def _score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        """Scores ``(B, T_q, T_k)`` from queries ``(B, T_q, D_q)`` and projected keys ``(B, T_k, P)``."""
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` over ``keys``; return ``(context, weights)`` (see the module docstring)."""
        name = type(self).__name__
        if query.dim() not in (2, 3):
            raise ShapeError(
                f"{name}: expected query of shape (B, D_q) or (B, T_q, D_q), got {tuple(query.shape)}"
            )
        if keys.dim() != 3:
            raise ShapeError(f"{name}: expected keys of shape (B, T_k, D_k), got {tuple(keys.shape)}")
        batch, t_k = keys.shape[0], keys.shape[1]
        if query.shape[0] != batch:
            raise ShapeError(f"{name}: query batch size {query.shape[0]} != keys batch size {batch}")
        if t_k == 0:
            raise ShapeError(f"{name}: keys have no time steps (T_k = 0), got {tuple(keys.shape)}")
        self._check_sizes(query, keys)
        if values is None:
            values = keys
        elif values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ShapeError(
                f"{name}: expected values of shape ({batch}, {t_k}, D_v), got {tuple(values.shape)}"
            )
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ShapeError(f"{name}: expected a bool mask (True = valid), got dtype {mask.dtype}")
            if mask.shape != (batch, t_k):
                raise ShapeError(f"{name}: expected mask of shape ({batch}, {t_k}), got {tuple(mask.shape)}")
            empty = ~mask.any(dim=1)  # (B,)
            if bool(empty.any()):
                rows = empty.nonzero().flatten().tolist()
                raise ShapeError(f"{name}: mask has no valid key in batch rows {rows}")
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        else:
            expected = (batch, t_k, self._projected_size(keys))
            if projected_keys.shape != expected:
                raise ShapeError(
                    f"{name}: expected projected_keys of shape {expected} (from project_keys(keys)), "
                    f"got {tuple(projected_keys.shape)}"
                )

        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, 1, D_q)
        scores = self._score(query, projected_keys)  # (B, T_q, T_k)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # exp(-inf) = 0 exactly
        weights = torch.softmax(scores, dim=-1)  # (B, T_q, T_k)
        context = torch.bmm(weights, values)  # (B, T_q, D_v)
        if single:
            return context.squeeze(1), weights.squeeze(1)  # (B, D_v), (B, T_k)
        return context, weights


class AdditiveAttention(_Attention):
    """Additive (Bahdanau, concat) attention: ``score(q, k) = v^T tanh(W_1 k + W_2 q + b)``.

    Args:
        query_size: D_q, features of a query (e.g. the decoder hidden size).
        key_size: D_k, features of a key (e.g. ``2 * H`` for a bidirectional encoder).
        hidden_size: size of the tanh layer (``v`` has this size).
        bias: if True (default), the query projection carries the bias ``b``; ``W_1`` and ``v`` never do
            (a bias on ``v`` would cancel in the softmax).

    Parameters: ``key_proj.weight`` (W_1, ``(hidden_size, key_size)``), ``query_proj.weight`` (W_2,
    ``(hidden_size, query_size)``), ``query_proj.bias`` (b), ``v.weight`` (``(1, hidden_size)``).
    ``project_keys(keys)`` returns ``W_1 k`` of shape ``(B, T_k, hidden_size)``.
    Shapes and the call: see the module docstring.
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        sizes = {"query_size": query_size, "key_size": key_size, "hidden_size": hidden_size}
        for field, value in sizes.items():
            if value <= 0:
                raise ValueError(f"AdditiveAttention: {field} must be positive, got {value}")
        self.query_size = query_size
        self.key_size = key_size
        self.hidden_size = hidden_size
        self.key_proj = nn.Linear(key_size, hidden_size, bias=False)
        self.query_proj = nn.Linear(query_size, hidden_size, bias=bias)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, hidden_size={self.hidden_size}"

    def _check_sizes(self, query: Tensor, keys: Tensor) -> None:
        if query.shape[-1] != self.query_size:
            raise ValueError(
                f"AdditiveAttention: expected query features {self.query_size}, got {query.shape[-1]}"
            )
        if keys.shape[-1] != self.key_size:
            raise ValueError(
                f"AdditiveAttention: expected key features {self.key_size}, got {keys.shape[-1]}"
            )

    def _projected_size(self, keys: Tensor) -> int:
        return self.hidden_size

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_1 k``: ``(B, T_k, key_size) -> (B, T_k, hidden_size)``."""
        return self.key_proj(keys)

    def _score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        projected_query = self.query_proj(query)  # (B, T_q, H)
        # (B, 1, T_k, H) + (B, T_q, 1, H) -> (B, T_q, T_k, H)
        energy = torch.tanh(projected_keys[:, None, :, :] + projected_query[:, :, None, :])
        return self.v(energy).squeeze(-1)  # (B, T_q, T_k)


class DotAttention(_Attention):
    """Dot-product (Luong "dot") attention: ``score(q, k) = q^T k``; needs D_q == D_k, has no parameters.

    ``project_keys`` is the identity. Shapes and the call: see the module docstring.
    """

    def _check_sizes(self, query: Tensor, keys: Tensor) -> None:
        if query.shape[-1] != keys.shape[-1]:
            raise ValueError(
                f"{type(self).__name__}: expected query features equal to key features {keys.shape[-1]}, "
                f"got {query.shape[-1]}"
            )

    def _projected_size(self, keys: Tensor) -> int:
        return keys.shape[-1]

    def _score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        return torch.bmm(query, projected_keys.transpose(1, 2))  # (B, T_q, T_k)


class ScaledDotAttention(DotAttention):
    """Scaled dot-product attention: ``score(q, k) = q^T k / sqrt(D_k)``; no parameters, D_q == D_k.

    Single-head and without dropout, it equals ``torch.nn.functional.scaled_dot_product_attention`` with
    ``attn_mask = mask[:, None, :]``. ``project_keys`` is the identity. See the module docstring.
    """

    def _score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        return torch.bmm(query, projected_keys.transpose(1, 2)) / math.sqrt(query.shape[-1])  # (B, T_q, T_k)


class GeneralAttention(_Attention):
    """Bilinear (Luong "general") attention: ``score(q, k) = q^T W k``.

    Args:
        query_size: D_q, features of a query.
        key_size: D_k, features of a key.

    Parameter: ``key_proj.weight`` (W, ``(query_size, key_size)``), no bias. ``project_keys(keys)``
    returns ``W k`` of shape ``(B, T_k, query_size)``. Shapes and the call: see the module docstring.
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        for field, value in (("query_size", query_size), ("key_size", key_size)):
            if value <= 0:
                raise ValueError(f"GeneralAttention: {field} must be positive, got {value}")
        self.query_size = query_size
        self.key_size = key_size
        self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}"

    def _check_sizes(self, query: Tensor, keys: Tensor) -> None:
        if query.shape[-1] != self.query_size:
            raise ValueError(
                f"GeneralAttention: expected query features {self.query_size}, got {query.shape[-1]}"
            )
        if keys.shape[-1] != self.key_size:
            raise ValueError(
                f"GeneralAttention: expected key features {self.key_size}, got {keys.shape[-1]}"
            )

    def _projected_size(self, keys: Tensor) -> int:
        return self.query_size

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W k``: ``(B, T_k, key_size) -> (B, T_k, query_size)``."""
        return self.key_proj(keys)

    def _score(self, query: Tensor, projected_keys: Tensor) -> Tensor:
        return torch.bmm(query, projected_keys.transpose(1, 2))  # (B, T_q, T_k)
