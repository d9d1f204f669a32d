"""Tokenizers at three levels: characters, whitespace words, and BPE subwords.

All three share one interface (:class:`Tokenizer`): ``tokenize`` a line into symbols, ``encode``
it to ids of the tokenizer's :class:`~rnnkit.data.vocab.Vocab`, ``decode`` ids back to text, and
``encode_stream`` a whole corpus into the contiguous id stream a language model trains on.

Streams (``encode_stream``), per level:

- ``char``: every character, newlines included, no ``<eos>``; ``decode_stream`` is the inverse.
- ``word``: each line's whitespace tokens followed by ``<eos>``, as in the Mikolov PTB files
  (``<eos>`` stands for the newline). A blank line contributes only ``<eos>`` (so paragraph
  breaks survive); a final newline does not add an empty last line.
- ``subword``: each line's BPE pieces followed by ``<eos>`` (newline as ``<eos>``, as for words).

Unknown symbols map to ``<unk>``. A literal special symbol written in the text (PTB's ``<unk>``)
maps to that special's id, except ``<pad>``, which the losses ignore and so maps to ``<unk>``.

Subwords use byte-pair encoding from the HuggingFace ``tokenizers`` library rather than
sentencepiece: it is one small wheel, trains in memory from the training text, and serialises to
a JSON string that we keep inside the run folder's tokenizer dict, so no model file is needed. The
pre-tokenizer and decoder are ``Metaspace`` (spaces become ``▁`` as in sentencepiece), so
``decode(encode(line)) == line`` for lines of seen characters without leading spaces (runs of spaces
and trailing spaces survive). BPE is trained on the training lines only, with special symbols
removed from them; characters never seen in training become ``<unk>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rnnkit.data.vocab import BOS, EOS, PAD, UNK, Vocab, check_format

__all__ = [
    "LEVELS",
    "CharTokenizer",
    "SubwordTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "build_tokenizer",
    "tokenizer_from_dict",
]

LEVELS = ("char", "word", "subword")
DEFAULT_SPECIALS = (PAD, UNK, BOS, EOS)
_FORMAT = "rnnkit.tokenizer/1"
_CHAR_UNK = "\ufffd"  # how char-level decode shows <unk>: one character per id


def _lines(text: str) -> list[str]:
    """Split on ``\\n``; a final newline does not make an empty last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class Tokenizer:
    """Base class: text <-> symbols <-> ids over a :class:`Vocab`.

    Attributes:
        level: ``"char"``, ``"word"`` or ``"subword"``.
        vocab: the vocabulary ids refer to.
    """

    level: str = ""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._skip = {i for i in (vocab.pad_id, vocab.bos_id, vocab.eos_id) if i is not None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={len(self.vocab)})"

    # -- to implement per level ---------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Symbols of one line of text."""
        raise NotImplementedError

    def _join(self, symbols: list[str]) -> str:
        """Text of one line's symbols (specials already removed)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------

    def _fix_ids(self, ids: list[int]) -> list[int]:
        """A literal ``<pad>`` in the text must not become padding (the loss ignores it)."""
        pad, unk = self.vocab.pad_id, self.vocab.unk_id
        if pad is not None and unk is not None and pad in ids:
            ids = [unk if i == pad else i for i in ids]
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of one line (or sentence) of text; no ``<bos>``/``<eos>`` added."""
        return self._fix_ids(self.vocab.encode(self.tokenize(text)))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of one line's ids; ``<pad>``, ``<bos>`` and ``<eos>`` are skipped."""
        ids = [int(i) for i in ids]
        return self._join([s for i, s in zip(ids, self.vocab.decode(ids)) if i not in self._skip])

    def encode_stream(self, text: str) -> list[int]:
        """Ids of a whole corpus for language modelling: each line's ids, then ``<eos>``."""
        eos = self.vocab.itos[self._require_eos()]
        symbols: list[str] = []
        for line in _lines(text):  # one vocabulary lookup over the whole corpus, not one per line
            symbols.extend(self.tokenize(line))
            symbols.append(eos)
        return self._fix_ids(self.vocab.encode(symbols))

    def decode_stream(self, ids: Iterable[int]) -> str:
        """Inverse of :meth:`encode_stream`: ``<eos>`` becomes a newline; pad/bos are skipped."""
        eos = self.vocab.eos_id
        lines: list[str] = []
        cur: list[int] = []
        for i in ids:
            i = int(i)
            if i == eos:
                lines.append(self.decode(cur) + "\n")
                cur = []
            else:
                cur.append(i)
        if cur:
            lines.append(self.decode(cur))
        return "".join(lines)

    def unknown(self, text: str) -> list[str]:
        """Distinct symbols of ``text`` outside the vocabulary (to warn once about them)."""
        return self.vocab.unknown(self.tokenize(text))

    def _require_eos(self) -> int:
        eos = self.vocab.eos_id
        if eos is None:
            raise ValueError(f"a {self.level}-level stream needs '<eos>' among the vocabulary's specials")
        return eos

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :func:`tokenizer_from_dict` rebuilds the tokenizer."""
        return {"format": _FORMAT, "level": self.level, "vocab": self.vocab.to_dict()}


class CharTokenizer(Tokenizer):
    """Characters; the stream is every character, newlines included, with no ``<eos>``.

    ``decode`` shows ``<unk>`` as U+FFFD (one character per id).
    """

    level = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def _join(self, symbols: list[str]) -> str:
        unk = self.vocab.unk
        return "".join(_CHAR_UNK if s == unk else s for s in symbols)

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(text)  # a character can never spell a special symbol

    def encode_stream(self, text: str) -> list[int]:
        return self.vocab.encode(text)

    def decode_stream(self, ids: Iterable[int]) -> str:
        return self.decode(ids)


class WordTokenizer(Tokenizer):
    """Whitespace-separated words; ``decode`` joins them with single spaces."""

    level = "word"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def _join(self, symbols: list[str]) -> str:
        return " ".join(symbols)


class SubwordTokenizer(Tokenizer):
    """BPE pieces from a trained HuggingFace ``tokenizers.Tokenizer``.

    Args:
        vocab: our vocabulary; ``vocab.itos`` must equal the BPE model's symbols in id order.
        bpe: the trained HuggingFace tokenizer (Metaspace pre-tokenizer and decoder).
    """

    level = "subword"

    def __init__(self, vocab: Vocab, bpe: Any) -> None:
        super().__init__(vocab)
        hf_vocab = bpe.get_vocab(with_added_tokens=True)
        if len(hf_vocab) != len(vocab) or any(hf_vocab.get(s) != i for i, s in enumerate(vocab.itos)):
            raise ValueError("the BPE model's symbols do not match the vocabulary")
        if vocab.unk is None:
            raise ValueError("a subword tokenizer needs an unk symbol")
        self.bpe = bpe

    def tokenize(self, text: str) -> list[str]:
        return self.bpe.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        return self._fix_ids(self.bpe.encode(text, add_special_tokens=False).ids)

    def _join(self, symbols: list[str]) -> str:
        return self.bpe.decoder.decode(symbols)

    def encode_stream(self, text: str) -> list[int]:
        eos = self._require_eos()
        out: list[int] = []
        for enc in self.bpe.encode_batch(_lines(text), add_special_tokens=False):
            out.extend(enc.ids)
            out.append(eos)
        return self._fix_ids(out)

    def unknown(self, text: str) -> list[str]:
        """Distinct stretches of ``text`` that BPE maps to ``<unk>`` (unseen characters)."""
        enc = self.bpe.encode(text, add_special_tokens=False)
        unk_id, unk = self.vocab.unk_id, self.vocab.unk
        seen: dict[str, None] = {}
        for i, (a, b) in zip(enc.ids, enc.offsets):
            if i == unk_id and text[a:b] != unk:
                seen.setdefault(text[a:b])
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["bpe"] = self.bpe.to_str()
        return d


def _train_bpe(lines: Iterable[str], vocab_size: int, min_count: int, specials: Sequence[str]) -> Any:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = HFTokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_count,
        special_tokens=list(specials),
        show_progress=False,
    )

    def clean(line: str) -> str:
        # literal specials (PTB's <unk>) keep their ids at encode time; don't learn merges of their letters
        for s in specials:
            if s in line:
                line = " ".join(w for w in line.split(" ") if w != s)
        return line

    bpe.train_from_iterator((c for c in map(clean, lines) if c.strip()), trainer=trainer)
    return bpe


def _vocab_from_bpe(bpe: Any, specials: Sequence[str]) -> Vocab:
    hf_vocab = bpe.get_vocab(with_added_tokens=True)
    itos = sorted(hf_vocab, key=hf_vocab.__getitem__)
    if itos[: len(specials)] != list(specials) or [hf_vocab[s] for s in itos] != list(range(len(itos))):
        raise ValueError("the BPE model does not put the special symbols first with contiguous ids")
    return Vocab(itos[len(specials) :], specials=specials, unk=UNK)


def build_tokenizer(
    level: str,
    texts: Iterable[str],
    *,
    min_count: int = 1,
    max_size: int | None = None,
    subword_vocab_size: int = 8000,
    specials: Sequence[str] = DEFAULT_SPECIALS,
) -> Tokenizer:
    """Build a tokenizer and its vocabulary from training texts.

    Args:
        level: ``"char"``, ``"word"`` or ``"subword"``.
        texts: the training texts (whole files or lines); nothing else must be passed.
        min_count: char/word: drop symbols seen fewer times (they become ``<unk>``);
            subword: minimum count of a pair to merge. Default 1.
        max_size: char/word: keep the ``max_size`` most frequent symbols (specials not counted);
            must be None for subword, whose size is ``subword_vocab_size``.
        subword_vocab_size: total BPE vocabulary size, specials and characters included (an upper
            bound: a small text runs out of merges first). Default 8000.
        specials: special symbols, ids ``0..k-1``; ``<unk>`` is the unk symbol when present
            (required for subword). Default ``("<pad>", "<unk>", "<bos>", "<eos>")``.

    Returns:
        A :class:`CharTokenizer`, :class:`WordTokenizer` or :class:`SubwordTokenizer`. Builds are
        deterministic: the same texts give the same vocabulary.

    Example::

        >>> tok = build_tokenizer("word", ["the cat sat\\nthe dog\\n"])
        >>> tok.encode_stream("the cat\\n")
        [4, 5, 3]
    """
    if isinstance(texts, str):
        raise TypeError("build_tokenizer expects an iterable of texts, got a str; wrap it: [text]")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    specials = tuple(specials)
    unk = UNK if UNK in specials else None
    if level == "char":
        seqs: Iterable[list[str]] = (list(t) for t in texts)
    elif level == "word":
        seqs = (t.split() for t in texts)
    if level in ("char", "word"):
        vocab = Vocab.build(seqs, min_count=min_count, max_size=max_size, specials=specials, unk=unk)
        return CharTokenizer(vocab) if level == "char" else WordTokenizer(vocab)
    if max_size is not None:
        raise ValueError("max_size applies to char and word levels; use subword_vocab_size for subword")
    if unk is None:
        raise ValueError("a subword tokenizer needs '<unk>' among the specials")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if subword_vocab_size <= len(specials):
        raise ValueError(
            f"subword_vocab_size must exceed the {len(specials)} specials, got {subword_vocab_size}"
        )
    bpe = _train_bpe((line for t in texts for line in _lines(t)), subword_vocab_size, min_count, specials)
    return SubwordTokenizer(_vocab_from_bpe(bpe, specials), bpe)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Inverse of :meth:`Tokenizer.to_dict`.

    Raises:
        ValueError: ``d`` is not a tokenizer dict or is damaged (the caller names the file).
    """
    check_format(d, _FORMAT, "an rnnkit tokenizer")
    level = d.get("level")
    if level not in LEVELS:
        raise ValueError(f"rnnkit tokenizer has an unknown level {level!r}")
    vocab = Vocab.from_dict(d.get("vocab"))
    if level == "char":
        return CharTokenizer(vocab)
    if level == "word":
        return WordTokenizer(vocab)
    from tokenizers import Tokenizer as HFTokenizer

    bpe_json = d.get("bpe")
    if not isinstance(bpe_json, str):
        raise ValueError("rnnkit subword tokenizer is missing its 'bpe' model")
    try:
        json.loads(bpe_json)
        bpe = HFTokenizer.from_str(bpe_json)
    except Exception as e:  # tokenizers raises its own Exception types for bad JSON
        raise ValueError(
            f"rnnkit subword tokenizer has a damaged 'bpe' model: {str(e).splitlines()[0]}"
        ) from None
    return SubwordTokenizer(vocab, bpe)
