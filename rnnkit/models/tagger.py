"""Sequence tagger: word (+ character BiLSTM) embeddings -> stacked BiLSTM -> softmax or CRF.

For each token ``t`` of a sentence::

    c_t = [h_fwd(last char); h_bwd(first char)]       char BiLSTM over the word's characters (optional)
    x_t = dropout([E_word[w_t]; c_t])                 (B, T, E + 2*Hc)
    h_t = BiLSTM^L(x)_t                               (B, T, 2*H), rnnkit LSTM with lengths
    s_t = W dropout(h_t) + b                          (B, T, K) emission scores

and the head is either a per-token softmax (loss: cross-entropy summed over real tokens; prediction:
argmax) or a linear-chain CRF (:class:`rnnkit.nn.crf.CRF`; loss: negative log-likelihood summed over
sentences; prediction: Viterbi). Padding never influences real positions: the recurrent layers get
the lengths, and only real words go through the character encoder.

Both encoders are bidirectional layers of any registered cell (``config.cell`` and ``config.char_cell``,
:func:`rnnkit.nn.recurrent_layer`); LSTM, as written above, is the default. For another cell, ``h_fwd`` and
``h_bwd`` are the cell's outputs at those characters.

Shapes: B sentences, T words, C characters per word, E word embedding, Hc char hidden size per
direction, H sentence hidden size per direction, K tags. Batches are right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.batching import pad_batch
from rnnkit.models.chars import WordCharBatch, WordCharInput, check_input_fields
from rnnkit.nn.crf import CRF
from rnnkit.nn.registry import recurrent_layer, resolve_cell

__all__ = ["Tagger", "TaggerBatch", "TaggerConfig", "collate_tagged"]


@dataclass(frozen=True)
class TaggerConfig:
    """Architecture of a :class:`Tagger` (stored in checkpoints; :meth:`to_dict` is JSON-ready).

    No field has a default: the one default of each setting is the task's
    (:class:`rnnkit.tasks.tag.TagConfig`, shown by ``rnnkit tag train --help``), which builds this config.

    Args:
        num_words: word vocabulary size (including specials).
        num_tags: number of tags ``K``.
        num_chars: character vocabulary size; required (> 0) when ``use_chars``.
        emb: word embedding size ``E``.
        char_emb: character embedding size.
        char_hidden: character encoder hidden size per direction ``Hc``.
        hidden: sentence encoder hidden size per direction ``H``.
        layers: number of stacked sentence encoder layers.
        dropout: dropout on the embeddings, between recurrent layers and before the output layer.
        crf: CRF head instead of a per-token softmax.
        use_chars: add the character encoder.
        word_pad_id: padding id of words (its embedding row stays zero).
        char_pad_id: padding id of characters.
        cell: recurrent cell of the sentence encoder: a registered name (:func:`rnnkit.nn.cell_names`) or
            ``package.module:ClassName``.
        char_cell: recurrent cell of the character encoder, likewise.
    """

    #: Fields added after runs were first saved, with the value every older run had (a saved config that
    #: lacks one of them means that value).
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"cell": "lstm", "char_cell": "lstm"}

    num_words: int
    num_tags: int
    num_chars: int
    emb: int
    char_emb: int
    char_hidden: int
    hidden: int
    layers: int
    dropout: float
    crf: bool
    use_chars: bool
    word_pad_id: int
    char_pad_id: int
    cell: str
    char_cell: str

    def __post_init__(self) -> None:
        check_input_fields(self)
        for name in ("num_tags", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("cell", "char_cell"):
            try:
                resolve_cell(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TaggerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TaggerConfig fields: {', '.join(unknown)}")
        return cls(**{**cls.ADDED_FIELDS, **d})


@dataclass
class TaggerBatch(WordCharBatch):
    """A padded batch of sentences (see :func:`collate_tagged`): the fields of
    :class:`~rnnkit.models.chars.WordCharBatch` (T words per sentence) and

    Attributes:
        tags: ``(B, T)`` gold tag ids (any value at padded positions), or None.
    """

    tags: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def collate_tagged(
    words: Sequence[Sequence[int]],
    chars: Sequence[Sequence[Sequence[int]]] | None = None,
    tags: Sequence[Sequence[int]] | None = None,
    *,
    word_pad_id: int = 0,
    char_pad_id: int = 0,
) -> TaggerBatch:
    """Pad encoded sentences into a :class:`TaggerBatch`.

    Args:
        words: ``B`` sentences of word ids (each non-empty).
        chars: per sentence, per word, the character ids (each word non-empty); None to skip.
        tags: ``B`` sentences of tag ids, aligned with ``words``; None for prediction.
        word_pad_id: padding word id. char_pad_id: padding character id. Padded tags are 0.

    Returns:
        The batch; ``lengths`` and ``char_lengths`` stay on the CPU.
    """
    padded, lengths = pad_batch(words, word_pad_id)
    if int(lengths.min()) < 1:
        raise ValueError("every sentence needs at least one word")
    batch = TaggerBatch(padded, lengths)
    b, t = padded.shape
    if chars is not None:
        if [len(s) for s in chars] != lengths.tolist():
            raise ValueError("chars: expected one list of character ids per word of each sentence")
        flat = [list(w) for sent in chars for w in sent]  # every real word, row-major
        for k, w in enumerate(flat):
            if len(w) == 0:
                i = int(torch.searchsorted(lengths.cumsum(0), k, right=True))
                j = k - int(lengths[:i].sum())
                raise ValueError(f"chars: word {j} of sentence {i} has no characters")
        flat_len = torch.tensor([len(w) for w in flat], dtype=torch.long)  # (N,)
        c = int(flat_len.max())
        flat_ids = torch.tensor([w + [char_pad_id] * (c - len(w)) for w in flat], dtype=torch.long)  # (N, C)
        real = torch.arange(t)[None, :] < lengths[:, None]  # (B, T), row-major like ``flat``
        char_ids = torch.full((b, t, c), char_pad_id, dtype=torch.long)
        char_ids[real] = flat_ids
        char_lengths = torch.zeros(b, t, dtype=torch.long)
        char_lengths[real] = flat_len
        batch.chars, batch.char_lengths = char_ids, char_lengths
    if tags is not None:
        tag_ids, tag_lengths = pad_batch(tags, 0)
        if not torch.equal(tag_lengths, lengths):
            raise ValueError("tags: expected one tag per word of each sentence")
        batch.tags = tag_ids
    return batch


class Tagger(WordCharInput):
    """BiLSTM (+ char BiLSTM) tagger with a softmax or CRF head (equations in the module docstring); both
    encoders take any registered cell (``config.cell``, ``config.char_cell``), LSTM by default.

    Args:
        config: the architecture.
        crf_constraints: optional ``(allowed_transitions, allowed_start, allowed_end)`` for the
            CRF (:func:`rnnkit.nn.crf.bio_constraints`); they are buffers, so saved in the state dict.

    Example::

        >>> model = Tagger(TaggerConfig(num_words=100, num_tags=17, num_chars=60, emb=100, char_emb=32,
        ...                             char_hidden=64, hidden=192, layers=1, dropout=0.33, crf=False,
        ...                             use_chars=True, word_pad_id=0, char_pad_id=0, cell="lstm",
        ...                             char_cell="lstm"))
        >>> batch = collate_tagged([[5, 6, 7]], [[[3, 4], [5], [6, 7, 8]]], [[1, 2, 3]])
        >>> loss_sum, n = model.loss(batch)       # n == 3
        >>> model.eval(); model.predict(batch)    # [[tag, tag, tag]]
    """

    def __init__(self, config: TaggerConfig, *, crf_constraints: tuple[Tensor, Tensor, Tensor] | None = None):
        super().__init__()
        self.config = c = config
        input_size = self._build_input(c)
        self.dropout = nn.Dropout(c.dropout)
        self.lstm = recurrent_layer(c.cell, input_size, c.hidden, c.layers, bidirectional=True,
                                    dropout=c.dropout if c.layers > 1 else 0.0)
        self.output = nn.Linear(2 * c.hidden, c.num_tags)
        if c.crf:
            trans, start, end = crf_constraints if crf_constraints is not None else (None, None, None)
            self.crf = CRF(c.num_tags, allowed_transitions=trans, allowed_start=start, allowed_end=end)
        else:
            if crf_constraints is not None:
                raise ValueError("crf_constraints need config.crf=True")
            self.crf = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_input()

    @torch.no_grad()
    def set_word_vectors(self, vectors: Tensor, found: Tensor | None = None) -> int:
        """Copy pre-trained vectors (from :func:`rnnkit.data.vectors.load_word_vectors`) into the word embedding.

        Only rows with ``found`` True are copied (all rows if None); the padding row stays zero.

        Returns:
            The number of rows copied.
        """
        expected = (self.config.num_words, self.config.emb)
        if tuple(vectors.shape) != expected:
            raise ValueError(f"vectors: expected shape {expected} (num_words, emb), got {tuple(vectors.shape)}")
        rows = torch.ones(expected[0], dtype=torch.bool) if found is None else found.clone().bool()
        rows[self.config.word_pad_id] = False
        self.word_embedding.weight[rows] = vectors[rows].to(self.word_embedding.weight)
        return int(rows.sum())

    def forward(
        self,
        words: Tensor,
        chars: Tensor | None,
        lengths: Tensor,
        char_lengths: Tensor | None,
    ) -> Tensor:
        """Emission scores of every tag at every position.

        Args:
            words: ``(B, T)`` word ids.
            chars: ``(B, T, C)`` character ids (None without the character encoder).
            lengths: ``(B,)`` sentence lengths in ``[1, T]``.
            char_lengths: ``(B, T)`` word lengths in characters, >= 1 at real words (None without chars).

        Returns:
            ``(B, T, K)`` scores; values at padded positions are meaningless.
        """
        x, _ = self._embed(words, chars, lengths, char_lengths)  # (B, T, E + 2*Hc)
        h, _ = self.lstm(self.dropout(x), lengths=lengths.cpu())  # (B, T, 2*H)
        return self.output(self.dropout(h))  # (B, T, K)

    def _emissions(self, batch: TaggerBatch) -> tuple[Tensor, Tensor]:
        emissions = self(batch.words, batch.chars, batch.lengths, batch.char_lengths)
        return emissions, self._mask(batch.lengths, batch.words.size(1), emissions.device)

    def loss(self, batch: TaggerBatch) -> tuple[Tensor, int]:
        """Summed loss over the real tokens of the batch, and their number.

        Softmax head: cross-entropy summed over tokens. CRF head: negative log-likelihood summed over
        sentences (a sentence-level loss; divide by the token count as for the softmax).

        Returns:
            ``(loss_sum, n_tokens)``: a scalar tensor and an int.
        """
        if batch.tags is None:
            raise ValueError("loss needs batch.tags")
        emissions, mask = self._emissions(batch)
        tags = batch.tags.to(emissions.device)
        if self.crf is not None:
            loss = self.crf.neg_log_likelihood(emissions, tags, mask).sum()
        else:
            loss = F.cross_entropy(emissions[mask], tags[mask], reduction="sum")  # over (N, K) real tokens
        return loss, batch.num_tokens

    @torch.no_grad()
    def predict(self, batch: TaggerBatch) -> list[list[int]]:
        """Best tag ids of each sentence (argmax, or Viterbi with the CRF), trimmed to its length.

        Call ``model.eval()`` first so that dropout is off.
        """
        emissions, mask = self._emissions(batch)
        if self.crf is not None:
            return self.crf.decode(emissions, mask)
        best = emissions.argmax(dim=2).tolist()  # (B, T)
        return [row[:n] for row, n in zip(best, batch.lengths.tolist())]
