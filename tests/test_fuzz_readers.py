"""Property-based tests of the file readers: whatever bytes a file holds, a reader returns a result that
keeps its documented invariants or raises an :class:`~rnnkit.errors.RnnkitError` whose message is one line
naming the file; never another exception.

Inputs are random bytes, random text in several encodings, text built from each format's own characters
(tabs, ``#``, token ids, ``=``, numbers...) and mutations of valid files. Deterministic (``derandomize``)
and without an example database, so CI runs the same examples every time, in a few seconds.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data.conll import is_conllu, read_columns, read_conllu
from rnnkit.data.files import read_lines, read_text
from rnnkit.data.pairs import read_parallel, read_tsv_pairs
from rnnkit.data.vectors import load_word_vectors
from rnnkit.errors import RnnkitError
from rnnkit.plot import read_metrics
from rnnkit.tasks.lm import LMConfig
from rnnkit.tasks.seq2seq import Seq2SeqTaskConfig
from rnnkit.train.config import build_config, load_config_file

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def check_error(e: BaseException, *paths: Path) -> None:
    """An rnnkit error with a one-line message that names (one of) the file(s)."""
    assert isinstance(e, RnnkitError), f"{type(e).__name__}: {e}"
    msg = str(e)
    assert len(msg.splitlines()) == 1, repr(msg)
    assert any(os.fspath(p) in msg for p in paths), msg


def outcome(fn, *args, paths, **kwargs):
    """``fn(*args, **kwargs)``, or None after checking that it failed the documented way."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the property is about which exceptions escape
        check_error(e, *paths)
        return None


def encoded(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Text in one of several encodings (unencodable characters replaced), or raw bytes."""
    return st.one_of(
        st.tuples(text, st.sampled_from(ENCODINGS)).map(lambda t: t[0].encode(t[1], errors="replace")),
        st.binary(max_size=300),
    )


@st.composite
def mutated(draw, valid: str) -> str:
    """``valid`` with a few characters deleted, duplicated or replaced by a format character."""
    text = list(valid)
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(("delete", "duplicate", "replace")))
        if op == "delete":
            del text[i]
        elif op == "duplicate":
            text.insert(i, text[i])
        else:
            text[i] = draw(st.sampled_from(["\t", "\n", " ", "#", "-", ".", "0", "\r", "\x00", "é", "_", "="]))
    return "".join(text)


def lines_of(alphabet: st.SearchStrategy[str], max_lines: int = 12) -> st.SearchStrategy[str]:
    line = st.lists(alphabet, max_size=12).map("".join)
    return st.lists(line, max_size=max_lines).map("\n".join)


# --- plain text ---------------------------------------------------------------------------------------

@FUZZ
@given(data=encoded(st.text(max_size=100)))
def test_read_text(folder, data):
    path = write(folder, "text.txt", data)
    text = outcome(read_text, path, paths=[path])
    if text is not None:
        assert text.strip() and "\r\n" not in text and not text.startswith("\ufeff")
        lines = read_lines(path)
        assert lines == text.split("\n")[: len(lines)] and len(lines) >= 1


# --- CoNLL-U and column files -------------------------------------------------------------------------

CONLLU = ("# sent_id = 1\n1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
          "2\tcat\tcat\tNOUN\tNN\t_\t0\troot\t_\t_\n2.1\tx\t_\t_\t_\t_\t_\t_\t_\t_\n\n"
          "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n")
COLUMNS = "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
TAGGED_CHARS = st.sampled_from(["\t", "\t", "\n", "\n\n", " ", "#", "1", "2", "3", "-", ".", "_", "a", "B", "O",
                                "é", "\r", "-DOCSTART-"])


def check_sentences(sentences) -> None:
    assert sentences
    for s in sentences:
        assert s.tokens and len(s.tokens) == len(s.labels)
        for field in (*s.tokens, *s.labels):
            assert field and "\t" not in field and "\n" not in field


CONLLU_FIELD = st.sampled_from(["", "1", "2", "2-3", "4.1", "x", "_", " ", "#", "NOUN", "é", "1-"])
CONLLU_LINE = st.tuples(st.sampled_from(["1", "2", "3-4", "5.1", "x"]), st.lists(CONLLU_FIELD, min_size=8, max_size=10)
                        ).map(lambda t: "\t".join([t[0], *t[1]]))
TAGGED = st.one_of(encoded(lines_of(TAGGED_CHARS)), mutated(CONLLU).map(str.encode), mutated(COLUMNS).map(str.encode),
                   st.lists(st.one_of(CONLLU_LINE, st.just("")), max_size=6).map(lambda ls: "\n".join(ls).encode()))


@settings(FUZZ, max_examples=300)
@given(data=TAGGED, column=st.sampled_from(["upos", "xpos"]))
def test_read_conllu(folder, data, column):
    path = write(folder, "tagged.conllu", data)
    sentences = outcome(read_conllu, path, column, paths=[path])
    if sentences is not None:
        check_sentences(sentences)


@FUZZ
@given(data=TAGGED, column=st.sampled_from([-1, 1, 2, 3, -2]))
def test_read_columns_and_is_conllu(folder, data, column):
    path = write(folder, "tagged.txt", data)
    sentences = outcome(read_columns, path, column, paths=[path])
    if sentences is not None:
        check_sentences(sentences)
    assert outcome(is_conllu, path, paths=[path]) in (True, False, None)


# --- sentence pairs -----------------------------------------------------------------------------------

PAIR_CHARS = st.sampled_from(["\t", "\n", " ", "a", "b", "É", "\r", "\u00a0", "\u3000", "."])


def check_pairs(result, max_chars: int) -> None:
    assert result.pairs
    for pair in result.pairs:
        for side in pair:
            assert side and side == side.strip() and len(side) <= max_chars
            assert "\t" not in side and "\n" not in side


@FUZZ
@given(data=st.one_of(encoded(lines_of(PAIR_CHARS)), mutated("a b\tA B\nc\tC\n").map(str.encode)),
       max_chars=st.integers(1, 8))
def test_read_tsv_pairs(folder, data, max_chars):
    path = write(folder, "pairs.tsv", data)
    result = outcome(read_tsv_pairs, path, max_chars=max_chars, paths=[path])
    if result is not None:
        check_pairs(result, max_chars)


@FUZZ
@given(src=encoded(lines_of(PAIR_CHARS, 4)), tgt=encoded(lines_of(PAIR_CHARS, 4)), max_chars=st.integers(1, 8))
def test_read_parallel(folder, src, tgt, max_chars):
    s, t = write(folder, "src.txt", src), write(folder, "tgt.txt", tgt)
    result = outcome(read_parallel, s, t, max_chars=max_chars, paths=[s, t])
    if result is not None:
        check_pairs(result, max_chars)


# --- metrics.jsonl ------------------------------------------------------------------------------------

METRICS_LINE = st.fixed_dictionaries({}, optional={
    "split": st.sampled_from(["train", "valid", "test", 3]),
    "step": st.one_of(st.integers(-1, 10), st.floats(), st.text(max_size=2), st.none(), st.booleans()),
    "loss": st.one_of(st.floats(), st.integers(), st.text(max_size=2), st.none()),
}).map(lambda d: json.dumps(d))


@FUZZ
@given(data=st.one_of(st.lists(st.one_of(METRICS_LINE, st.sampled_from(["", "[1]", "{", "nul\x00"])), max_size=5)
                      .map(lambda ls: "\n".join(ls).encode()), encoded(st.text(max_size=60))))
def test_read_metrics(folder, data):
    path = write(folder, "metrics.jsonl", data)
    records = outcome(read_metrics, path, paths=[path])
    for rec in records or ():
        assert isinstance(rec, dict)
        if rec.get("split") in ("train", "valid") and rec.get("loss") is not None:
            assert all(isinstance(rec[k], (int, float)) and not isinstance(rec[k], bool) for k in ("step", "loss"))


# --- config files -------------------------------------------------------------------------------------

FIELDS = ["hidden", "lr", "level", "cutoffs", "time_budget", "eval_every", "tie_weights", "max_vocab", "dropout",
          "unknown-field"]
VALUES = st.one_of(
    st.integers(-3, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.one_of(st.integers(-2, 10**25), st.floats(), st.sampled_from([math.inf, -math.inf, math.nan])),
             max_size=3).map(lambda xs: "[" + ", ".join(repr(x) for x in xs) + "]"),
    st.sampled_from(["true", "no", '"word"', '"10m"', "[1, 2]", "[inf]", "[1.5]", "[[1]]", "{a = 1}", "null", '""',
                     "'x'", "2024-01-01", "[]", "nan", "-inf", "1e999", '"none"', "~", "&a [1]", "*a", "!!set {}"]),
)


JUNK = encoded(lines_of(st.sampled_from(["=", ":", " ", "[", "]", "{", "}", "-", "hidden", "'", '"', "#", "1", "\t",
                                            "&", "*", "\n  "])))


def check_config_file(path: Path) -> None:
    values = outcome(load_config_file, path, paths=[path])
    if values is None:
        return
    assert isinstance(values, dict) and all(isinstance(k, str) for k in values)
    for cls in (LMConfig, Seq2SeqTaskConfig):
        cfg = outcome(build_config, cls, values, source=str(path), paths=[path])
        if cfg is not None:
            assert isinstance(cfg, cls)
            assert cfg.eval_every >= 0 and cfg.lr > 0
            assert cfg.time_budget is None or (math.isfinite(cfg.time_budget) and cfg.time_budget > 0)


@FUZZ
@given(suffix=st.sampled_from([".toml", ".yaml"]), raw=JUNK)
def test_config_files(folder, suffix, raw):
    check_config_file(write(folder, "config" + suffix, raw))


@FUZZ
@given(suffix=st.sampled_from([".toml", ".yaml"]), value=VALUES)
def test_config_values_of_every_field(folder, suffix, value):
    sep = " = " if suffix == ".toml" else ": "
    for name in FIELDS:
        check_config_file(write(folder, "config" + suffix, f"{name}{sep}{value}\n".encode()))


# --- word vectors -------------------------------------------------------------------------------------

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
                    st.sampled_from(["1", "-0.5", "1e39", "nan", "x", "", "0x10", "1_0", "١"]))


@st.composite
def vector_text(draw) -> str:
    dim = draw(st.integers(1, 3))
    header = f"{draw(st.integers(0, 4))} {draw(st.integers(0, 4))}\n" if draw(st.booleans()) else ""
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        word = draw(st.sampled_from(["the", "The", "cat", "dog", "", "x"]))
        n = dim if draw(st.integers(0, 4)) else draw(st.integers(0, 4))
        rows.append(" ".join([word, *(draw(NUMBERS) for _ in range(n))]))
    return header + "\n".join(rows) + "\n"


@FUZZ
@given(data=st.one_of(vector_text().map(str.encode), encoded(lines_of(st.sampled_from(
    [" ", "\n", "the", "1", "-", ".", "e", "nan", "\t"])))))
def test_word_vectors(folder, data):
    path = write(folder, "vectors.txt", data)
    words = ["<pad>", "the", "Cat", "dog"]
    result = outcome(load_word_vectors, path, words, paths=[path])
    if result is not None:
        vectors, found = result
        assert vectors.shape[0] == len(words) and vectors.shape[1] >= 1 and found.shape == (len(words),)
        assert vectors.isfinite().all()
        assert (vectors[~found] == 0).all()
