"""Language-model graphs for ONNX export: a step graph (streaming) and a whole-sequence graph (scoring).

Shapes: B batch, T time, L layers, H hidden size, V vocabulary size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.export.onnx import Graph, torch_rnn
from rnnkit.models.lm import LanguageModel


def state_names(model: LanguageModel) -> list[str]:
    """Names of the recurrent state tensors, each (L, B, H): ``h`` (and ``c`` for an LSTM)."""
    return ["h", "c"] if model.config.model == "lstm" else ["h"]


class LMStep(nn.Module):
    """One token per row: ``ids`` (B,) and the state tensors (L, B, H) -> log-probabilities (B, V), new state."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model, self.rnn = model, torch_rnn(model.rnn)

    def forward(self, ids: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        out, new = self.rnn(self.model.embedding(ids[:, None]), state if len(state) == 2 else state[0])  # (B, 1, H)
        new = new if isinstance(new, tuple) else (new,)
        return (self.model.log_probs(out[:, 0]), *new)


class LMSequence(nn.Module):
    """Scores of right-padded sequences: ``ids`` (B, T), ``lengths`` (B,) -> ``token_log_probs`` (B, T).

    ``token_log_probs[b, t] = log p(ids[b, t] | ids[b, :t])`` for ``1 <= t < lengths[b]``; 0 at ``t = 0`` (no
    context: the first token is only read) and at padding. The recurrent stack runs forward in time, so
    right padding never reaches a real position; it is masked out of the result.
    """

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model, self.rnn = model, torch_rnn(model.rnn)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(self.model.embedding(ids))  # (B, T, H)
        log_probs = self.model.log_probs(out[:, :-1])  # (B, T-1, V): row t predicts ids[:, t + 1]
        picked = log_probs.gather(2, ids[:, 1:, None]).squeeze(2)  # (B, T-1)
        picked = F.pad(picked, (1, 0))  # (B, T): nothing predicts the first token
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        return torch.where(real, picked, torch.zeros_like(picked))


def graphs(run: Any) -> list[Graph]:
    """The step and sequence graphs of an :class:`~rnnkit.tasks.lm.LMRun`."""
    model: LanguageModel = run.model.cpu().eval()
    c, names = model.config, state_names(model)
    state = tuple(torch.zeros(c.layers, 2, c.hidden) for _ in names)
    batch = {"ids": {0: "batch"}, **{n: {1: "batch"} for n in names}, "log_probs": {0: "batch"},
             **{f"{n}_out": {1: "batch"} for n in names}}
    step = Graph("lm_step", LMStep(model), (torch.tensor([1, 2]), *state), ["ids", *names],
                 ["log_probs", *(f"{n}_out" for n in names)], batch,
                 "one token per row: next-token log-probabilities and the new state")
    ids = torch.randint(c.vocab_size, (2, 5))
    seq = Graph("lm_sequence", LMSequence(model), (ids, torch.tensor([5, 3])), ["ids", "lengths"],
                ["token_log_probs"],
                {"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "token_log_probs": {0: "batch", 1: "time"}},
                "log p(ids[t] | ids[:t]) per position (0 at t = 0 and at padding)")
    return [step, seq]


def files(run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json fields, JSON files) of an LM run: the tokenizer and the state layout."""
    c = run.model.config
    meta = {"tokenizer": "tokenizer.json", "level": run.tokenizer.level, "vocab_size": c.vocab_size,
            "state": {"names": state_names(run.model), "shape": [c.layers, "batch", c.hidden]}}
    return meta, {"tokenizer.json": run.tokenizer.to_dict()}
