"""Sampling from a recurrent language model with the state carried: each new token costs one step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.models.lm import LanguageModel


def check_sampling(*, temperature: float, top_k: int, top_p: float) -> None:
    """Reject sampling settings that would sample nonsense or crash: ConfigError naming the field.

    ``temperature`` must be finite and >= 0 (0 = greedy), ``top_k`` >= 0 (0 = off), ``top_p`` in (0, 1].
    """
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"field 'temperature': must be a finite number >= 0 (0 = greedy), got {temperature}")
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0:
        raise ConfigError(f"field 'top_k': must be an integer >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:  # also rejects nan
        raise ConfigError(f"field 'top_p': must be in (0, 1] (1 = off), got {top_p}")


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Keep the ``top_k`` largest logits and/or the smallest set whose probability reaches ``top_p``
    (nucleus sampling); the rest become ``-inf``. ``logits`` is (B, V)."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first one always stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(log_probs: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row of ``log_probs`` (B, V); temperature 0 means greedy (argmax)."""
    if temperature <= 0:
        return log_probs.argmax(dim=-1)
    logits = filter_logits(log_probs / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: LanguageModel, prompt: Sequence[int], length: int, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None, num_samples: int = 1) -> list[list[int]]:
    """Continue ``prompt`` (token ids, at least one) by ``length`` tokens, ``num_samples`` times in a batch.

    The prompt is read once; then every generated token is fed back for one recurrent step, so the
    recurrent stack runs ``len(prompt) + length`` steps in all. Returns the generated ids only.
    Sampling settings are checked first by :func:`check_sampling`.
    """
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    if len(prompt) < 1:
        raise ValueError("generation needs a prompt of at least one token")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    tokens = torch.tensor([list(prompt)] * num_samples, dtype=torch.long, device=device)  # (S, P)
    out: list[Tensor] = []
    try:
        hidden, state = model.hidden_states(tokens)  # (S, P, H): the whole prompt in one call
        for _ in range(length):
            log_probs = model.log_probs(hidden[:, -1])  # (S, V)
            nxt = sample_next(log_probs, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)  # (S,)
            out.append(nxt)
            hidden, state = model.hidden_states(nxt[:, None], state)  # (S, 1, H)
    finally:
        model.train(was_training)
    if not out:
        return [[] for _ in range(num_samples)]
    return torch.stack(out, dim=1).tolist()
