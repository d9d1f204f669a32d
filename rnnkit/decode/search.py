r"""Greedy and beam search for encoder-decoder models, batched over sentences.

Both searches run one decoder step for all sentences (and all beams) at once; nothing loops over
sentences except the unpacking of the results. They only use this protocol, which
:class:`rnnkit.models.seq2seq.Seq2Seq` implements (and a test can fake)::

    model.bos_id, model.eos_id                     # ints: first decoder input; end of a hypothesis
    enc = model.encode(src, src_lengths)           # src (B, S) long, src_lengths (B,) long
    state = model.initial_state(enc)
    log_probs, state, weights = model.decode_step(prev_tokens, state, enc)
        # prev_tokens (N,) long -> log_probs (N, V) (-inf = never generated), weights (N, S) or None
    enc2 = model.reorder(enc, index); state2 = model.reorder(state, index)
        # index (N',) long: rows of the new state, which may repeat or drop rows

Definitions shared by both searches:

- A hypothesis is ``y_1 ... y_n <eos>``; ``Hypothesis.tokens`` holds ``y_1 ... y_n`` (no ``<bos>``, no
  ``<eos>``) and :math:`|Y| = n + 1` counts the ``<eos>``.
- Maximum length: sentence ``i`` may generate at most :math:`\lfloor a \cdot |x_i| + b \rfloor` tokens
  before ``<eos>``; at that step only ``<eos>`` is allowed, so every hypothesis ends with ``<eos>``.
- Score: :math:`\log p(Y \mid X) / lp(Y)` with the GNMT length penalty
  :math:`lp(Y) = ((5 + |Y|) / 6)^\alpha`; greedy search reports :math:`\log p(Y \mid X)`
  (which is the beam score with :math:`\alpha = 0`).
- Attention (``return_attention=True``, a model with attention): ``(|Y|, |x_i|)`` weights, one row per
  generated token including ``<eos>``, over the sentence's real source positions.

Beam search keeps ``beam`` live hypotheses per sentence. At each step it ranks the ``2 * beam`` best
one-token extensions: those ending in ``<eos>`` among the first ``beam`` are finished, the best
``beam`` others stay live. A sentence is done when ``beam`` hypotheses have finished (as in fairseq),
or earlier when no live hypothesis can still beat the ``nbest``-th finished one (a bound that uses
:math:`\log p \le 0` and the largest length penalty still reachable), or at its maximum length. With
``beam=1`` this is exactly greedy search.

Example::

    >>> model.eval()                                                        # doctest: +SKIP
    >>> hyps = beam_search(model, src, src_lengths, beam=5, nbest=2)        # doctest: +SKIP
    >>> best_tokens = hyps[0][0].tokens                                     # sentence 0, best hypothesis
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Hypothesis", "beam_search", "greedy_search", "length_penalty_factor", "max_lengths"]


@dataclass
class Hypothesis:
    """One search result.

    Attributes:
        tokens: generated target ids, without ``<bos>`` and ``<eos>``.
        score: ``log p(Y|X) / lp(Y)`` (beam search) or ``log p(Y|X)`` (greedy search).
        attention: ``(len(tokens) + 1, src_len)`` weights (last row: the ``<eos>`` step), or None.
    """

    tokens: list[int]
    score: float
    attention: Tensor | None = None


def length_penalty_factor(length: Tensor | int, alpha: float) -> Tensor:
    r"""GNMT length penalty :math:`((5 + |Y|) / 6)^\alpha` for ``|Y|`` tokens (``<eos>`` included)."""
    length = torch.as_tensor(length, dtype=torch.float64)
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    r"""Per-sentence maximum number of generated tokens before ``<eos>``: :math:`\lfloor a |x| + b \rfloor`."""
    if max_len_a < 0 or max_len_b < 0:
        raise ValueError(f"max_len_a and max_len_b must be >= 0, got {max_len_a} and {max_len_b}")
    return (src_lengths.to(torch.float64) * max_len_a + max_len_b).floor().long()  # (B,)


def _check(src: Tensor, src_lengths: Tensor) -> None:
    if src.dim() != 2:
        raise ValueError(f"search: expected src of shape (B, S), got {tuple(src.shape)}")
    if src_lengths.shape != (src.shape[0],):
        raise ValueError(
            f"search: expected src_lengths of shape ({src.shape[0]},), got {tuple(src_lengths.shape)}"
        )


def _force_eos(log_probs: Tensor, force: Tensor, eos_id: int) -> Tensor:
    """Rows where ``force`` is True keep only the ``<eos>`` log-probability (others -inf).

    log_probs: ``(..., V)``; force: bool of shape ``log_probs.shape[:-1]``.
    """
    not_eos = torch.ones(log_probs.shape[-1], dtype=torch.bool, device=log_probs.device)
    not_eos[eos_id] = False
    return log_probs.masked_fill(force[..., None] & not_eos, float("-inf"))


class _EvalMode:
    """Put an ``nn.Module`` in eval mode for the search and restore its mode afterwards."""

    def __init__(self, model: Any) -> None:
        self.module = model if isinstance(model, nn.Module) else None

    def __enter__(self) -> None:
        self.was_training = self.module is not None and self.module.training
        if self.module is not None:
            self.module.eval()

    def __exit__(self, *exc: object) -> None:
        if self.module is not None:
            self.module.train(self.was_training)


@torch.no_grad()
def greedy_search(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    *,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Pick the most likely next token at every step, for all sentences at once.

    Args:
        model: follows the protocol in the module docstring (an ``nn.Module`` is put in eval mode
            for the search and restored afterwards).
        src: ``(B, S)`` source ids, padded; sentences in any order.
        src_lengths: ``(B,)`` source lengths.
        max_len_a, max_len_b: at most ``floor(a * src_len + b)`` tokens before ``<eos>``.
        return_attention: also return each hypothesis' attention weights.

    Returns:
        For each input sentence, in input order, a list with its one :class:`Hypothesis`
        (score = log-probability).
    """
    _check(src, src_lengths)
    with _EvalMode(model):
        batch = src.shape[0]
        limits = max_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
        enc = model.encode(src, src_lengths)
        state = model.initial_state(enc)
        prev = torch.full((batch,), model.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        scores = torch.zeros(batch, dtype=torch.float64, device=src.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=src.device)  # |Y|, <eos> included
        tokens: list[Tensor] = []
        weights: list[Tensor] = []
        for t in range(int(limits.max()) + 1):
            log_probs, state, step_weights = model.decode_step(prev, state, enc)  # (B, V)
            log_probs = _force_eos(log_probs, limits == t, model.eos_id)
            best = log_probs.argmax(dim=-1)  # (B,)
            best_score = log_probs.gather(1, best[:, None]).squeeze(1)  # (B,)
            scores += torch.where(done, 0.0, best_score.double())
            lengths += (~done).long()
            best = best.masked_fill(done, model.eos_id)
            tokens.append(best)
            if return_attention and step_weights is not None:
                weights.append(step_weights)
            done |= best == model.eos_id
            if bool(done.all()):
                break
            prev = best

        all_tokens = torch.stack(tokens, dim=1).tolist()  # (B, steps)
        all_weights = torch.stack(weights, dim=1) if weights else None  # (B, steps, S)
        results = []
        for i in range(batch):
            n = int(lengths[i])
            attention = None
            if all_weights is not None:
                attention = all_weights[i, :n, : int(src_lengths[i])].clone()
            results.append([Hypothesis(all_tokens[i][: n - 1], float(scores[i]), attention)])
        return results


@torch.no_grad()
def beam_search(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam: int = 5,
    nbest: int = 1,
    length_penalty: float = 0.0,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Beam search over all sentences at once: one decoder call per step for ``B * beam`` hypotheses.

    Args:
        model: follows the protocol in the module docstring (an ``nn.Module`` is put in eval mode
            for the search and restored afterwards).
        src: ``(B, S)`` source ids, padded; sentences in any order.
        src_lengths: ``(B,)`` source lengths.
        beam: live hypotheses per sentence (K).
        nbest: how many finished hypotheses to return per sentence, 1 <= nbest <= beam.
        length_penalty: GNMT :math:`\\alpha`; 0 ranks by log-probability, larger favours longer outputs.
        max_len_a, max_len_b: at most ``floor(a * src_len + b)`` tokens before ``<eos>``.
        return_attention: also return each hypothesis' attention weights.

    Returns:
        For each input sentence, in input order, up to ``nbest`` :class:`Hypothesis`, best first (fewer
        only when the sentence has fewer possible hypotheses).
    """
    _check(src, src_lengths)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in [1, beam={beam}], got {nbest}")
    with _EvalMode(model):
        return _beam_search(model, src, src_lengths, beam, nbest, length_penalty, max_len_a, max_len_b,
                            return_attention)


def _beam_search(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    beam: int,
    nbest: int,
    alpha: float,
    max_len_a: float,
    max_len_b: int,
    return_attention: bool,
) -> list[list[Hypothesis]]:
    device = src.device
    batch, k, eos = src.shape[0], beam, model.eos_id
    neg_inf = float("-inf")
    limits = max_lengths(src_lengths, max_len_a, max_len_b).to(device)  # (B,)
    width = int(limits.max())  # longest token list (without <eos>) any hypothesis can have
    # the largest length penalty a live hypothesis can still reach (for the early-stop bound)
    lp_longest = length_penalty_factor(limits + 1, alpha).to(device)  # (B,)

    enc = model.encode(src, src_lengths)
    state = model.initial_state(enc)
    repeat = torch.arange(batch, device=device).repeat_interleave(k)  # (B*K,) sentence of each beam
    enc, state = model.reorder(enc, repeat), model.reorder(state, repeat)

    alive_scores = torch.full((batch, k), neg_inf, dtype=torch.float64, device=device)
    alive_scores[:, 0] = 0.0  # one live hypothesis (<bos>) per sentence at the start
    alive_tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=device)  # (B, K, t)
    alive_attn: Tensor | None = None  # (B, K, t, S)

    fin_scores = torch.full((batch, nbest), neg_inf, dtype=torch.float64, device=device)  # normalised
    fin_tokens = torch.full((batch, nbest, width), -1, dtype=torch.long, device=device)
    fin_lengths = torch.zeros(batch, nbest, dtype=torch.long, device=device)  # tokens without <eos>
    fin_attn: Tensor | None = None  # (B, nbest, width + 1, S)
    n_finished = torch.zeros(batch, dtype=torch.long, device=device)
    prev = torch.full((batch * k,), model.bos_id, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)[:, None]  # (B, 1)

    for t in range(width + 1):
        log_probs, state, weights = model.decode_step(prev, state, enc)  # (B*K, V), (B*K, S)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.view(batch, k, vocab).double()  # (B, K, V)
        log_probs = _force_eos(log_probs, (limits == t)[:, None].expand(batch, k), eos)
        candidates = (alive_scores[:, :, None] + log_probs).view(batch, k * vocab)  # (B, K*V)
        cand_scores, cand_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # (B, C), best first
        origin = torch.div(cand_index, vocab, rounding_mode="floor")  # (B, C) beam each extends
        token = cand_index % vocab  # (B, C)
        finite = torch.isfinite(cand_scores)
        ends = (token == eos) & finite
        finishing = ends.clone()
        finishing[:, k:] = False  # only <eos> extensions ranked in the first K finish (fairseq)

        step_attn = None
        if return_attention and weights is not None:
            step_attn = weights.view(batch, k, -1)  # (B, K, S)
            if alive_attn is None:
                alive_attn = step_attn.new_zeros(batch, k, 0, step_attn.shape[-1])
                fin_attn = step_attn.new_zeros(batch, nbest, width + 1, step_attn.shape[-1])

        # finished hypotheses: merge this step's into the pool of the nbest best (normalised) ones
        if bool(finishing.any()):
            n_finished += finishing.sum(dim=1)
            norm = cand_scores / float(length_penalty_factor(t + 1, alpha))
            new_scores = norm.masked_fill(~finishing, neg_inf)  # (B, C)
            history = alive_tokens[rows, origin]  # (B, C, t)
            pad = history.new_full((batch, history.shape[1], width - t), -1)
            pool_scores = torch.cat([fin_scores, new_scores], dim=1)  # (B, nbest + C)
            pool_tokens = torch.cat([fin_tokens, torch.cat([history, pad], dim=2)], dim=1)
            pool_lengths = torch.cat([fin_lengths, torch.full_like(new_scores, t, dtype=torch.long)], dim=1)
            fin_scores, keep = pool_scores.topk(nbest, dim=1)  # (B, nbest)
            fin_tokens, fin_lengths = pool_tokens[rows, keep], pool_lengths[rows, keep]
            if step_attn is not None:
                new_attn = torch.cat([alive_attn[rows, origin], step_attn[rows, origin][:, :, None]], dim=2)
                new_attn = torch.nn.functional.pad(new_attn, (0, 0, 0, width - t))  # (B, C, width + 1, S)
                fin_attn = torch.cat([fin_attn, new_attn], dim=1)[rows, keep]

        # live hypotheses: the best K extensions that do not end in <eos>
        live_key = cand_scores.masked_fill(ends | ~finite, neg_inf)
        alive_scores, pick = live_key.topk(k, dim=1)  # (B, K)
        alive_origin, alive_token = origin.gather(1, pick), token.gather(1, pick)  # (B, K)
        alive_tokens = torch.cat([alive_tokens[rows, alive_origin], alive_token[:, :, None]], dim=2)
        if step_attn is not None:
            last = step_attn[rows, alive_origin][:, :, None]  # (B, K, 1, S)
            alive_attn = torch.cat([alive_attn[rows, alive_origin], last], dim=2)  # (B, K, t + 1, S)

        # a sentence is done after K finished hypotheses, or when no live one can enter the n-best
        best_live = alive_scores[:, 0]  # (B,) log p <= 0
        if alpha >= 0:
            bound = best_live / lp_longest  # the longest reachable length divides by the most
        else:
            bound = best_live / float(length_penalty_factor(t + 2, alpha))
        done = (n_finished >= k) | (fin_scores[:, -1] >= bound) | ~torch.isfinite(best_live)
        if bool(done.all()):
            break
        alive_scores = alive_scores.masked_fill(done[:, None], neg_inf)
        flat = (rows * k + alive_origin).view(-1)  # (B*K,) rows of the new states
        state = model.reorder(state, flat)
        prev = alive_token.view(-1)

    results = []
    scores_list, lengths_list = fin_scores.tolist(), fin_lengths.tolist()
    for i in range(batch):
        hyps = []
        for j in range(nbest):
            if scores_list[i][j] == neg_inf:
                break
            n = lengths_list[i][j]
            attention = None
            if fin_attn is not None:
                attention = fin_attn[i, j, : n + 1, : int(src_lengths[i])].clone()
            hyps.append(Hypothesis(fin_tokens[i, j, :n].tolist(), scores_list[i][j], attention))
        results.append(hyps)
    return results
