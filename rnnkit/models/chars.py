"""Word (+ character) input shared by the tagger and the classifier.

A model deriving from :class:`WordCharInput` reads each token ``t`` as::

    c_t = [h_fwd(last char); h_bwd(first char)]       char BiLSTM over the word's characters (optional)
    x_t = [E_word[w_t]; c_t]                          (B, T, E [+ 2*Hc])

(Lample et al. 2016). Only real words go through the character encoder; padded words get zero
features. Shapes: B texts, T words, C characters per word, E word embedding size, Hc character
hidden size per direction.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.nn.registry import recurrent_layer

__all__ = ["WordCharBatch", "WordCharInput", "check_input_fields"]

BatchT = TypeVar("BatchT", bound="WordCharBatch")


@dataclass
class WordCharBatch:
    """Padded word ids and, with the character encoder, character ids: what :class:`WordCharInput` reads.
    A task's batch derives from it and adds its gold labels.

    Attributes:
        words: ``(B, T)`` word ids. lengths: ``(B,)`` text lengths >= 1 (on the CPU).
        chars: ``(B, T, C)`` character ids, or None. char_lengths: ``(B, T)`` word lengths in characters
            (0 at padded words), or None.
    """

    words: Tensor
    lengths: Tensor
    chars: Tensor | None = None
    char_lengths: Tensor | None = None

    def to(self: BatchT, device: torch.device | str) -> BatchT:
        """The batch with its id and label tensors on ``device`` (the lengths stay on the CPU)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if f.name not in ("lengths", "char_lengths") and getattr(self, f.name) is not None}
        return replace(self, **moved)


def check_input_fields(c) -> None:  # noqa: ANN001 (a TaggerConfig or ClassifierConfig)
    """Validate a config's input fields (those :meth:`WordCharInput._build_input` reads); ValueError names the field."""
    for name in ("num_words", "emb"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.use_chars:
        for name in ("num_chars", "char_emb", "char_hidden"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be >= 1 when use_chars, got {getattr(c, name)}")
    if not 0 <= c.word_pad_id < c.num_words:
        raise ValueError(f"word_pad_id must be in [0, {c.num_words}), got {c.word_pad_id}")
    if c.use_chars and not 0 <= c.char_pad_id < c.num_chars:
        raise ValueError(f"char_pad_id must be in [0, {c.num_chars}), got {c.char_pad_id}")


class WordCharInput(nn.Module):
    """Base class of models whose input is word embeddings, optionally joined by character features.

    The model calls :meth:`_build_input` in its constructor (with a config holding ``num_words``,
    ``emb``, ``word_pad_id``, ``use_chars``, ``num_chars``, ``char_emb``, ``char_hidden``,
    ``char_pad_id``), :meth:`_reset_input` in ``reset_parameters`` and :meth:`_embed` in ``forward``.
    Its parameters are ``word_embedding``, ``char_embedding`` and ``char_lstm`` (None without chars):
    the state-dict names of the tagger's checkpoints.
    """

    def _build_input(self, c) -> int:  # noqa: ANN001 (a TaggerConfig or ClassifierConfig)
        """Create the embeddings and the character encoder (any registered cell, ``c.char_cell``; the name
        ``char_lstm`` is kept whatever the cell so that saved runs load); returns the size of ``x_t``."""
        self.word_embedding = nn.Embedding(c.num_words, c.emb, padding_idx=c.word_pad_id)
        if not c.use_chars:
            self.char_embedding = self.char_lstm = None
            return c.emb
        self.char_embedding = nn.Embedding(c.num_chars, c.char_emb, padding_idx=c.char_pad_id)
        self.char_lstm = recurrent_layer(c.char_cell, c.char_emb, c.char_hidden, bidirectional=True)
        return c.emb + 2 * c.char_hidden

    @torch.no_grad()
    def _reset_input(self) -> None:
        """Word and character embeddings uniform in [-0.1, 0.1], padding rows zero (LSTMs as torch.nn)."""
        for embedding in (self.word_embedding, self.char_embedding):
            if embedding is not None:
                nn.init.uniform_(embedding.weight, -0.1, 0.1)
                embedding.weight[embedding.padding_idx].zero_()

    def _check_input(self, words: Tensor, chars: Tensor | None, lengths: Tensor, char_lengths: Tensor | None) -> None:
        if words.dim() != 2:
            raise ValueError(f"words: expected shape (B, T), got {tuple(words.shape)}")
        b, t = words.shape
        if tuple(lengths.shape) != (b,):
            raise ValueError(f"lengths: expected shape ({b},), got {tuple(lengths.shape)}")
        if self.char_lstm is not None:
            if chars is None or char_lengths is None:
                raise ValueError("chars and char_lengths are required when config.use_chars")
            if chars.dim() != 3 or tuple(chars.shape[:2]) != (b, t):
                raise ValueError(f"chars: expected shape ({b}, {t}, C), got {tuple(chars.shape)}")
            if tuple(char_lengths.shape) != (b, t):
                raise ValueError(f"char_lengths: expected shape ({b}, {t}), got {tuple(char_lengths.shape)}")

    @staticmethod
    def _mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
        return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)  # (B, T)

    def _char_features(self, chars: Tensor, char_lengths: Tensor, mask: Tensor) -> Tensor:
        """Character encoder per real word: its forward output at the last character and its backward
        output at the first (for LSTM: the final states h); zeros at padded words. -> (B, T, 2*Hc)

        The encoder runs once per distinct spelling in the batch (function words and punctuation repeat
        a lot: 43% fewer words to encode in UD EWT batches of 32 sentences); the result is the same.
        """
        b, t, c = chars.shape
        real = mask.reshape(-1)  # (B*T,)
        word_chars = chars.reshape(b * t, c)[real]  # (N, C), N real words
        n_chars = char_lengths.reshape(b * t)[real.cpu()].to(word_chars.device)  # (N,)
        keys = torch.cat([word_chars, n_chars.unsqueeze(1)], dim=1)  # (N, C + 1): spelling and length
        distinct, which = torch.unique(keys, dim=0, return_inverse=True)  # (U, C + 1), (N,) with U <= N
        spellings, n_distinct = distinct[:, :c], distinct[:, c].cpu()
        out, _ = self.char_lstm(self.char_embedding(spellings), lengths=n_distinct)  # (U, C, 2*Hc)
        hc = out.size(2) // 2
        last = (n_distinct - 1).to(out.device)  # (U,)
        forward = out[torch.arange(out.size(0), device=out.device), last, :hc]  # (U, Hc)
        # an embedding lookup, not ``[which]``: the backward of advanced indexing adds the N rows into U with
        # index_put_(accumulate=True), whose float32 CPU kernel uses racing atomic adds on >= 2 threads (the
        # order of the additions, hence the rounding, changes run to run); embedding's backward adds in a
        # fixed order on CPU (and, unlike index_select's, is not among torch's nondeterministic GPU operations), so
        # training is bit-reproducible at any fixed thread count.
        per_word = F.embedding(which, torch.cat([forward, out[:, 0, hc:]], dim=1))  # (N, 2*Hc)
        out = per_word.new_zeros(b * t, per_word.size(1))
        out[real] = per_word
        return out.view(b, t, -1)  # (B, T, 2*Hc)

    def _embed(
        self, words: Tensor, chars: Tensor | None, lengths: Tensor, char_lengths: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Check the inputs; return ``x`` ``(B, T, E [+ 2*Hc])`` (before dropout) and the mask ``(B, T)``."""
        self._check_input(words, chars, lengths, char_lengths)
        mask = self._mask(lengths, words.size(1), words.device)
        x = self.word_embedding(words)  # (B, T, E)
        if self.char_lstm is not None:
            x = torch.cat([x, self._char_features(chars, char_lengths, mask)], dim=2)  # (B, T, E + 2*Hc)
        return x, mask
