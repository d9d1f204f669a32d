"""Tagged sentences: CoNLL-U and CoNLL-2003-style column files, plain text, the bundled UD English EWT.

A :class:`Sentence` is ``(tokens, labels)``, two lists of strings of equal length. Two file formats
give them:

- **CoNLL-U** (Universal Dependencies, :func:`read_conllu`): 10 tab-separated columns
  ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``; ``#`` lines are comments; a blank line
  ends a sentence. Only lines whose ID is a whole number are tokens: multi-word token ranges
  (``3-4``) and empty nodes (``8.1``) are skipped, as the format prescribes. The label is UPOS or
  XPOS (``column="upos"|"xpos"``), kept verbatim (``_`` if the treebank leaves it empty).
- **Column files** (CoNLL-2003 style, :func:`read_columns`): one token per line, whitespace-separated
  columns ``token ... label``, a blank line between sentences, ``-DOCSTART-`` lines ignored. Every
  token line of a file must have the same number of columns. ``column`` is a 0-based index, negative
  from the end (the default ``-1`` is the last column; ``0`` would be the token itself).

:func:`read_tagged` picks the format from the file (``.conllu`` name or CoNLL-U-looking content),
files ending in ``.gz`` are decompressed transparently, :func:`read_plain` splits one
whitespace-tokenised sentence per line, and :func:`write_conll` / :func:`write_conllu` write
predictions. Errors are one-line :class:`DataError` messages::

    PATH:LINE: expected 10 tab-separated CoNLL-U columns, got 7
    PATH:LINE: token id 'x' is not a whole number, a range (3-4) or an empty node (8.1)
    PATH:LINE: empty FORM column (CoNLL-U writes _ for no value)     (or UPOS, XPOS: the label column)
    PATH:LINE: expected 4 columns like line 1, got 3
    PATH:LINE: 2 columns, but column -3 was asked for
    PATH: no sentences found

plus those of :func:`rnnkit.data.files.read_lines` (missing, empty, binary, non-UTF-8 files). A bad
``column`` value is a :class:`ConfigError` naming the field ``column``.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import NamedTuple, TextIO

from rnnkit.data.files import decode_text, read_bytes, read_lines, split_lines
from rnnkit.errors import ConfigError, DataError

__all__ = [
    "CONLLU_COLUMNS",
    "Sentence",
    "bundled_ud_ewt",
    "is_conllu",
    "read_columns",
    "read_conllu",
    "read_plain",
    "read_tagged",
    "write_conll",
    "write_conllu",
]

CONLLU_COLUMNS = {"upos": 3, "xpos": 4}
"""0-based CoNLL-U column of each label name ``read_conllu`` accepts."""

UD_EWT_DIR = "ud-english-ewt"
UD_EWT_SPLITS = ("train", "dev", "test")

_RANGE = re.compile(r"[0-9]+-[0-9]+")
_EMPTY_NODE = re.compile(r"[0-9]+\.[0-9]+")


class Sentence(NamedTuple):
    """One tagged sentence: ``tokens[i]`` has label ``labels[i]``."""

    tokens: list[str]
    labels: list[str]


def _lines(path: str | os.PathLike, what: str) -> list[str]:
    """Lines of a text file, gunzipping ``*.gz`` first (same checks as ``read_lines``)."""
    if not os.fspath(path).endswith(".gz"):
        return read_lines(path, what=what)
    role = f" ({what})" if what else ""
    try:
        data = gzip.decompress(read_bytes(path, what=what))
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{os.fspath(path)}: not a valid gzip file{role}") from None
    return split_lines(decode_text(data, path, what=what))


def _conllu_column(column: str, path: str | os.PathLike) -> int:
    key = column.lower() if isinstance(column, str) else column
    if key not in CONLLU_COLUMNS:
        raise ConfigError(
            f"column: {column!r} is not a CoNLL-U label column (expected upos or xpos) for {os.fspath(path)}"
        )
    return CONLLU_COLUMNS[key]


def read_conllu(
    path: str | os.PathLike, column: str = "upos", *, what: str = "tagged data"
) -> list[Sentence]:
    """Read a CoNLL-U file (optionally ``.gz``) as sentences of word forms and UPOS or XPOS labels.

    Args:
        path: the file.
        column: ``"upos"`` (column 4) or ``"xpos"`` (column 5), case-insensitive.
        what: the file's role, appended to error messages.

    Returns:
        The sentences in file order; comment-only blocks give none.

    Raises:
        ConfigError: unknown ``column``.
        DataError: see the module docstring.
    """
    col = _conllu_column(column, path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    labels: list[str] = []
    for n, line in enumerate(_lines(path, what), start=1):
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tokens, labels))
                tokens, labels = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            where = f"{os.fspath(path)}:{n}"
            raise DataError(f"{where}: expected 10 tab-separated CoNLL-U columns, got {len(fields)}")
        token_id = fields[0]
        if not token_id.isdigit() or not token_id.isascii():
            if _RANGE.fullmatch(token_id) or _EMPTY_NODE.fullmatch(token_id):
                continue
            raise DataError(
                f"{os.fspath(path)}:{n}: token id {token_id!r} is not a whole number,"
                " a range (3-4) or an empty node (8.1)"
            )
        for index, name in ((1, "FORM"), (col, column.upper())):
            if not fields[index].strip():
                raise DataError(f"{os.fspath(path)}:{n}: empty {name} column (CoNLL-U writes _ for no value)")
        tokens.append(fields[1])
        labels.append(fields[col])
    if tokens:
        sentences.append(Sentence(tokens, labels))
    if not sentences:
        raise DataError(f"{os.fspath(path)}: no sentences found ({what})")
    return sentences


def _column_index(column: int | str) -> int:
    if isinstance(column, bool):
        column = str(column)
    if isinstance(column, str):
        try:
            column = int(column)
        except ValueError:
            raise ConfigError(
                f"column: {column!r} is not a column number (column files take an integer; "
                "upos/xpos are for CoNLL-U)"
            ) from None
    if column == 0:
        raise ConfigError("column: 0 is the token column; labels are in column 1 or later (or -1 = last)")
    return column


def read_columns(path: str | os.PathLike, column: int = -1, *, what: str = "tagged data") -> list[Sentence]:
    """Read a CoNLL-2003-style column file (optionally ``.gz``): ``token ... label`` per line.

    Args:
        path: the file.
        column: 0-based label column; negative counts from the end. Default -1 (the last).
        what: the file's role, appended to error messages.

    Returns:
        The sentences in file order.

    Raises:
        ConfigError: ``column`` is not an integer, or is 0 (the token column).
        DataError: see the module docstring.
    """
    col = _column_index(column)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    labels: list[str] = []
    width: tuple[int, int] | None = None  # (number of columns, line it was first seen on)
    for n, line in enumerate(_lines(path, what), start=1):
        fields = line.split()
        if not fields:
            if tokens:
                sentences.append(Sentence(tokens, labels))
                tokens, labels = [], []
            continue
        if fields[0] == "-DOCSTART-":
            continue
        where = f"{os.fspath(path)}:{n}"
        if width is None:
            width = (len(fields), n)
            if not -len(fields) <= col < len(fields):
                raise DataError(f"{where}: {len(fields)} columns, but column {col} was asked for")
        elif len(fields) != width[0]:
            raise DataError(f"{where}: expected {width[0]} columns like line {width[1]}, got {len(fields)}")
        if width[0] < 2:
            raise DataError(f"{where}: expected a token and a label, got 1 column")
        tokens.append(fields[0])
        labels.append(fields[col])
    if tokens:
        sentences.append(Sentence(tokens, labels))
    if not sentences:
        raise DataError(f"{os.fspath(path)}: no sentences found ({what})")
    return sentences


def is_conllu(path: str | os.PathLike, *, what: str = "tagged data") -> bool:
    """Whether a file is CoNLL-U: its name ends in ``.conllu`` (or ``.conllu.gz``), or its first
    line that is not blank or a comment has 10 tab-separated columns starting with a token id."""
    name = os.fspath(path)
    if name.endswith((".conllu", ".conllu.gz")):
        return True
    for line in _lines(path, what):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        first = fields[0]
        return len(fields) == 10 and bool(
            first.isdigit() or _RANGE.fullmatch(first) or _EMPTY_NODE.fullmatch(first)
        )
    return False


def read_tagged(
    path: str | os.PathLike, column: str | int | None = None, *, what: str = "tagged data"
) -> list[Sentence]:
    """Read tagged sentences from a CoNLL-U or a column file, whichever ``path`` is (:func:`is_conllu`).

    Args:
        path: the file.
        column: for CoNLL-U ``"upos"`` or ``"xpos"`` (default ``"upos"``); for a column file an
            integer or a string holding one (default ``-1``).
        what: the file's role, appended to error messages.

    Raises:
        ConfigError: ``column`` does not fit the file's format (the message names the file).
        DataError: see the module docstring.
    """
    if is_conllu(path, what=what):
        return read_conllu(path, "upos" if column is None else str(column), what=what)
    if column is not None and isinstance(column, str) and column.lower() in CONLLU_COLUMNS:
        raise ConfigError(
            f"column: {column!r} needs a CoNLL-U file, but {os.fspath(path)} is a column file "
            "(give a column number, e.g. -1 for the last)"
        )
    return read_columns(path, -1 if column is None else column, what=what)


def read_plain(lines: Iterable[str]) -> list[list[str]]:
    """Split whitespace-tokenised text, one sentence per line, into token lists.

    Blank lines hold no tokens and are skipped, so the result can be shorter than the input.
    """
    return [tokens for tokens in (line.split() for line in lines) if tokens]


def _check_pairs(tokens: Sequence[str], labels: Sequence[str], index: int) -> None:
    if len(tokens) != len(labels):
        raise ValueError(f"sentence {index}: {len(tokens)} tokens but {len(labels)} labels")


def write_conll(sentences: Iterable[tuple[Sequence[str], Sequence[str]]], fp: TextIO) -> None:
    """Write ``token<TAB>label`` lines, a blank line after each sentence (readable by :func:`read_columns`).

    Args:
        sentences: ``(tokens, labels)`` pairs, e.g. :class:`Sentence`.
        fp: a text stream (``sys.stdout``, an open file).
    """
    for i, (tokens, labels) in enumerate(sentences):
        _check_pairs(tokens, labels, i)
        fp.write("".join(f"{tok}\t{lab}\n" for tok, lab in zip(tokens, labels)))
        fp.write("\n")


def write_conllu(
    sentences: Iterable[tuple[Sequence[str], Sequence[str]]],
    fp: TextIO,
    column: str = "upos",
    *,
    source: str | os.PathLike | None = None,
) -> None:
    """Write predictions as CoNLL-U, the label in the UPOS or XPOS column.

    Without ``source`` each token line is ``ID FORM _ UPOS _ _ _ _ _ _`` (or XPOS filled instead).
    With ``source`` (the CoNLL-U file the tokens were read from) every line of it is copied, comments,
    multi-word ranges, empty nodes and other columns included, with only the label column of the
    token lines replaced by the predictions.

    Args:
        sentences: ``(tokens, labels)`` pairs in the order :func:`read_conllu` returned them.
        fp: a text stream.
        column: ``"upos"`` or ``"xpos"``.
        source: optional CoNLL-U file to copy the layout from.

    Raises:
        ConfigError: unknown ``column``.
        ValueError: tokens and labels differ in length, or do not match ``source``'s sentences.
    """
    col = _conllu_column(column, source or "the output")
    sentences = list(sentences)
    for i, (tokens, labels) in enumerate(sentences):
        _check_pairs(tokens, labels, i)
    if source is None:
        for tokens, labels in sentences:
            for i, (tok, lab) in enumerate(zip(tokens, labels), start=1):
                fields = [str(i), tok] + ["_"] * 8
                fields[col] = lab
                fp.write("\t".join(fields) + "\n")
            fp.write("\n")
        return
    gold = read_conllu(source, column)
    if len(gold) != len(sentences) or any(len(g.tokens) != len(s[1]) for g, s in zip(gold, sentences)):
        raise ValueError(f"predictions do not match the sentences of {os.fspath(source)}")
    s, k = 0, 0  # sentence and token index into the predictions
    in_sentence = False
    for line in _lines(source, "tagged data"):
        fields = line.split("\t")
        if not line.strip():
            if in_sentence:
                s, k, in_sentence = s + 1, 0, False
        elif not line.startswith("#") and fields[0].isdigit():
            fields[col] = sentences[s][1][k]
            k += 1
            in_sentence = True
            line = "\t".join(fields)
        fp.write(line + "\n")
    if in_sentence:
        fp.write("\n")


def bundled_ud_ewt() -> dict[str, Path]:
    """Paths of the bundled UD English EWT v2.16: ``{"train": ..., "dev": ..., "test": ...}``.

    Complete official CoNLL-U files, gzip-compressed (``*.conllu.gz``, read by :func:`read_conllu`
    and :func:`read_tagged` directly). License CC BY-SA 4.0; provenance and checksums in
    ``rnnkit/resources/ud-english-ewt/SOURCE.md``.

    Raises:
        DataError: if a file is missing (a broken installation).
    """
    folder = resources.files("rnnkit") / "resources" / UD_EWT_DIR
    paths = {split: Path(str(folder / f"en_ewt-ud-{split}.conllu.gz")) for split in UD_EWT_SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path}: bundled UD English EWT data is missing (reinstall rnnkit)")
    return paths
