"""Labelled texts for classification: TSV/CSV, fastText, JSON lines and label-first files; the EWT genres.

An :class:`Example` is one text with its labels (a tuple: one label for multi-class data, any number for
multi-label data) and the line its record starts on. :func:`read_classified` reads five formats, chosen
by ``format`` or from the file name (:func:`detect_format`: ``.tsv``, ``.csv``, ``.jsonl``, and ``.txt`` /
``.ft`` for fastText; any other name needs ``format``):

- ``tsv`` / ``csv``: delimited rows, read by the :mod:`csv` module. ``text_column`` and ``label_column``
  are header names or 0-based indices (negative from the end; digit strings from flags count as
  indices). The first row is a header when a column is given by name, or when ``header=True``. CSV
  follows RFC 4180 quoting, so a quoted field may hold commas, quotes (doubled) and newlines; in TSV a
  quote is an ordinary character (the GLUE/SST-2 convention: texts there start with quotes). The
  delimiter is ``,`` or a tab by format, or ``delimiter``.
- ``fasttext``: ``__label__pos __label__funny some text``: every whitespace-separated token starting
  with ``__label__`` is a label (as in fastText), the other tokens, joined by single spaces, the text.
- ``jsonl``: one JSON object per line, ``{"text": ..., "label": ...}``; the key names are
  ``text_column`` / ``label_column`` when given. A label is a string, an integer (kept as its digits),
  or, for multi-label data, a list of them.
- ``label-first``: ``LABEL text ...``: the first whitespace-separated token is the label field, the
  rest of the line the text. This reads TREC (``DESC:manner How did ...``); with ``coarse_sep=":"``
  its labels become the six coarse classes.

For every format, ``label_sep`` splits a label field into several labels (multi-label data in one
column: ``"funny|sad"``), and ``coarse_sep`` keeps the part of each label before its first
occurrence. Without ``multi_label``, every record must have exactly one label. Texts are stripped of
surrounding whitespace and otherwise kept as is (tokenisation comes later).

A record whose text is empty is skipped and its line kept in :attr:`ClassifiedData.empty`, so that the
caller warns once with the count (dropping it changes nothing a model could learn; a test set keeps a
record it cannot score out of its denominator, and the warning says how many). Every other problem is
a one-line :class:`~rnnkit.errors.DataError`::

    PATH:LINE: unclosed quote: the quoted field starting on this line never ends
    PATH:LINE: malformed CSV (',' expected after '"')
    PATH:1: the header has no column 'sentence' (columns: text, label)
    PATH:LINE: the row has 1 field, so no label column (1)
    PATH:LINE: empty label
    PATH:LINE: 2 labels (a, b) in single-label data (multi-label data needs multi_label)
    PATH:LINE: not a JSON object (Expecting value)
    PATH:LINE: no key 'label' in the JSON object (keys: text, y)
    PATH:LINE: the label must be a string, an integer or a list of them, got dict
    PATH:LINE: not valid UTF-8 (byte 0xe9 at column 12); if the file has another encoding, name it
        with encoding= (--encoding), e.g. latin-1
    PATH: no examples found

plus those of :func:`rnnkit.data.files.read_text` (missing, empty, binary files); an unknown ``format``,
``encoding`` or a column that does not fit the format is a :class:`~rnnkit.errors.ConfigError`.
:func:`label_vocab` builds the label vocabulary and rejects training data with a single class.

Bundled demo data: :func:`bundled_ewt_genres` labels each sentence of the bundled UD English EWT with
its genre (from its ``sent_id``), derived at load time from files the package already ships.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from rnnkit.data.conll import UD_EWT_SPLITS, _lines, bundled_ud_ewt, read_conllu
from rnnkit.data.files import read_text
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError, EncodingError

__all__ = [
    "EWT_GENRES",
    "FORMATS",
    "ClassifiedData",
    "Example",
    "bundled_ewt_genres",
    "detect_format",
    "label_vocab",
    "read_classified",
]

FORMATS = ("tsv", "csv", "fasttext", "jsonl", "label-first")
"""The formats :func:`read_classified` reads."""

EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".txt": "fasttext", ".ft": "fasttext"}
"""File-name endings and the format :func:`detect_format` gives them."""

FASTTEXT_PREFIX = "__label__"

EWT_GENRES = ("answers", "email", "newsgroup", "reviews", "weblog")
"""The five genres of UD English EWT, the prefixes of its ``sent_id`` values."""


class Example(NamedTuple):
    """One labelled text; ``line`` is the 1-based line its record starts on."""

    text: str
    labels: tuple[str, ...]
    line: int


@dataclass
class ClassifiedData:
    """What :func:`read_classified` returns: the examples, and the lines of records skipped for an empty text."""

    examples: list[Example]
    empty: list[int] = field(default_factory=list)


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format of ``path``: ``format`` when given (checked), else from the file name's ending.

    Raises:
        ConfigError: an unknown ``format``, or a name ending none of :data:`EXTENSIONS` knows.
    """
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        return format
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in EXTENSIONS:
        known = ", ".join(f"{e} ({f})" for e, f in EXTENSIONS.items())
        raise ConfigError(f"format: cannot tell the format of {os.fspath(path)} from its name ({known}); "
                          f"give one of {', '.join(FORMATS)}")
    return EXTENSIONS[ext]


def read_classified(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    text_column: str | int | None = None,
    label_column: str | int | None = None,
    header: bool | None = None,
    delimiter: str | None = None,
    label_sep: str | None = None,
    coarse_sep: str | None = None,
    multi_label: bool = False,
    encoding: str = "utf-8",
    what: str = "classification data",
) -> ClassifiedData:
    """Read labelled texts from a TSV, CSV, fastText, JSON-lines or label-first file (module docstring).

    Args:
        path: the file.
        format: one of :data:`FORMATS`; None to :func:`detect_format` from the name.
        text_column, label_column: TSV/CSV: a header name or a 0-based index (required); JSON lines:
            the key (default ``"text"`` / ``"label"``); other formats: must be None.
        header: TSV/CSV: whether the first row is a header; None: when a column is given by name.
        delimiter: TSV/CSV: the field delimiter (one character); default tab or comma by format.
        label_sep: split each label field on this string into several labels (multi-label data).
        coarse_sep: keep the part of each label before the first ``coarse_sep`` (TREC: ``":"``).
        multi_label: records may have any number of labels (also none); else exactly one.
        encoding: the file's text encoding (a Python codec name).
        what: the file's role, appended to the messages of unreadable files.

    Returns:
        The examples in file order, and the lines of the records skipped for an empty text.

    Raises:
        DataError, ConfigError: see the module docstring.
    """
    fmt = detect_format(path, format)
    where = os.fspath(path)
    try:
        text = read_text(path, what=what, encoding=encoding)
    except EncodingError as e:
        raise EncodingError(f"{e}; if the file has another encoding, name it with encoding= (--encoding), "
                            "e.g. latin-1") from None
    if fmt in ("tsv", "csv"):
        records = _delimited(text, where, fmt, text_column, label_column, header, delimiter)
    else:
        if header is not None or delimiter is not None:
            raise ConfigError(f"header and delimiter are for tsv/csv files, not {fmt} ({where})")
        if fmt == "jsonl":
            records = _json_lines(text, where, "text" if text_column is None else text_column,
                                   "label" if label_column is None else label_column)
        else:
            if text_column is not None or label_column is not None:
                raise ConfigError(f"text_column and label_column are for tsv/csv/jsonl files, not {fmt} ({where})")
            records = _fasttext(text) if fmt == "fasttext" else _label_first(text)
    data = ClassifiedData([])
    for line, body, fields in records:
        labels = _split_labels(fields, label_sep, coarse_sep)
        if not multi_label and len(labels) != 1:
            if not labels:
                raise DataError(f"{where}:{line}: empty label")
            raise DataError(f"{where}:{line}: {len(labels)} labels ({', '.join(labels)}) in single-label data "
                            "(multi-label data needs multi_label)")
        body = body.strip()
        if body:
            data.examples.append(Example(body, labels, line))
        else:
            data.empty.append(line)
    if not data.examples:
        raise DataError(f"{where}: no examples found ({what})")
    return data


Record = tuple[int, str, list[str]]  # (line, text, label fields)


def _split_labels(fields: Sequence[str], label_sep: str | None, coarse_sep: str | None) -> tuple[str, ...]:
    labels = [x for f in fields for x in (f.split(label_sep) if label_sep else [f])]
    if coarse_sep:
        labels = [x.split(coarse_sep, 1)[0] for x in labels]
    labels = [x.strip() for x in labels]
    return tuple(dict.fromkeys(x for x in labels if x))  # distinct, in order


def _column(spec: str | int | None, name: str) -> str | int:
    """A column spec as an index (ints and digit strings) or a header name."""
    if spec is None:
        raise ConfigError(f"{name}: required for tsv/csv files (a header name or a 0-based index)")
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ConfigError(f"{name}: expected a header name or a 0-based index, got {spec!r}")
    if isinstance(spec, str) and spec.lstrip("-").isdigit():
        return int(spec)
    return spec


def _delimited(
    text: str, where: str, fmt: str, text_column: str | int | None, label_column: str | int | None,
    header: bool | None, delimiter: str | None,
) -> list[Record]:
    columns = {"text_column": _column(text_column, "text_column"),
               "label_column": _column(label_column, "label_column")}
    by_name = any(isinstance(c, str) for c in columns.values())
    if header is False and by_name:
        raise ConfigError("text_column/label_column: a column given by name needs a header (header=False)")
    sep = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
    if len(sep) != 1:
        raise ConfigError(f"delimiter: expected one character, got {sep!r}")
    quoting = csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting, strict=True)
    index: dict[str, int] = {}
    records: list[Record] = []
    first = header or by_name
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise DataError(
                    f"{where}:{line}: unclosed quote: the quoted field starting on this line never ends"
                ) from None
            raise DataError(f"{where}:{line}: malformed {fmt.upper()} ({e})") from None
        if not row or row == [""]:
            continue
        if first:
            first = False
            index = _header_index(row, columns, where, line)
            continue
        fields = []
        for name, col in columns.items():
            i = index.get(name, col)
            if not -len(row) <= i < len(row):
                plural = "" if len(row) == 1 else "s"
                shown = repr(col) if isinstance(col, str) else col
                kind = name.split("_")[0]
                raise DataError(f"{where}:{line}: the row has {len(row)} field{plural}, so no {kind} column ({shown})")
            fields.append(row[i])
        records.append((line, fields[0], [fields[1]]))
    return records


def _header_index(row: list[str], columns: dict[str, str | int], where: str, line: int) -> dict[str, int]:
    """Indices of the columns given by name, from the header row."""
    names = [c.strip() for c in row]
    index = {}
    for name, col in columns.items():
        if isinstance(col, str):
            if col not in names:
                raise DataError(f"{where}:{line}: the header has no column {col!r} (columns: {', '.join(names)})")
            index[name] = names.index(col)
    return index


def _json_lines(text: str, where: str, text_key: str | int, label_key: str | int) -> list[Record]:
    for name, key in (("text_column", text_key), ("label_column", label_key)):
        if not isinstance(key, str) or key.lstrip("-").isdigit():
            raise ConfigError(f"{name}: JSON lines take a key name, got {key!r}")
    records = []
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}:{n}: not a JSON object (got {type(obj).__name__})")
        for key in (text_key, label_key):
            if key not in obj:
                raise DataError(f"{where}:{n}: no key {key!r} in the JSON object (keys: {', '.join(obj)})")
        body, label = obj[text_key], obj[label_key]
        if not isinstance(body, str):
            raise DataError(f"{where}:{n}: the text must be a string, got {type(body).__name__}")
        labels = label if isinstance(label, list) else [label]
        bad = next((x for x in labels if isinstance(x, bool) or not isinstance(x, (str, int))), None)
        if bad is not None or isinstance(label, bool):
            got = type(label if isinstance(label, bool) else bad).__name__
            raise DataError(f"{where}:{n}: the label must be a string, an integer or a list of them, got {got}")
        records.append((n, body, [str(x) for x in labels]))
    return records


def _fasttext(text: str) -> list[Record]:
    records = []
    for n, raw in enumerate(text.split("\n"), start=1):
        tokens = raw.split()
        if tokens:
            labels = [t[len(FASTTEXT_PREFIX):] for t in tokens if t.startswith(FASTTEXT_PREFIX)]
            body = " ".join(t for t in tokens if not t.startswith(FASTTEXT_PREFIX))
            records.append((n, body, labels))
    return records


def _label_first(text: str) -> list[Record]:
    records = []
    for n, raw in enumerate(text.split("\n"), start=1):
        parts = raw.split(None, 1)
        if parts:
            records.append((n, parts[1] if len(parts) > 1 else "", [parts[0]]))
    return records


def label_vocab(examples: Sequence[Example], *, multi_label: bool = False, where: str = "training data") -> Vocab:
    """The label vocabulary of training examples (no specials; most frequent first, ties by first occurrence).

    Raises:
        DataError: multi-class data with fewer than two classes, or multi-label data without any
            label (``WHERE: only one class ('pos') in the training data; a classifier needs two or more``).
    """
    vocab = Vocab.build([ex.labels for ex in examples], specials=(), unk=None)
    if not multi_label and len(vocab) < 2:
        shown = f"only one class ({vocab.itos[0]!r})" if len(vocab) else "no class"
        raise DataError(f"{where}: {shown} in the training data; a classifier needs two or more")
    if multi_label and not len(vocab):
        raise DataError(f"{where}: no label in the training data")
    return vocab


def bundled_ewt_genres(split: str) -> tuple[list[str], list[str]]:
    """The genre of every sentence of the bundled UD English EWT: demo data for text classification.

    Each sentence's text is its word forms joined by single spaces (the treebank's tokenisation) and
    its label the prefix of its ``sent_id`` (``weblog-blogspot.com_..._0001`` -> ``weblog``): one of
    :data:`EWT_GENRES`. Derived at load time from the CoNLL-U files the package ships (CC BY-SA 4.0;
    attribution in ``LICENSES/ud-english-ewt-SOURCE.md``), so no other file is needed.

    Class balance (sentences; the classes are imbalanced, so report macro-F1 beside accuracy; a model
    always answering ``email`` scores 0.30 / 0.26 / 0.29 accuracy)::

        split   answers  email  newsgroup  reviews  weblog   total
        train    2631    3770     1833      2725     1585    12544
        dev       419     523      274       554      231     2001
        test      438     606      284       535      214     2077

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.

    Returns:
        ``(texts, labels)``, two lists in file order.

    Raises:
        ConfigError: an unknown split. DataError: a missing bundled file (a broken installation).
    """
    if split not in UD_EWT_SPLITS:
        raise ConfigError(f"split: expected one of {', '.join(UD_EWT_SPLITS)}, got {split!r}")
    path = bundled_ud_ewt()[split]
    sentences = read_conllu(path)
    ids = [line.split("=", 1)[1].strip() for line in _lines(path, "tagged data") if line.startswith("# sent_id")]
    if len(ids) != len(sentences):
        raise DataError(f"{path}: {len(ids)} sent_id comments for {len(sentences)} sentences (a broken installation)")
    return [" ".join(s.tokens) for s in sentences], [sid.split("-", 1)[0] for sid in ids]
