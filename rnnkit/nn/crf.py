"""Linear-chain conditional random field (CRF) over per-token tag scores.

Given emission scores :math:`e_t(y)` from a network and learned start, transition and end scores
:math:`s(y)`, :math:`A(y, y')`, :math:`f(y)`, the score of a tag sequence :math:`y_1 \\dots y_L` is

.. math::

    \\mathrm{score}(y) = s(y_1) + \\sum_{t=1}^{L} e_t(y_t) + \\sum_{t=2}^{L} A(y_{t-1}, y_t) + f(y_L)

and :math:`p(y \\mid x) = \\exp(\\mathrm{score}(y)) / Z` with :math:`\\log Z = \\operatorname{logsumexp}_y
\\mathrm{score}(y)`, computed by the forward algorithm in :math:`O(L K^2)`. :meth:`CRF.decode` is the
Viterbi algorithm (the same recursion with ``max`` for ``logsumexp``).

Constraints (for BIO/BIOES tag sets, see :func:`bio_constraints`) are boolean masks of allowed
start tags, transitions and end tags. A disallowed score is replaced by :data:`DISALLOWED` (-10000)
in :meth:`CRF.score` and :meth:`CRF.log_partition`, a large finite value so the loss and its
gradients stay finite even if a gold sequence breaks a constraint; :meth:`CRF.decode` uses
``-inf`` so a decoded path never contains a disallowed transition, whatever the emissions.

Batches are batch-first and padded on the right; ``mask`` is ``True`` at real tokens. Every
sequence must have at least one token. Bad shapes raise :class:`rnnkit.errors.ShapeError` (a ``ValueError``
and a ``RuntimeError``); a mask with an empty row or padding before a token too, except inside
``torch.export``, whose graph cannot branch on the mask's values (the caller then guarantees them).
The likelihood exports with ``torch.export`` and compiles with ``torch.compile``, ``decode`` compiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.errors import ShapeError

__all__ = ["CRF", "DISALLOWED", "bio_constraints"]

DISALLOWED = -10000.0
"""Score given to a disallowed start/transition/end in the likelihood (``exp(-1e4)`` is 0)."""


def _check_mask(name: str, mask: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"{name}: expected a bool tensor of shape {shape}, got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return mask.clone()


class CRF(nn.Module):
    """Linear-chain CRF with start, transition and end scores, and optional hard constraints.

    ``transitions[i, j]`` is the score of tag ``j`` following tag ``i``. All scores start at zero,
    so an untrained CRF adds nothing to the emissions.

    Args:
        num_tags: number of tags ``K``.
        allowed_transitions: bool ``(K, K)``, ``[i, j]`` True if ``j`` may follow ``i``; ``None``: all.
        allowed_start: bool ``(K,)``, tags that may begin a sequence; ``None``: all.
        allowed_end: bool ``(K,)``, tags that may end a sequence; ``None``: all.

    Shape:
        - emissions: ``(B, T, K)``
        - tags: ``(B, T)`` integer; values at padded positions are ignored
        - mask: ``(B, T)`` bool, ``True`` for real tokens, padding on the right, ``mask[:, 0]`` all True

    Example::

        >>> crf = CRF(5)
        >>> nll = crf.neg_log_likelihood(emissions, tags, mask).sum()
        >>> paths = crf.decode(emissions, mask)  # list of B lists of tag ids
    """

    def __init__(
        self,
        num_tags: int,
        *,
        allowed_transitions: Tensor | None = None,
        allowed_start: Tensor | None = None,
        allowed_end: Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        k = num_tags
        allowed_transitions = _check_mask("allowed_transitions", allowed_transitions, (k, k))
        self.register_buffer("allowed_transitions", allowed_transitions)
        self.register_buffer("allowed_start", _check_mask("allowed_start", allowed_start, (k,)))
        self.register_buffer("allowed_end", _check_mask("allowed_end", allowed_end, (k,)))
        if not self.allowed_start.any() or not self.allowed_end.any():
            raise ValueError("constraints allow no start tag or no end tag")

    def extra_repr(self) -> str:
        masks = (self.allowed_transitions, self.allowed_start, self.allowed_end)
        constrained = not all(bool(m.all()) for m in masks)
        return f"num_tags={self.num_tags}, constrained={constrained}"

    def reset_parameters(self) -> None:
        """Set all start, transition and end scores to zero."""
        for p in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.zeros_(p)

    def _scores(self, fill: float) -> tuple[Tensor, Tensor, Tensor]:
        """Start, transition and end scores with disallowed entries set to ``fill``."""
        return (
            self.start_transitions.masked_fill(~self.allowed_start, fill),
            self.transitions.masked_fill(~self.allowed_transitions, fill),
            self.end_transitions.masked_fill(~self.allowed_end, fill),
        )

    def _check(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> None:
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ShapeError(
                f"emissions: expected shape (B, T, {self.num_tags}), got {tuple(emissions.shape)}"
            )
        b, t = emissions.shape[:2]
        if t == 0:
            raise ShapeError("emissions: expected at least one time step, got T=0")
        if mask.shape != (b, t) or mask.dtype != torch.bool:
            got = f"{mask.dtype} of shape {tuple(mask.shape)}"
            raise ShapeError(f"mask: expected a bool tensor of shape {(b, t)}, got {got}")
        if tags is not None and tags.shape != (b, t):
            raise ShapeError(f"tags: expected shape {(b, t)}, got {tuple(tags.shape)}")
        if torch.compiler.is_exporting():  # the mask's values are data: an exported graph cannot branch on them
            return
        if not bool(mask[:, 0].all()):
            raise ShapeError("mask: every sequence needs at least one token (mask[:, 0] must be all True)")
        if t > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ShapeError("mask: padding must be on the right (a True follows a False)")

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised score of the given tag sequences (the equation in the module docstring).

        Returns:
            ``(B,)`` scores.
        """
        self._check(emissions, mask, tags)
        start, trans, end = self._scores(DISALLOWED)
        tags = tags.long().masked_fill(~mask, 0)  # padded tags may be anything, e.g. -100
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        # embedding lookups, not advanced indexing (``trans[prev, cur]``): the backward of the latter adds
        # repeated tags' gradients with index_put_(accumulate=True), whose float32 CPU kernel uses racing
        # atomic adds on >= 2 threads for large batches (rounding that changes run to run); embedding's
        # backward adds in a fixed order on CPU (and is not among torch's nondeterministic GPU operations)
        total = F.embedding(tags[:, 0], start[:, None])[:, 0] + torch.where(mask, emit, emit.new_zeros(())).sum(1)
        if tags.size(1) > 1:
            pairs = tags[:, :-1] * trans.size(1) + tags[:, 1:]  # (B, T-1): row-major index into trans
            step = F.embedding(pairs, trans.reshape(-1, 1))[..., 0]  # (B, T-1)
            total = total + torch.where(mask[:, 1:], step, step.new_zeros(())).sum(1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)  # (B,)
        return total + F.embedding(last, end[:, None])[:, 0]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Log of the partition function :math:`\\log Z` by the forward algorithm.

        .. math::

            \\alpha_1(j) = s(j) + e_1(j), \\quad
            \\alpha_t(j) = \\operatorname{logsumexp}_i(\\alpha_{t-1}(i) + A(i, j)) + e_t(j), \\quad
            \\log Z = \\operatorname{logsumexp}_j(\\alpha_L(j) + f(j))

        Padded steps carry :math:`\\alpha` through unchanged.

        Returns:
            ``(B,)`` log-partition values.
        """
        self._check(emissions, mask)
        start, trans, end = self._scores(DISALLOWED)
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # (B, K, 1) + (1, K, K) -> logsumexp over previous tag i -> (B, K)
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def neg_log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood :math:`\\log Z - \\mathrm{score}(y)` of each sequence.

        Returns:
            ``(B,)`` values (sum or average them for a loss).
        """
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Same as :meth:`neg_log_likelihood`: ``(B,)`` negative log-likelihoods."""
        return self.neg_log_likelihood(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Most likely tag sequence of each batch row (batched Viterbi).

        Disallowed starts, transitions and ends score ``-inf`` here, so they never appear.

        Returns:
            A list of ``B`` lists; row ``b`` has ``mask[b].sum()`` tag ids.

        Raises:
            ValueError: if the constraints allow no tag sequence of some row's length.
        """
        self._check(emissions, mask)
        start, trans, end = self._scores(float("-inf"))
        b, t_max, _ = emissions.shape
        score = start + emissions[:, 0]  # (B, K)
        backpointers = []  # each (B, K): best previous tag for tag j at step t
        for t in range(1, t_max):
            best, idx = (score.unsqueeze(2) + trans.unsqueeze(0)).max(dim=1)  # (B, K)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
            backpointers.append(idx)
        score = score + end
        best_score, cur = score.max(dim=1)  # (B,)
        lengths = mask.sum(1)
        if not bool(torch.isfinite(best_score).all()):
            bad = int(lengths[~torch.isfinite(best_score)][0])
            raise ValueError(f"the CRF constraints allow no tag sequence of length {bad}")
        out = torch.zeros(b, t_max, dtype=torch.long, device=emissions.device)
        for t in range(t_max - 1, -1, -1):
            active = t < lengths  # (B,): position t is real; cur holds its tag
            out[:, t] = cur
            if t > 0:
                prev = backpointers[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
                cur = torch.where(active, prev, cur)
        rows = out.tolist()
        return [row[:n] for row, n in zip(rows, lengths.tolist())]


def bio_constraints(labels: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Allowed transitions, starts and ends for a BIO or BIOES tag set, as :class:`CRF` takes them.

    Labels are ``"O"`` or ``PREFIX-TYPE`` (``"B-PER"``). BIO: ``I-X`` may only start after ``B-X``
    or ``I-X`` (so not at the start of a sentence). BIOES: after ``B-X``/``I-X`` only ``I-X`` or
    ``E-X``; after ``O``/``E-*``/``S-*`` only ``O``, ``B-*``, ``S-*``; a sentence starts with ``O``,
    ``B-*`` or ``S-*`` and ends with ``O``, ``E-*`` or ``S-*``.

    Args:
        labels: tag names in tag-id order.
        scheme: ``"BIO"`` or ``"BIOES"``.

    Returns:
        ``(transitions (K, K), start (K,), end (K,))`` bool tensors.

    Raises:
        ValueError: for an unknown scheme or a label that does not belong to it.
    """
    if scheme not in ("BIO", "BIOES"):
        raise ValueError(f"scheme: expected 'BIO' or 'BIOES', got {scheme!r}")
    prefixes = "BI" if scheme == "BIO" else "BIES"
    parsed = []
    for label in labels:
        if label == "O":
            parsed.append(("O", None))
            continue
        prefix, sep, kind = label.partition("-")
        if not sep or prefix not in prefixes or not kind:
            raise ValueError(f"label {label!r} is not a {scheme} label ('O' or one of {prefixes} + '-TYPE')")
        parsed.append((prefix, kind))
    k = len(labels)
    trans = torch.zeros(k, k, dtype=torch.bool)
    for i, (p, x) in enumerate(parsed):
        for j, (q, y) in enumerate(parsed):
            if scheme == "BIO":
                ok = q != "I" or (p in "BI" and x == y)
            elif p in ("B", "I"):  # inside a chunk of type x: continue or close it
                ok = q in ("I", "E") and x == y
            else:  # outside any chunk
                ok = q in ("O", "B", "S")
            trans[i, j] = ok
    start = torch.tensor([p in ("O", "B", "S") for p, _ in parsed], dtype=torch.bool)
    if scheme == "BIO":
        end = torch.ones(k, dtype=torch.bool)
    else:
        end = torch.tensor([p in ("O", "E", "S") for p, _ in parsed], dtype=torch.bool)
    return trans, start, end
