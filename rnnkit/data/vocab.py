"""A vocabulary: the bijection between symbols (strings) and integer ids.

Ids are assigned in order: the special symbols first (``<pad>`` = 0, ``<unk>`` = 1 with the
defaults), then the ordinary tokens. :meth:`Vocab.build` orders tokens by decreasing count, ties
broken by first occurrence in the input, so the same input always gives the same vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["BOS", "EOS", "PAD", "UNK", "Vocab", "check_format"]

PAD = "<pad>"
UNK = "<unk>"
BOS = "<bos>"
EOS = "<eos>"

_FORMAT = "rnnkit.vocab/1"


def check_format(d: Any, expected: str, what: str) -> None:
    """The JSON document ``d`` (a saved vocabulary, tokenizer...) must be a dict whose ``format`` is ``expected``;
    ValueError ``not WHAT (expected format ..., got ...)`` otherwise (the caller names the file)."""
    if not isinstance(d, dict) or d.get("format") != expected:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"not {what} (expected format {expected!r}, got {got!r})")


class Vocab:
    """Map symbols to ids and back, special symbols first.

    Args:
        tokens: ordinary tokens, in id order after the specials; no duplicates, none equal to a special.
        specials: special symbols, given ids ``0 .. len(specials) - 1`` in this order.
            Default ``("<pad>", "<unk>")``.
        unk: the symbol unknown tokens map to; must be one of ``specials``. ``None`` makes unknown
            tokens a :class:`KeyError`. Default ``"<unk>"``.

    Attributes:
        itos: list of symbols, indexed by id.
        stoi: dict from symbol to id.

    Example::

        >>> v = Vocab(["the", "cat"])
        >>> v.encode(["the", "dog"])
        [2, 1]
        >>> v.decode([2, 3])
        ['the', 'cat']
    """

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        specials: Sequence[str] = (PAD, UNK),
        unk: str | None = UNK,
    ) -> None:
        specials = list(specials)
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct, got {specials}")
        if unk is not None and unk not in specials:
            raise ValueError(f"unk symbol {unk!r} must be one of specials {specials}")
        self.specials: list[str] = specials
        self.unk: str | None = unk
        self.itos: list[str] = specials + list(tokens)
        self.stoi: dict[str, int] = {}
        for i, s in enumerate(self.itos):
            if not isinstance(s, str):
                raise TypeError(f"vocabulary symbols must be str, got {type(s).__name__} {s!r} at id {i}")
            if s in self.stoi:
                raise ValueError(f"duplicate symbol {s!r} at ids {self.stoi[s]} and {i}")
            self.stoi[s] = i
        self._unk_id = None if unk is None else self.stoi[unk]

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_count: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
        unk: str | None = UNK,
    ) -> Vocab:
        """Build a vocabulary from tokenised sequences.

        Tokens are ordered by decreasing count; ties are broken by first occurrence in
        ``sequences`` (deterministic for a given input). Occurrences of a special symbol in the
        data (the literal ``<unk>`` of the PTB files) are not counted as ordinary tokens: they keep
        the special's id.

        Args:
            sequences: iterable of token sequences (e.g. the lines of the training text, split).
            min_count: drop tokens seen fewer times. Default 1.
            max_size: keep at most this many ordinary tokens (specials not counted); ``None`` keeps all.
            specials, unk: as in :class:`Vocab`.

        Returns:
            The vocabulary; ``len(vocab) <= len(specials) + max_size``.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        counts: Counter[str] = Counter()
        for seq in sequences:
            if isinstance(seq, str):
                # a bare string would silently count characters; make the caller say so
                raise TypeError(
                    "Vocab.build expects an iterable of token sequences, got a str; wrap it: [list(text)]"
                )
            counts.update(seq)
        special_set = set(specials)
        # Counter keeps first-insertion order and sorted() is stable: ties stay in first-occurrence order
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in special_set),
            key=lambda t: -counts[t],
        )
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(ranked, specials=specials, unk=unk)

    # -- lookup -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.itos == other.itos and self.specials == other.specials and self.unk == other.unk

    __hash__ = None  # mutable lists inside: not hashable

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={self.specials}, unk={self.unk!r})"

    def index(self, token: str) -> int:
        """Id of ``token``; the unk id when unknown. Raises KeyError when unknown and there is no unk."""
        i = self.stoi.get(token)
        if i is not None:
            return i
        if self._unk_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and it has no unk symbol")
        return self._unk_id

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens`` (unknown tokens -> unk id)."""
        get, unk_id = self.stoi.get, self._unk_id
        if unk_id is None:
            return [self.index(t) for t in tokens]
        return [get(t, unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of ``ids`` (ints or 0-d tensors); every symbol, specials included."""
        itos, n = self.itos, len(self.itos)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {n}")
            out.append(itos[i])
        return out

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens not in the vocabulary, in order of first occurrence."""
        seen: dict[str, None] = {}
        for t in tokens:
            if t not in self.stoi:
                seen.setdefault(t)
        return list(seen)

    # -- special ids --------------------------------------------------------------------------

    @property
    def pad_id(self) -> int | None:
        """Id of ``<pad>``, or None when absent."""
        return self.stoi.get(PAD)

    @property
    def unk_id(self) -> int | None:
        """Id of the unk symbol (``<unk>`` by default), or None when there is none."""
        return self._unk_id

    @property
    def bos_id(self) -> int | None:
        """Id of ``<bos>``, or None when absent."""
        return self.stoi.get(BOS)

    @property
    def eos_id(self) -> int | None:
        """Id of ``<eos>``, or None when absent."""
        return self.stoi.get(EOS)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds an equal vocabulary."""
        return {
            "format": _FORMAT,
            "specials": list(self.specials),
            "unk": self.unk,
            "tokens": self.itos[len(self.specials) :],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: ``d`` is not a vocabulary dict (the caller names the file in a
                CheckpointError/DataError).
        """
        check_format(d, _FORMAT, "an rnnkit vocabulary")
        try:
            specials, unk, tokens = d["specials"], d["unk"], d["tokens"]
        except KeyError as e:
            raise ValueError(f"rnnkit vocabulary is missing the field {e.args[0]!r}") from None
        if not isinstance(specials, list) or not isinstance(tokens, list):
            raise ValueError("rnnkit vocabulary fields 'specials' and 'tokens' must be lists")
        try:
            return cls(tokens, specials=specials, unk=unk)
        except TypeError as e:
            raise ValueError(f"damaged rnnkit vocabulary: {e}") from None
