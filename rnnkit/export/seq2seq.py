"""Seq2seq graphs for ONNX export: an encoder graph and a decoder-step graph, for search outside PyTorch.

Shapes: N sentences or hypotheses, S source length, L layers, H decoder hidden size, M = 2 * encoder hidden
size (memory), P projected key size, V target vocabulary size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.export.onnx import Graph, torch_rnn
from rnnkit.models.seq2seq import DecoderState, EncoderState, Seq2Seq
from rnnkit.nn.attention import length_mask


def state_names(model: Seq2Seq) -> list[str]:
    """Decoder state tensors: ``h`` (L, N, H), ``c`` (LSTM), ``feed`` (N, H) with input feeding."""
    return ["h", *(["c"] if model.config.cell == "lstm" else []), *(["feed"] if model.input_feeding else [])]


def memory_names(model: Seq2Seq) -> list[str]:
    """What the decoder reads from the encoder: ``memory`` (N, S, M), and ``projected_keys`` (N, S, P)
    with attention (``mask`` (N, S) bool, True at real source positions, is built from the lengths)."""
    return ["memory", *(["projected_keys"] if model.attention is not None else [])]


def _split(model: Seq2Seq, state: tuple[Tensor, ...]) -> DecoderState:
    rnn = (state[0], state[1]) if model.config.cell == "lstm" else state[0]
    return DecoderState(rnn=rnn, feed=state[-1] if model.input_feeding else None)


def _join(state: DecoderState) -> tuple[Tensor, ...]:
    rnn = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
    return (*rnn, *(() if state.feed is None else (state.feed,)))


class Encoder(nn.Module):
    """``src`` (N, S), ``src_lengths`` (N,) -> memory tensors, then the decoder's initial state tensors."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model, self.rnn = model, torch_rnn(model.encoder)

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        packed = pack_padded_sequence(m.src_embedding(src), src_lengths, batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)  # final: (2*L, N, H_e), at each sentence's own ends
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (N, S, M), 0 on padding
        projected = None if m.attention is None else m.attention.project_keys(memory)
        mask = length_mask(src_lengths, src.shape[1])
        state = m.initial_state(EncoderState(memory=memory, mask=mask, projected_keys=projected, final=final))
        return (memory, *(() if projected is None else (projected,)), *_join(state))


class DecoderStep(nn.Module):
    """``prev`` (N,), state, memory tensors, ``mask`` -> ``log_probs`` (N, V), new state, ``attention`` (N, S).

    :meth:`~rnnkit.models.seq2seq.Seq2Seq.decode_step` itself: ``<pad>`` and ``<bos>`` score ``-inf``.
    """

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model  # one step without lengths: rnnkit's own layers export as they are
        self.n_state = len(state_names(model))

    def forward(self, prev: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        m, k = self.model, self.n_state
        state, memory, mask = _split(m, rest[:k]), rest[k], rest[-1]
        projected = rest[k + 1] if m.attention is not None else None
        enc = EncoderState(memory=memory, mask=mask, projected_keys=projected, final=None)
        log_probs, new, weights = m.decode_step(prev, state, enc)
        return (log_probs, *_join(new), *(() if weights is None else (weights,)))


def graphs(run: Any) -> list[Graph]:
    """The encoder and decoder-step graphs of a :class:`~rnnkit.tasks.seq2seq.Seq2SeqRun`."""
    model: Seq2Seq = run.model.cpu().eval()
    c, states, memories = model.config, state_names(model), memory_names(model)
    src, lengths = torch.randint(4, c.src_vocab_size, (2, 5)), torch.tensor([5, 3])
    with torch.no_grad():
        enc_out = Encoder(model)(src, lengths)
    axes: dict[str, dict[int, str]] = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"},
                                       "memory": {0: "batch", 1: "source"}, "projected_keys": {0: "batch", 1: "source"},
                                       "mask": {0: "batch", 1: "source"}, "prev": {0: "batch"},
                                       "log_probs": {0: "batch"}, "attention": {0: "batch", 1: "source"}}
    for n in states:
        axes[n] = axes[f"{n}_out"] = {0: "batch"} if n == "feed" else {1: "batch"}
    encoder = Graph("encoder", Encoder(model), (src, lengths), ["src", "src_lengths"], [*memories, *states], axes,
                    "source ids and lengths -> memory (0 on padding), projected keys, initial decoder state")
    k = len(memories)
    step_inputs = (torch.tensor([c.bos_id, c.bos_id]), *enc_out[k:], *enc_out[:k], length_mask(lengths, 5))
    outputs = ["log_probs", *(f"{n}_out" for n in states), *(["attention"] if model.attention is not None else [])]
    step = Graph("decoder_step", DecoderStep(model), step_inputs, ["prev", *states, *memories, "mask"], outputs, axes,
                 "previous token, state, memory, mask -> next-token log-probabilities, new state, attention")
    return [encoder, step]


def files(run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json fields, JSON files) of a seq2seq run: tokenizers, special ids, state and memory names."""
    m = run.model
    meta = {"tokenizers": "tokenizers.json", "level": run.tokenizers.source.level, "bos_id": m.bos_id,
            "eos_id": m.eos_id, "pad_id": m.pad_id, "state": state_names(m), "memory": memory_names(m)}
    return meta, {"tokenizers.json": run.tokenizers.to_dict()}
