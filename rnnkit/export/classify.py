"""Classifier graph for ONNX export: token ids and lengths in, class probabilities out.

Shapes: B texts, T tokens, C characters per token, K classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.export.onnx import Graph, torch_rnn
from rnnkit.export.tagger import word_char_input, word_char_inputs
from rnnkit.models.classifier import Classifier, pool


class ClassifierProbabilities(nn.Module):
    """Class probabilities of :class:`~rnnkit.models.classifier.Classifier` (softmax, or a sigmoid per label
    for multi-label runs), with the lengths handled inside the graph.

    Inputs: ``words`` (B, T), ``lengths`` (B,), and with the character encoder ``chars`` (B, T, C) and
    ``char_lengths`` (B, T) (0 at padded words). Output: ``probabilities`` (B, K). The recurrent stack runs
    packed (ONNX recurrent ops with ``sequence_lens``), and the pooling masks padded steps as rnnkit does.
    """

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model, self.rnn = model, torch_rnn(model.rnn)
        self.char_lstm = torch_rnn(model.char_lstm) if model.char_lstm is not None else None

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None,
                char_lengths: Tensor | None = None) -> Tensor:
        c = self.model.config
        mask = torch.arange(words.shape[1], device=words.device)[None, :] < lengths[:, None]  # (B, T)
        x = word_char_input(self.model, self.char_lstm, words, chars, char_lengths, mask)  # (B, T, E [+ 2*Hc])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=words.shape[1])  # (B, T, D*H)
        if self.model.attention is not None:
            pooled, _ = self.model.attention(h, mask)
        else:
            pooled = pool(h, lengths, mask, c.pooling, c.num_directions)
        logits = self.model.output(pooled)  # (B, K)
        return torch.sigmoid(logits) if c.multi_label else torch.softmax(logits, dim=1)


def graphs(run: Any) -> list[Graph]:
    """The probability graph of a :class:`~rnnkit.tasks.classify.ClassifyRun`."""
    model: Classifier = run.model.cpu().eval()
    inputs, names, axes = word_char_inputs(model.config)
    axes["probabilities"] = {0: "batch"}
    return [Graph("classifier", ClassifierProbabilities(model), inputs, names, ["probabilities"], axes,
                  "class probabilities (multi-label: one sigmoid per label, compare with the threshold)")]


def files(run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json fields, JSON files) of a classifier run: tokenizer, labels, threshold."""
    meta = {"vocabs": "vocabs.json", "labels": list(run.labels), "multi_label": run.config.multi_label,
            "threshold": run.threshold, "char_pad_id": 0}
    return meta, {"vocabs.json": run.vocabs.to_dict()}
