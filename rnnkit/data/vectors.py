"""Pre-trained word vectors in word2vec or GloVe text format, with ``file:line`` errors."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.data.files import read_lines
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError

__all__ = ["load_word_vectors"]

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def load_word_vectors(
    path: str | os.PathLike, vocab: Vocab | Sequence[str], *, what: str = "word vectors"
) -> tuple[Tensor, Tensor]:
    """Read pre-trained vectors in word2vec or GloVe text format for the given words.

    Each line is ``word v_1 ... v_D`` (whitespace-separated); a first line of exactly two integers
    (``count D``) is a word2vec header. Every line must have ``D`` numbers. A word missing from the
    file takes the vector of its lowercase form if that is there (GloVe is lowercased); the first
    occurrence of a duplicated word wins. Only the numbers of the vectors used are parsed, and each
    must be a finite float32 number.

    Args:
        path: the text file.
        vocab: the word vocabulary (a :class:`~rnnkit.data.vocab.Vocab`, or its symbols in id order).
        what: the file's role, appended to error messages.

    Returns:
        ``(vectors (V, D) float32, found (V,) bool)``: rows of words without a vector are zero.

    Raises:
        DataError: ``PATH:LINE: expected D numbers after the word, got N``, ``... 'x' is not a number``,
            ``... 'nan' is not a finite number``, ``... '1e39' is outside the float32 range``,
            ``PATH:1: the word2vec header gives 0 dimensions``, plus those of
            :func:`rnnkit.data.files.read_lines`.
    """
    words = vocab.itos if isinstance(vocab, Vocab) else list(vocab)
    lines = read_lines(path, what=what)
    where = os.fspath(path)
    first = lines[0].split()
    start, dim = 0, None
    if len(first) == 2 and all(x.isdigit() for x in first):
        start, dim = 1, int(first[1])
        if dim < 1:
            raise DataError(f"{where}:1: the word2vec header gives {dim} dimensions ({what})")
    wanted: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        wanted.setdefault(w, []).append(i)
    lower: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        if w.lower() != w:
            lower.setdefault(w.lower(), []).append(i)
    exact: dict[int, tuple[int, list[str]]] = {}  # word id -> (line number, number fields)
    folded: dict[int, tuple[int, list[str]]] = {}
    for n, line in enumerate(lines[start:], start=start + 1):
        parts = line.split()
        if not parts:
            continue
        if dim is None:
            dim = len(parts) - 1
            if dim < 1:
                raise DataError(f"{where}:{n}: expected a word followed by numbers, got one field ({what})")
        if len(parts) != dim + 1:
            raise DataError(f"{where}:{n}: expected {dim} numbers after the word, got {len(parts) - 1} ({what})")
        for ids, store in ((wanted.get(parts[0]), exact), (lower.get(parts[0]), folded)):
            for i in ids or ():
                store.setdefault(i, (n, parts[1:]))
    if dim is None:
        raise DataError(f"{where}: no vectors found ({what})")
    vectors = torch.zeros(len(words), dim)
    found = torch.zeros(len(words), dtype=torch.bool)
    for i in range(len(words)):
        source = exact.get(i, folded.get(i))
        if source is not None:
            n, values = source
            vectors[i] = torch.tensor([_number(v, f"{where}:{n}", what) for v in values])
            found[i] = True
    return vectors, found


def _number(text: str, where: str, what: str) -> float:
    """``text`` as a finite float32-representable number, or a DataError at ``where`` (``path:line``)."""
    try:
        x = float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number ({what})") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: {text!r} is not a finite number ({what})")
    if abs(x) > _FLOAT32_MAX:
        raise DataError(f"{where}: {text!r} is outside the float32 range ({what})")
    return x
