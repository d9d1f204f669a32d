"""Sentence pairs for translation: TSV files, parallel files, the bundled Tatoeba subset, seeded splits.

Two input formats give the same list of ``(source, target)`` string pairs:

- a TSV file, one pair per line: ``source<TAB>target`` (:func:`read_tsv_pairs`);
- two parallel files, line ``i`` of one translating line ``i`` of the other (:func:`read_parallel`).

Each side is stripped of surrounding whitespace and otherwise kept as is (tokenisation happens later).
For evaluation against several references, a TSV line may hold more target columns
(``read_tsv_pairs(..., multi_target=True)``: one pair per target) and :func:`group_references` gathers
the targets of one source, from those columns or from repeated source lines as in Tatoeba.
A pair with a side longer than ``max_chars`` characters (default :data:`MAX_CHARS` = 400) is skipped
and counted in :attr:`PairsResult.skipped`, so that the caller can warn once with the count; every other
problem is a :class:`rnnkit.errors.DataError` with a one-line ``PATH:LINE: ...`` message::

    PATH:LINE: expected one tab (source<TAB>target), found none
    PATH:LINE: expected one tab (source<TAB>target), found 2
    PATH:LINE: empty source side                       (also: empty target side)
    PATH:LINE: empty line (parallel files need a sentence on every line)
    SRC: 120 lines but TGT has 119 (parallel files must align line by line)
    PATH: all 12 pairs have a side longer than 400 characters (nothing left to use)

plus those of :func:`rnnkit.data.files.read_lines` (missing, empty, binary, non-UTF-8 files).

Example::

    >>> result = read_tsv_pairs("pairs.tsv")  # doctest: +SKIP
    >>> if result.skipped: warn(f"skipped {result.skipped} over-long pairs")  # doctest: +SKIP
    >>> train, valid, test = split_pairs(result.pairs, seed=1, valid=0.05, test=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from torch import Tensor

from rnnkit.data.batching import pad_batch
from rnnkit.data.files import read_lines
from rnnkit.errors import DataError

__all__ = [
    "MAX_CHARS",
    "Pair",
    "PairBatch",
    "PairsResult",
    "bundled_tatoeba",
    "collate_pairs",
    "group_references",
    "read_parallel",
    "read_tsv_pairs",
    "split_pairs",
]

MAX_CHARS = 400
"""Default maximum length of one side of a pair, in characters (Python ``len`` of the stripped text)."""

Pair = tuple[str, str]

TATOEBA_DIR = "tatoeba-eng-fra"
TATOEBA_SPLITS = ("train", "valid", "test")


@dataclass
class PairsResult:
    """Pairs read from a file (or two), with the number of over-long pairs that were skipped.

    Attributes:
        pairs: ``(source, target)`` strings, stripped, in file order.
        skipped: how many pairs were left out because a side had more than ``max_chars`` characters.
        skipped_lines: 1-based line numbers of the first (at most 10) skipped pairs, for the warning.
        max_chars: the limit that was applied.
    """

    pairs: list[Pair]
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)
    max_chars: int = MAX_CHARS


def _check_max_chars(max_chars: int) -> None:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive int, got {max_chars!r}")


def _collect(
    numbered: list[tuple[int, str, str]], max_chars: int, where: str
) -> PairsResult:
    """Drop pairs with a side over ``max_chars`` (counting them); fail if nothing is left."""
    result = PairsResult(pairs=[], max_chars=max_chars)
    for line_no, src, tgt in numbered:
        if len(src) > max_chars or len(tgt) > max_chars:
            result.skipped += 1
            if len(result.skipped_lines) < 10:
                result.skipped_lines.append(line_no)
        else:
            result.pairs.append((src, tgt))
    if not result.pairs:
        raise DataError(
            f"{where}: all {result.skipped} pairs have a side longer than {max_chars} characters "
            "(nothing left to use)"
        )
    return result


def read_tsv_pairs(
    path: str | os.PathLike, *, max_chars: int = MAX_CHARS, what: str = "sentence pairs", multi_target: bool = False
) -> PairsResult:
    """Read ``source<TAB>target`` lines from a UTF-8 TSV file.

    Args:
        path: the TSV file: exactly one tab on every line, both sides non-empty after stripping.
        max_chars: pairs with a side longer than this many characters are skipped and counted.
        what: the file's role (``"training pairs"``), appended to read errors.
        multi_target: accept ``source<TAB>target1<TAB>target2...`` (several references): one pair per
            non-empty target column, in column order (:func:`group_references` joins them again).

    Returns:
        :class:`PairsResult` with the pairs in file order and the number of skipped pairs.

    Raises:
        DataError: ``PATH:LINE: ...`` for a line without exactly one tab or with an empty side, or one
            of :func:`rnnkit.data.files.read_lines`' errors; ``PATH: all N pairs ...`` if every pair is
            over-long.
    """
    _check_max_chars(max_chars)
    where = os.fspath(path)
    numbered = []
    for i, line in enumerate(read_lines(path, what=what), start=1):
        tabs = line.count("\t")
        if tabs != 1 and not (multi_target and tabs > 1):
            found = "none" if tabs == 0 else str(tabs)
            if not line.strip():
                raise DataError(f"{where}:{i}: empty line (expected source<TAB>target)")
            if multi_target:
                raise DataError(f"{where}:{i}: expected a tab (source<TAB>target[<TAB>target...]), found none")
            raise DataError(f"{where}:{i}: expected one tab (source<TAB>target), found {found}")
        src, *targets = (side.strip() for side in line.split("\t"))
        if not src:
            raise DataError(f"{where}:{i}: empty source side")
        targets = [tgt for tgt in targets if tgt] if multi_target else targets
        if not targets or not targets[0]:
            raise DataError(f"{where}:{i}: empty target side")
        numbered.extend((i, src, tgt) for tgt in targets)
    return _collect(numbered, max_chars, where)


def group_references(pairs: Sequence[Pair]) -> tuple[list[str], list[list[str]]]:
    """Gather the targets of each distinct source: the references for multi-reference BLEU/chrF.

    Tatoeba-style data repeats a source on several lines with different translations; scoring each line
    alone counts a correct translation as wrong against the other references. Sources keep their order of
    first appearance, references their input order; a target repeated for one source is kept once.

    Args:
        pairs: ``(source, target)`` pairs.

    Returns:
        ``(sources, references)``: the distinct sources and, aligned with them, each one's list of targets,
        ready for :func:`rnnkit.metrics.translation.corpus_scores`.

    Example::

        >>> group_references([("Hi .", "Salut ."), ("Run !", "Cours !"), ("Hi .", "Bonjour .")])
        (['Hi .', 'Run !'], [['Salut .', 'Bonjour .'], ['Cours !']])
    """
    grouped: dict[str, list[str]] = {}
    for src, tgt in pairs:
        refs = grouped.setdefault(src, [])
        if tgt not in refs:
            refs.append(tgt)
    return list(grouped), list(grouped.values())


def read_parallel(
    src_path: str | os.PathLike,
    tgt_path: str | os.PathLike,
    *,
    max_chars: int = MAX_CHARS,
    what: str = "sentence pairs",
) -> PairsResult:
    """Read two line-aligned UTF-8 files (line ``i`` of ``tgt_path`` translates line ``i`` of ``src_path``).

    Args:
        src_path: source sentences, one per line.
        tgt_path: target sentences, one per line, as many lines as ``src_path``.
        max_chars: pairs with a side longer than this many characters are skipped and counted.
        what: the files' role, appended to read errors (``"source of training pairs"``...).

    Returns:
        :class:`PairsResult`; ``skipped_lines`` are line numbers in both files.

    Raises:
        DataError: different line counts, an empty (whitespace-only) line in either file, every pair
            over-long, or one of :func:`rnnkit.data.files.read_lines`' errors.
    """
    _check_max_chars(max_chars)
    src_where, tgt_where = os.fspath(src_path), os.fspath(tgt_path)
    src_lines = read_lines(src_path, what=f"source of {what}")
    tgt_lines = read_lines(tgt_path, what=f"target of {what}")
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_where}: {len(src_lines)} lines but {tgt_where} has {len(tgt_lines)} "
            "(parallel files must align line by line)"
        )
    numbered = []
    for i, (src, tgt) in enumerate(zip(src_lines, tgt_lines), start=1):
        src, tgt = src.strip(), tgt.strip()
        for side, where in ((src, src_where), (tgt, tgt_where)):
            if not side:
                raise DataError(f"{where}:{i}: empty line (parallel files need a sentence on every line)")
        numbered.append((i, src, tgt))
    return _collect(numbered, max_chars, f"{src_where} and {tgt_where}")


def split_pairs(
    pairs: list[Pair], *, seed: int, valid: float, test: float
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split pairs into train/valid/test at random, keeping all pairs of one source sentence together.

    Many corpora (Tatoeba among them) give several translations of one source sentence; grouping by
    source keeps a test sentence from being seen in training with another translation. The distinct
    sources, in order of first appearance, are shuffled with ``random.Random(seed)``; the first
    ``round(test * n)`` go to test, the next ``round(valid * n)`` to valid, the rest to train. Within each
    split, pairs keep their input order. The same inputs and seed always give the same split.

    Args:
        pairs: ``(source, target)`` pairs.
        seed: seed of the shuffle.
        valid: fraction of the distinct sources for the validation split, in [0, 1).
        test: fraction of the distinct sources for the test split, in [0, 1); ``valid + test < 1``.

    Returns:
        ``(train, valid, test)`` lists of pairs.
    """
    for name, value in (("valid", valid), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"split_pairs: {name} must be a fraction in [0, 1), got {value}")
    if valid + test >= 1.0:
        raise ValueError(f"split_pairs: valid + test must be < 1, got {valid} + {test}")
    sources = list(dict.fromkeys(src for src, _ in pairs))  # distinct, in order of first appearance
    random.Random(seed).shuffle(sources)
    n_test, n_valid = round(test * len(sources)), round(valid * len(sources))
    split_of = {src: 2 for src in sources[:n_test]}
    split_of.update({src: 1 for src in sources[n_test : n_test + n_valid]})
    splits: tuple[list[Pair], list[Pair], list[Pair]] = ([], [], [])
    for pair in pairs:
        splits[split_of.get(pair[0], 0)].append(pair)
    return splits


def bundled_tatoeba() -> dict[str, Path]:
    """Paths of the bundled English→French Tatoeba subset: ``{"train": ..., "valid": ..., "test": ...}``.

    Each is a UTF-8 TSV file (``english<TAB>french``), readable with :func:`read_tsv_pairs`. The subset,
    its recipe and its license (CC BY 2.0 FR, attribution "www.manythings.org/anki and tatoeba.org") are
    described in ``rnnkit/resources/tatoeba-eng-fra/README.md``.

    Raises:
        DataError: if a file is missing (a broken installation).
    """
    folder = resources.files("rnnkit") / "resources" / TATOEBA_DIR
    paths = {split: Path(str(folder / f"{split}.tsv")) for split in TATOEBA_SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path}: bundled Tatoeba data is missing (reinstall rnnkit)")
    return paths


@dataclass
class PairBatch:
    """Padded tensors of a batch of id pairs, as :class:`rnnkit.models.seq2seq.Seq2Seq` takes them.

    Attributes:
        src: ``(B, S)`` source ids padded with ``pad_id``.
        src_lengths: ``(B,)`` source lengths (>= 1).
        tgt_in: ``(B, T)`` decoder inputs ``<bos> y_1 ... y_n``, padded; T = longest target + 1.
        tgt_out: ``(B, T)`` targets ``y_1 ... y_n <eos>``, padded with ``pad_id``.
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor


def collate_pairs(
    src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], *, pad_id: int, bos_id: int, eos_id: int
) -> PairBatch:
    """Pad a batch of tokenised pairs (ids without ``<bos>``/``<eos>``) for teacher forcing.

    Example::

        >>> b = collate_pairs([[5, 6], [7]], [[8], [9, 10]], pad_id=0, bos_id=2, eos_id=3)
        >>> b.tgt_in.tolist(), b.tgt_out.tolist()
        ([[2, 8, 0], [2, 9, 10]], [[8, 3, 0], [9, 10, 3]])

    Raises:
        ValueError: the two lists differ in length, or a source is empty (the encoder needs a token).
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"collate_pairs: {len(src_ids)} sources but {len(tgt_ids)} targets")
    empty = [i for i, ids in enumerate(src_ids) if len(ids) == 0]
    if empty:
        raise ValueError(f"collate_pairs: empty source sequences at batch positions {empty[:10]}")
    src, src_lengths = pad_batch(src_ids, pad_id)
    tgt_in, _ = pad_batch([[bos_id, *ids] for ids in tgt_ids], pad_id)
    tgt_out, _ = pad_batch([[*ids, eos_id] for ids in tgt_ids], pad_id)
    return PairBatch(src, src_lengths, tgt_in, tgt_out)
