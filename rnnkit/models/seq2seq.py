r"""Attention encoder-decoder for translation: bidirectional recurrent encoder, attentive decoder.

Shapes: B batch, S source steps, T target steps, E embedding size, H_e encoder hidden size per
direction, H decoder hidden size, L layers, V_s / V_t vocabulary sizes.

Encoder: source embeddings -> dropout -> a bidirectional L-layer recurrent layer of any registered cell
(:func:`rnnkit.nn.recurrent_layer`, read with the source lengths) giving memory vectors
:math:`m_j = [\overrightarrow{h}_j; \overleftarrow{h}_j]` of size :math:`2 H_e` (zero on padding).
The decoder is an L-layer layer of the same cell.

Bridge: every layer's final forward and backward states, concatenated, give the decoder's initial state

.. math::  s_0 = \tanh(W_b [\overrightarrow{h}^{(1)}_{n}; \overleftarrow{h}^{(1)}_{1}; \dots;
           \overrightarrow{h}^{(L)}_{n}; \overleftarrow{h}^{(L)}_{1}] + b_b)

(one linear map to all L decoder layers). A state of several tensors (LSTM: ``(h, c)``) is bridged part by
part, each with its own map: ``bridge`` for part 0, ``bridge_cell`` for part 1 (LSTM's cell state),
``bridge_2``, ``bridge_3``, ... after that.

Decoder, at step t with the previous target token :math:`y_{t-1}` (``<bos>`` first) and, with
Luong-style input feeding, the previous attentional vector :math:`\tilde h_{t-1}` (zeros first):

.. math::

    h_t &= \mathrm{RNN}([\mathrm{emb}(y_{t-1}); \tilde h_{t-1}], h_{t-1}) \\
    c_t, a_t &= \mathrm{attention}(q = h_t,\ \text{keys} = \text{values} = m,\ \text{mask} = \text{source}) \\
    \tilde h_t &= \tanh(W_c [c_t; h_t]) \\
    p(y_t \mid y_{<t}, x) &= \mathrm{softmax}(W_o\, \mathrm{dropout}(\tilde h_t) + b_o)

``attention="none"`` is the classic encoder-decoder for comparison: no context and no input feeding,
:math:`\tilde h_t = \tanh(W_c h_t)`; the source reaches the decoder only through the bridge.
``tie_weights`` shares :math:`W_o` with the target embedding (needs E == H); ``share_embeddings`` uses
one embedding for source and target (the caller must give both sides one vocabulary).

Incremental decoding (used by :mod:`rnnkit.decode.search`)::

    enc = model.encode(src, src_lengths)          # once per batch; attention keys projected here
    state = model.initial_state(enc)
    log_probs, state, weights = model.decode_step(prev_tokens, state, enc)   # one target step
    enc, state = model.reorder(enc, index), model.reorder(state, index)     # select / repeat rows

Example::

    >>> config = Seq2SeqConfig(src_vocab_size=50, tgt_vocab_size=60, pad_id=0, bos_id=2, eos_id=3, cell="lstm",
    ...                        attention="additive", emb=128, enc_hidden=128, hidden=256, layers=1, dropout=0.2,
    ...                        share_embeddings=False, tie_weights=False)
    >>> model = Seq2Seq(config)
    >>> logits = model(src, src_lengths, tgt_in)  # (B, T, 60)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.nn import recurrent_layer, resolve_cell
from rnnkit.nn.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    ScaledDotAttention,
    length_mask,
)

__all__ = ["ATTENTION_TYPES", "DecoderState", "EncoderState", "Seq2Seq", "Seq2SeqConfig"]

ATTENTION_TYPES = ("additive", "dot", "general", "scaled", "none")

RNNState = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Architecture of a :class:`Seq2Seq` model; JSON-serialisable with :meth:`to_dict`/:meth:`from_dict`.

    No field has a default: the one default of each setting is the task's
    (:class:`rnnkit.tasks.seq2seq.Seq2SeqTaskConfig`, shown by ``rnnkit seq2seq train --help``).

    Args:
        src_vocab_size: V_s, source vocabulary size.
        tgt_vocab_size: V_t, target vocabulary size.
        pad_id: padding id of the target vocabulary (ignored by the loss, never generated).
        bos_id: begin-of-sentence id of the target vocabulary (first decoder input, never generated).
        eos_id: end-of-sentence id of the target vocabulary (ends a hypothesis).
        cell: recurrent cell of the encoder and the decoder: a registered name (:func:`rnnkit.nn.cell_names`)
            or ``package.module:ClassName``.
        attention: one of :data:`ATTENTION_TYPES`; ``"none"`` is the classic encoder-decoder.
        emb: E, embedding size of both sides.
        enc_hidden: H_e, encoder hidden size per direction (memory vectors have ``2 * enc_hidden``).
        hidden: H, decoder hidden size (and attentional vector size).
        layers: L, recurrent layers of the encoder and of the decoder.
        dropout: dropout on embeddings, between recurrent layers and before the output layer.
        share_embeddings: one embedding matrix for source and target (needs V_s == V_t).
        tie_weights: the output layer uses the target embedding matrix (needs E == H).

    ``dot`` and ``scaled`` attention compare decoder states with memory vectors directly, so they need
    ``hidden == 2 * enc_hidden`` (the task's defaults satisfy it).

    Raises:
        ConfigError: a value is out of range or two values do not fit together (the message names them).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    cell: str
    attention: str
    emb: int
    enc_hidden: int
    hidden: int
    layers: int
    dropout: float
    share_embeddings: bool
    tie_weights: bool

    #: Fields added after runs were first saved, with the value every older run had (a saved config that
    #: lacks one of them means that value). None so far.
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "emb", "enc_hidden", "hidden", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.tgt_vocab_size:
                raise ConfigError(f"{name} must be an id in [0, {self.tgt_vocab_size}), got {value!r}")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ConfigError(
                f"pad_id, bos_id and eos_id must differ, got {self.pad_id}, {self.bos_id}, {self.eos_id}"
            )
        try:
            resolve_cell(self.cell)
        except ValueError as e:
            raise ConfigError(f"cell: {e}") from None
        if self.attention not in ATTENTION_TYPES:
            choices = ", ".join(ATTENTION_TYPES)
            raise ConfigError(f"attention must be one of {choices}, got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                f"share_embeddings needs one vocabulary for both sides, got src_vocab_size="
                f"{self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        if self.tie_weights and self.emb != self.hidden:
            raise ConfigError(f"tie_weights needs emb == hidden, got emb={self.emb}, hidden={self.hidden}")
        if self.attention in ("dot", "scaled") and self.hidden != 2 * self.enc_hidden:
            raise ConfigError(
                f"attention={self.attention} needs hidden == 2 * enc_hidden (decoder states are compared "
                f"with bidirectional encoder states), got hidden={self.hidden}, enc_hidden={self.enc_hidden}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seq2SeqConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown Seq2SeqConfig field(s): {', '.join(unknown)}")
        return cls(**{**cls.ADDED_FIELDS, **data})


def _state_parts(state: RNNState) -> tuple[Tensor, ...]:
    """The tensors of a recurrent state: one, or each of a tuple."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _select_rnn_state(state: RNNState, index: Tensor) -> RNNState:
    """Rows ``index`` of a recurrent state laid out ``(L * D, N, H)``."""
    if isinstance(state, tuple):
        return tuple(part.index_select(1, index) for part in state)  # type: ignore[return-value]
    return state.index_select(1, index)


@dataclass
class EncoderState:
    """What the decoder reads from the source, computed once by :meth:`Seq2Seq.encode`.

    Attributes:
        memory: ``(N, S, 2*H_e)`` encoder outputs (attention keys and values), zero on padding.
        mask: ``(N, S)`` bool, True at real source positions.
        projected_keys: ``(N, S, P)`` attention key projection, or None without attention.
        final: encoder final state, ``(2*L, N, S)`` per state tensor (LSTM: a pair (h, c), S = H_e), input
            of the bridge.
    """

    memory: Tensor
    mask: Tensor
    projected_keys: Tensor | None
    final: RNNState

    def index_select(self, index: Tensor) -> EncoderState:
        """The rows ``index`` (N' long ids): reorders, selects or repeats sentences."""
        projected = self.projected_keys
        return EncoderState(
            memory=self.memory.index_select(0, index),
            mask=self.mask.index_select(0, index),
            projected_keys=None if projected is None else projected.index_select(0, index),
            final=_select_rnn_state(self.final, index),
        )


@dataclass
class DecoderState:
    """Decoder state between steps.

    Attributes:
        rnn: ``(L, N, S)`` per recurrent state tensor (LSTM: a pair (h, c), S = H).
        feed: ``(N, H)`` previous attentional vector (input feeding), or None without attention.
    """

    rnn: RNNState
    feed: Tensor | None

    def index_select(self, index: Tensor) -> DecoderState:
        """The rows ``index`` (N' long ids): reorders, selects or repeats hypotheses."""
        return DecoderState(
            rnn=_select_rnn_state(self.rnn, index),
            feed=None if self.feed is None else self.feed.index_select(0, index),
        )


class Seq2Seq(nn.Module):
    """Bidirectional-encoder, attentive-decoder translation model (see the module docstring).

    Args:
        config: the architecture, :class:`Seq2SeqConfig`.

    Shape:
        - src: ``(B, S)`` long source ids, padded after each sentence's end (any pad value).
        - src_lengths: ``(B,)`` long, every length in [1, S].
        - tgt_in: ``(B, T)`` long, ``<bos> y_1 ... y_n`` then padding.
        - tgt_out: ``(B, T)`` long, ``y_1 ... y_n <eos>`` then ``pad_id``.
        - output of ``forward``: ``(B, T, V_t)`` logits.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id
        inner_dropout = c.dropout if c.layers > 1 else 0.0
        memory_size = 2 * c.enc_hidden

        self.src_embedding = nn.Embedding(c.src_vocab_size, c.emb)
        if c.share_embeddings:
            self.tgt_embedding = self.src_embedding
        else:
            self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.emb)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = recurrent_layer(c.cell, c.emb, c.enc_hidden, c.layers, dropout=inner_dropout,
                                       bidirectional=True)
        self.input_feeding = c.attention != "none"
        dec_input = c.emb + (c.hidden if self.input_feeding else 0)
        with torch.device("meta"):  # the decoder's state layout, without drawing from the RNG
            dec_state = recurrent_layer(c.cell, dec_input, c.hidden, c.layers).init_state(1)
        # one map per state tensor: (2*L, N, S_enc) -> (L, N, S_dec); the first two keep the LSTM-era names
        self.bridge_names: list[str] = []
        for k, (enc, dec) in enumerate(zip(_state_parts(self.encoder.init_state(1, device="meta")),
                                           _state_parts(dec_state))):
            name = ("bridge", "bridge_cell")[k] if k < 2 else f"bridge_{k}"
            self.add_module(name, nn.Linear(enc.shape[0] * enc.shape[2], dec.shape[0] * dec.shape[2]))
            self.bridge_names.append(name)
        self.decoder = recurrent_layer(c.cell, dec_input, c.hidden, c.layers, dropout=inner_dropout)
        self.attention: nn.Module | None = {
            "additive": lambda: AdditiveAttention(c.hidden, memory_size, c.hidden),
            "dot": DotAttention,
            "general": lambda: GeneralAttention(c.hidden, memory_size),
            "scaled": ScaledDotAttention,
            "none": lambda: None,
        }[c.attention]()
        combine_in = c.hidden + (memory_size if self.attention is not None else 0)
        self.combine = nn.Linear(combine_in, c.hidden, bias=False)
        self.output = nn.Linear(c.hidden, c.tgt_vocab_size)
        if c.tie_weights:
            self.output.weight = self.tgt_embedding.weight
        # never generated: masked in decode_step (not in forward, so that label smoothing stays finite)
        banned = torch.zeros(c.tgt_vocab_size, dtype=torch.bool)
        banned[[c.pad_id, c.bos_id]] = True
        self.register_buffer("banned", banned, persistent=False)

    # ----------------------------------------------------------------------------------------------
    # encoder

    def _check_source(self, src: Tensor, src_lengths: Tensor) -> None:
        if src.dim() != 2:
            raise ValueError(f"Seq2Seq: expected src of shape (B, S), got {tuple(src.shape)}")
        if src_lengths.shape != (src.shape[0],):
            raise ValueError(
                f"Seq2Seq: expected src_lengths of shape ({src.shape[0]},), got {tuple(src_lengths.shape)}"
            )

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderState:
        """Read the source once: memory vectors, mask, projected attention keys, final states.

        Args:
            src: ``(B, S)`` source ids; positions at or after a sentence's length are ignored.
            src_lengths: ``(B,)`` lengths in [1, S], in any order.

        Returns:
            :class:`EncoderState` with N = B rows.
        """
        self._check_source(src, src_lengths)
        x = self.dropout(self.src_embedding(src))  # (B, S, E)
        memory, final = self.encoder(x, lengths=src_lengths)  # (B, S, 2*H_e), (2*L, B, H_e)
        mask = length_mask(src_lengths.to(memory.device), src.shape[1])  # (B, S)
        projected = None if self.attention is None else self.attention.project_keys(memory)
        return EncoderState(memory=memory, mask=mask, projected_keys=projected, final=final)

    def _bridge(self, final: Tensor, linear: nn.Linear) -> Tensor:
        """``(2*L, N, S_enc)`` encoder final states -> ``(L, N, S_dec)`` decoder initial states."""
        n = final.shape[1]
        flat = final.transpose(0, 1).reshape(n, -1)  # (N, 2*L*S_enc): layer-major, forward then backward
        init = torch.tanh(linear(flat)).view(n, self.config.layers, -1)  # (N, L, S_dec)
        return init.transpose(0, 1).contiguous()  # (L, N, S_dec)

    def initial_state(self, enc: EncoderState) -> DecoderState:
        """Decoder state before the first target step: bridged encoder states, zero input feed."""
        parts = [self._bridge(part, getattr(self, name))
                 for part, name in zip(_state_parts(enc.final), self.bridge_names)]
        rnn: RNNState = parts[0] if isinstance(enc.final, Tensor) else tuple(parts)
        feed = None
        if self.input_feeding:
            feed = enc.memory.new_zeros(enc.memory.shape[0], self.config.hidden)  # (N, H)
        return DecoderState(rnn=rnn, feed=feed)

    # ----------------------------------------------------------------------------------------------
    # decoder

    def _advance(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderState
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step before the output layer: ``(N,)`` tokens -> attentional vectors ``(N, H)``."""
        x = self.dropout(self.tgt_embedding(prev_tokens))  # (N, E)
        if state.feed is not None:
            x = torch.cat([x, state.feed], dim=-1)  # (N, E + H)
        out, rnn = self.decoder(x.unsqueeze(1), state.rnn)  # (N, 1, H)
        h = out.squeeze(1)  # (N, H)
        weights = None
        if self.attention is None:
            attentional = torch.tanh(self.combine(h))  # (N, H)
        else:
            context, weights = self.attention(
                h, enc.memory, mask=enc.mask, projected_keys=enc.projected_keys
            )  # (N, 2*H_e), (N, S)
            attentional = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))  # (N, H)
        feed = attentional if self.input_feeding else None
        return attentional, DecoderState(rnn=rnn, feed=feed), weights

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderState
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One target step for N rows (sentences or hypotheses).

        Args:
            prev_tokens: ``(N,)`` previous target ids (``bos_id`` at the first step).
            state: :class:`DecoderState` with N rows.
            enc: :class:`EncoderState` with the same N rows.

        Returns:
            ``(log_probs, new_state, weights)``: ``(N, V_t)`` log-probabilities of the next token
            (renormalised with ``pad_id`` and ``bos_id`` at ``-inf``: they are never generated), the new
            state, and the ``(N, S)`` attention weights (None with ``attention="none"``).
        """
        attentional, state, weights = self._advance(prev_tokens, state, enc)
        logits = self.output(self.dropout(attentional))  # (N, V)
        log_probs = torch.log_softmax(logits.masked_fill(self.banned, float("-inf")), dim=-1)
        return log_probs, state, weights

    def reorder(self, state: EncoderState | DecoderState, index: Tensor) -> EncoderState | DecoderState:
        """Rows ``index`` of an encoder or decoder state (beam search reorders and repeats hypotheses)."""
        return state.index_select(index)

    # ----------------------------------------------------------------------------------------------
    # teacher forcing

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits of every target step.

        Args:
            src: ``(B, S)`` source ids.
            src_lengths: ``(B,)`` source lengths.
            tgt_in: ``(B, T)`` decoder inputs, ``<bos> y_1 ... y_n`` then padding.

        Returns:
            ``(B, T, V_t)`` logits; rows at padded target steps are computed but meaningless.
        """
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(
                f"Seq2Seq: expected tgt_in of shape ({src.shape[0]}, T), got {tuple(tgt_in.shape)}"
            )
        enc = self.encode(src, src_lengths)
        state = self.initial_state(enc)
        steps = []
        for t in range(tgt_in.shape[1]):  # input feeding makes each step depend on the previous one
            attentional, state, _ = self._advance(tgt_in[:, t], state, enc)
            steps.append(attentional)
        hidden = torch.stack(steps, dim=1)  # (B, T, H)
        return self.output(self.dropout(hidden))  # (B, T, V)

    def loss(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor,
        *,
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        r"""Summed token loss over non-padding targets, and the number of those targets.

        .. math:: \ell = -\sum_{t:\,y_t \ne \mathrm{pad}} \big[(1-\epsilon) \log p(y_t) +
                  \tfrac{\epsilon}{V} \textstyle\sum_v \log p(v)\big]

        With ``label_smoothing`` :math:`\epsilon = 0` it is the summed negative log-likelihood (use that
        for validation loss and perplexity).

        Args:
            src, src_lengths, tgt_in: as :meth:`forward`.
            tgt_out: ``(B, T)`` targets, ``pad_id`` where nothing is predicted.
            label_smoothing: :math:`\epsilon` in [0, 1).

        Returns:
            ``(loss_sum, n_tokens)``: scalar float tensor and scalar long tensor.
        """
        if tgt_out.shape != tgt_in.shape:
            raise ValueError(
                f"Seq2Seq: expected tgt_out of shape {tuple(tgt_in.shape)} like tgt_in, "
                f"got {tuple(tgt_out.shape)}"
            )
        logits = self(src, src_lengths, tgt_in)  # (B, T, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),  # (B*T, V)
            tgt_out.reshape(-1),
            ignore_index=self.pad_id,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        return loss, (tgt_out != self.pad_id).sum()
