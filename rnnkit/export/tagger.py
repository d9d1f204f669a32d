"""Tagger graph for ONNX export: sentences in, per-token tag scores out; the CRF's Viterbi stays outside.

Shapes: B sentences, T words, C characters per word, K tags.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.export.onnx import Graph, torch_rnn
from rnnkit.models.tagger import Tagger


def char_features(embedding: nn.Embedding, char_lstm: nn.RNNBase, chars: Tensor, char_lengths: Tensor,
                  real: Tensor) -> Tensor:
    """``[h_fwd(last char); h_bwd(first char)]`` of each word (the character encoder of
    :class:`~rnnkit.models.chars.WordCharInput`), read from the one-layer char BiLSTM's outputs (the exporter
    cannot export its final states alone); zeros at padded words (``real`` (B, T) False).
    ``chars`` (B, T, C), ``char_lengths`` (B, T) -> (B, T, 2*Hc)."""
    b, t, c = chars.shape
    n = char_lengths.reshape(b * t).clamp(min=1)  # (B*T,): padded words read one padding character
    packed = pack_padded_sequence(embedding(chars.reshape(b * t, c)), n, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(char_lstm(packed)[0], batch_first=True, total_length=c)  # (B*T, C, 2*Hc)
    hc = out.shape[2] // 2
    last = out.gather(1, (n - 1)[:, None, None].expand(-1, 1, hc)).squeeze(1)  # (B*T, Hc) forward, last char
    per_word = torch.cat([last, out[:, 0, hc:]], dim=1) * real.reshape(b * t, 1).to(out.dtype)
    return per_word.view(b, t, -1)  # (B, T, 2*Hc)


def word_char_input(model: nn.Module, char_lstm: nn.RNNBase | None, words: Tensor, chars: Tensor | None,
                    char_lengths: Tensor | None, real: Tensor) -> Tensor:
    """``x_t = [E_word[w_t]; c_t]`` of a :class:`~rnnkit.models.chars.WordCharInput` model (the tagger's and the
    classifier's input), with ``char_lstm`` the exportable copy of its character encoder (None without one).
    ``words`` (B, T) -> (B, T, E [+ 2*Hc])."""
    x = model.word_embedding(words)  # (B, T, E)
    if char_lstm is None:
        return x
    return torch.cat([x, char_features(model.char_embedding, char_lstm, chars, char_lengths, real)], dim=2)


class TaggerScores(nn.Module):
    """Emission scores of :class:`~rnnkit.models.tagger.Tagger`, with the lengths handled inside the graph.

    Inputs: ``words`` (B, T), ``lengths`` (B,), and with the character encoder ``chars`` (B, T, C) and
    ``char_lengths`` (B, T) (0 at padded words). Output: ``scores`` (B, T, K), meaningful at real tokens.
    Both BiLSTMs run packed, which exports to ONNX LSTMs with ``sequence_lens``: the backward direction
    starts at each sequence's own end, as in rnnkit.
    """

    def __init__(self, model: Tagger) -> None:
        super().__init__()
        self.model, self.lstm = model, torch_rnn(model.lstm)
        self.char_lstm = torch_rnn(model.char_lstm) if model.char_lstm is not None else None

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None,
                char_lengths: Tensor | None = None) -> Tensor:
        real = torch.arange(words.shape[1], device=words.device)[None, :] < lengths[:, None]  # (B, T)
        x = word_char_input(self.model, self.char_lstm, words, chars, char_lengths, real)  # (B, T, E [+ 2*Hc])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=words.shape[1])  # (B, T, 2*H)
        return self.model.output(h)  # (B, T, K)


def word_char_inputs(c: Any) -> tuple[tuple[Tensor, ...], list[str], dict[str, dict[int, str]]]:
    """Example inputs of a word (+ character) graph for the config ``c`` of a
    :class:`~rnnkit.models.chars.WordCharInput` model: (tensors, names, dynamic axes); two sequences of
    different lengths, so that the exported graph takes variable lengths."""
    words, lengths = torch.randint(2, c.num_words, (2, 4)), torch.tensor([4, 2])
    inputs, names = (words, lengths), ["words", "lengths"]
    axes = {"words": {0: "batch", 1: "time"}, "lengths": {0: "batch"}}
    if c.use_chars:
        char_lengths = torch.tensor([[3, 1, 2, 3], [2, 3, 0, 0]])
        chars = torch.randint(2, c.num_chars, (2, 4, 3)) * (torch.arange(3) < char_lengths[..., None])
        inputs, names = (*inputs, chars, char_lengths), [*names, "chars", "char_lengths"]
        axes |= {"chars": {0: "batch", 1: "time", 2: "chars"}, "char_lengths": {0: "batch", 1: "time"}}
    return inputs, names, axes


def graphs(run: Any) -> list[Graph]:
    """The scoring graph of a :class:`~rnnkit.tasks.tag.TagRun`."""
    model: Tagger = run.model.cpu().eval()
    inputs, names, axes = word_char_inputs(model.config)
    axes["scores"] = {0: "batch", 1: "time"}
    return [Graph("tagger", TaggerScores(model), inputs, names, ["scores"], axes,
                  "per-token tag scores; decode with argmax, or Viterbi over crf.json with the CRF head")]


def crf_scores(model: Tagger) -> dict[str, Any] | None:
    """The CRF's start, transition and end scores, disallowed entries ``-inf`` (JSON ``-Infinity``)."""
    if model.crf is None:
        return None
    start, trans, end = model.crf._scores(float("-inf"))
    return {"start": start.tolist(), "transitions": trans.tolist(), "end": end.tolist()}


def files(run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json fields, JSON files) of a tagger run: vocabularies and, with the CRF head, its scores."""
    crf = crf_scores(run.model)
    meta = {"vocabs": "vocabs.json", "labels": list(run.vocabs.tags.itos), "crf": "crf.json" if crf else None,
            "char_pad_id": 0}
    out = {"vocabs.json": run.vocabs.to_dict()}
    if crf:
        out["crf.json"] = crf
    return meta, out
