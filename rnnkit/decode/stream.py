"""Streaming, stateful inference with a recurrent language model: one token (or one chunk) at a time.

A stream's state is a dict of plain tensors, so it can be saved with safetensors and restored later
(:func:`save_state`, :func:`load_state`), e.g. to continue a conversation in another process:

* ``"h"``: ``(L, B, H)`` hidden state of every layer (all cells; for a cell whose state is a tuple, its
  first part);
* ``"c"``: ``(L, B, H)`` cell state of every layer (LSTM and layer-normalised LSTM: the second part);
  ``"s2"``, ``"s3"``, ...: further parts of a user cell's state tuple;
* ``"log_probs"``: ``(B, V)`` log-probabilities of the next token, once at least one token was read.

    state = initial_state(model, 1)
    log_probs, state = step(model, torch.tensor([5]), state)  # (1, V)
    total, state = score_ids(model, [7, 8, 9], state)         # log p(7|5) + log p(8|5 7) + log p(9|5 7 8)

Shapes: B streams, L layers, H hidden size, V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from rnnkit.decode.sampling import sample_next
from rnnkit.errors import DataError
from rnnkit.models.lm import LanguageModel

StreamState = dict[str, Tensor]


def _device(model: LanguageModel) -> torch.device:
    return next(model.parameters()).device


def initial_state(model: LanguageModel, batch: int = 1) -> StreamState:
    """The zero state of ``batch`` streams (what the model starts from when no state is given)."""
    return _named(model.rnn.init_state(batch, device=_device(model)))  # each part (L, B, S)


def _names(parts: int) -> list[str]:
    return ["h", "c", *(f"s{i}" for i in range(2, parts))][:parts]


def _named(rnn: Tensor | tuple[Tensor, ...]) -> StreamState:
    """The recurrent layer's state (a tensor or a tuple of tensors) as named tensors."""
    if isinstance(rnn, Tensor):
        return {"h": rnn}
    return dict(zip(_names(len(rnn)), rnn))


def _recurrent(state: StreamState) -> Tensor | tuple[Tensor, ...]:
    parts = [state[n] for n in _names(len(state) - ("log_probs" in state))]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _pack(rnn: Tensor | tuple[Tensor, ...], log_probs: Tensor) -> StreamState:
    return {**_named(rnn), "log_probs": log_probs}


@torch.no_grad()
def step(model: LanguageModel, tokens: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
    """Read one token per stream: ``tokens`` (B,) long -> next-token log-probabilities (B, V), new state.

    The model must be in ``eval()`` mode (dropout off) for the result to be deterministic.
    """
    if tokens.dim() != 1 or tokens.shape[0] != state["h"].shape[1]:
        raise ValueError(f"step: expected tokens of shape ({state['h'].shape[1]},), got {tuple(tokens.shape)}")
    hidden, rnn = model.hidden_states(tokens.to(state["h"].device)[:, None], _recurrent(state))  # (B, 1, H)
    log_probs = model.log_probs(hidden[:, 0])  # (B, V)
    return log_probs, _pack(rnn, log_probs)


@torch.no_grad()
def score_ids(model: LanguageModel, ids: Sequence[int], state: StreamState | None = None
              ) -> tuple[float, StreamState]:
    """Total log-likelihood (nats) of the token ids of one stream, read in one call, and the state after them.

    With a fresh state (None, or :func:`initial_state` before any token) the first id has no prediction
    and is only read (as :meth:`~rnnkit.tasks.lm.LMRun.evaluate` counts); otherwise the state's
    ``log_probs`` predict it. So scoring a stream chunk by chunk, carrying the state, gives the same
    total as scoring it at once.
    """
    if state is None:
        state = initial_state(model, 1)
    if state["h"].shape[1] != 1:
        raise ValueError(f"score_ids scores one stream, got a state of {state['h'].shape[1]} streams")
    if not ids:
        return 0.0, state
    x = torch.tensor([list(ids)], dtype=torch.long, device=state["h"].device)  # (1, T)
    hidden, rnn = model.hidden_states(x, _recurrent(state))  # (1, T, H)
    log_probs = model.log_probs(hidden[0])  # (T, V): row t predicts ids[t + 1]
    total = log_probs[:-1].gather(1, x[0, 1:, None]).double().sum()
    if "log_probs" in state:
        total += state["log_probs"][0, x[0, 0]].double()
    return float(total), _pack(rnn, log_probs[-1:])


@torch.no_grad()
def score_many(model: LanguageModel, streams: Sequence[Sequence[int]], chunk: int = 4096) -> list[float]:
    """Total log-likelihood (nats) of each of several token-id streams, each read from a fresh state, in one
    padded batch: ``score_ids(model, ids)[0]`` for each, to rounding.

    The model reads left to right, so the padding after a short stream cannot change the predictions at its
    own positions. The next-token log-probabilities are computed only at the valid positions, ``chunk`` rows
    at a time (at most a ``(chunk, V)`` block in memory whatever the batch).
    """
    lengths = torch.tensor([len(s) for s in streams], dtype=torch.long)  # (B,)
    totals = torch.zeros(len(streams), dtype=torch.float64)
    width = int(lengths.max()) if len(streams) else 0
    if width < 2:  # no stream has a token to predict: a first token is only read
        return totals.tolist()
    device = _device(model)
    x = torch.zeros(len(streams), width, dtype=torch.long)  # (B, T): padded with id 0 after each stream
    for i, ids in enumerate(streams):
        x[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    hidden, _ = model.hidden_states(x.to(device))  # (B, T, H), from a zero state
    predicts = torch.arange(width - 1)[None] < lengths[:, None] - 1  # (B, T - 1): position t predicts t + 1
    rows = torch.arange(len(streams))[:, None].expand_as(predicts)[predicts]  # (N,) the stream of each
    h = hidden[:, :-1][predicts.to(device)]  # (N, H)
    targets = x[:, 1:][predicts].to(device)  # (N,)
    picked = [model.log_probs(h[a : a + chunk]).gather(1, targets[a : a + chunk, None])[:, 0]
              for a in range(0, h.shape[0], chunk)]
    return totals.index_add_(0, rows, torch.cat(picked).double().cpu()).tolist()


@torch.no_grad()
def sample(model: LanguageModel, state: StreamState, length: int, *, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, generator: torch.Generator | None = None) -> tuple[list[list[int]], StreamState]:
    """Continue every stream of ``state`` by ``length`` tokens drawn from its ``log_probs``.

    Temperature 0 is greedy. Returns the new ids of each stream and the state after reading them, so
    that sampling ``a`` then ``b`` tokens (carrying the state and the generator) equals sampling ``a + b``.
    """
    if "log_probs" not in state:
        raise ValueError("sample: the state has read no token yet; step or score a prompt first")
    out: list[Tensor] = []
    for _ in range(length):
        nxt = sample_next(state["log_probs"], temperature=temperature, top_k=top_k, top_p=top_p,
                          generator=generator)  # (B,)
        out.append(nxt)
        _, state = step(model, nxt, state)
    if not out:
        return [[] for _ in range(state["h"].shape[1])], state
    return torch.stack(out, dim=1).tolist(), state


def prompt_ids(tokenizer, prompt: str) -> list[int]:  # noqa: ANN001 (rnnkit.data.tokenize.Tokenizer)
    """The ids a generation reads before its first new token, as :meth:`~rnnkit.tasks.lm.LMRun.generate`
    reads them (a test pins the two together): the prompt's stream ids, without the ``<eos>`` the tokenizer
    puts after an unfinished line; an empty prompt starts a new line."""
    ids = tokenizer.encode_stream(prompt) if prompt else []
    if tokenizer.level != "char" and ids and not prompt.endswith("\n") and ids[-1] == tokenizer.vocab.eos_id:
        ids = ids[:-1]
    return ids or tokenizer.encode_stream("\n") or [tokenizer.vocab.eos_id]


def save_state(state: StreamState, path: str | Path) -> None:
    """Write a stream state to a safetensors file."""
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))


def load_state(path: str | Path, device: torch.device | str = "cpu") -> StreamState:
    """Read a stream state written by :func:`save_state` (no code is executed)."""
    try:
        state = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as e:  # missing file, not a safetensors file
        raise DataError(f"{path}: cannot read a stream state: {e}") from None
    parts = len(state) - ("log_probs" in state)
    if parts < 1 or set(state) - {"log_probs"} != set(_names(parts)):
        raise DataError(f"{path}: not a stream state: expected tensors h[, c, s2, ...][, log_probs], "
                        f"got {sorted(state)}")
    return state

