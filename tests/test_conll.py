"""CoNLL-U and column-file readers, writers, format detection, errors, the bundled UD English EWT."""

from __future__ import annotations

import gzip
import io

import pytest

from rnnkit.data.conll import (
    Sentence,
    bundled_ud_ewt,
    is_conllu,
    read_columns,
    read_conllu,
    read_plain,
    read_tagged,
    write_conll,
    write_conllu,
)
from rnnkit.errors import ConfigError, DataError


def _row(i, form, upos, xpos="_"):
    return "\t".join([str(i), form, form.lower(), upos, xpos, "_", "0", "root", "_", "_"])


CONLLU = "\n".join(
    [
        "# newdoc id = d1",
        "# sent_id = 1",
        "# text = I don't know.",
        _row(1, "I", "PRON", "PRP"),
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        _row(2, "do", "AUX", "VBP"),
        _row(3, "n't", "PART", "RB"),
        _row(4, "know", "VERB", "VB"),
        "4.1\tknows\tknow\tVERB\tVBZ\t_\t_\t_\t0:root\t_",
        _row(5, ".", "PUNCT", "."),
        "",
        "# sent_id = 2",
        _row(1, "Hi", "INTJ", "UH"),
        "",
        "",
        "# a comment-only block gives no sentence",
        "",
    ]
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_conllu_skips_ranges_empty_nodes_and_comments(tmp_path):
    path = _write(tmp_path, "a.conllu", CONLLU + "\n")
    assert read_conllu(path, "upos") == [
        (["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"]),
        (["Hi"], ["INTJ"]),
    ]
    xpos = read_conllu(path, "XPOS")
    assert [s.labels for s in xpos] == [["PRP", "VBP", "RB", "VB", "."], ["UH"]]
    assert isinstance(xpos[0], Sentence) and xpos[0].tokens[0] == "I"


def test_read_conllu_gzip_and_no_final_blank_line(tmp_path):
    path = tmp_path / "a.conllu.gz"
    path.write_bytes(gzip.compress(CONLLU.rstrip("\n").encode("utf-8")))
    assert read_conllu(path) == read_conllu(_write(tmp_path, "b.conllu", CONLLU))


def test_read_conllu_errors(tmp_path):
    bad_cols = _write(tmp_path, "c.conllu", _row(1, "a", "X") + "\n1\tb\tb\tX\n")
    with pytest.raises(DataError, match=r"c\.conllu:2: expected 10 tab-separated CoNLL-U columns, got 4$"):
        read_conllu(bad_cols)
    bad_id = _write(tmp_path, "d.conllu", "# x\n" + _row("x1", "a", "X") + "\n")
    with pytest.raises(DataError, match=r"d\.conllu:2: token id 'x1' is not a whole number"):
        read_conllu(bad_id)
    with pytest.raises(ConfigError, match=r"^column: 'lemma' is not a CoNLL-U label column"):
        read_conllu(bad_id, "lemma")
    with pytest.raises(DataError, match=r"e\.conllu: no sentences found"):
        read_conllu(_write(tmp_path, "e.conllu", "# only a comment\n"))
    with pytest.raises(DataError, match=r"f\.conllu: file is empty"):
        read_conllu(_write(tmp_path, "f.conllu", "\n\n"))
    with pytest.raises(DataError, match=r"missing\.conllu: no such file"):
        read_conllu(tmp_path / "missing.conllu")
    binary = tmp_path / "g.conllu"
    binary.write_bytes(b"1\ta\x00b\n")
    with pytest.raises(DataError, match=r"g\.conllu:1: binary file"):
        read_conllu(binary)
    broken_gz = tmp_path / "h.conllu.gz"
    broken_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"h\.conllu\.gz: not a valid gzip file"):
        read_conllu(broken_gz)
    latin1_gz = tmp_path / "i.conllu.gz"
    latin1_gz.write_bytes(gzip.compress(("# x\n" + _row(1, "caf\xe9", "NOUN") + "\n").encode("latin-1")))
    with pytest.raises(DataError, match=r"i\.conllu\.gz:2: not valid UTF-8"):
        read_conllu(latin1_gz)


COLUMNS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_read_columns(tmp_path):
    path = _write(tmp_path, "a.txt", COLUMNS)
    assert read_columns(path) == [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert read_columns(path, 1)[1].labels == ["NNP", "NNP"]
    assert read_columns(path, -2)[0].labels == ["B-NP", "B-VP", "B-NP", "I-NP"]
    assert read_columns(path, "2") == read_columns(path, -2)  # a flag value arrives as a string
    tabs = _write(tmp_path, "b.txt", "a\tX\n\n\n\nb\tY\r\nc\tZ")  # tabs, extra blanks, CRLF, no final newline
    assert read_columns(tabs) == [(["a"], ["X"]), (["b", "c"], ["Y", "Z"])]


def test_read_columns_errors(tmp_path):
    path = _write(tmp_path, "a.txt", COLUMNS.replace("call NN I-NP O", "call NN O"))
    with pytest.raises(DataError, match=r"a\.txt:6: expected 4 columns like line 3, got 3$"):
        read_columns(path)
    with pytest.raises(DataError, match=r"b\.txt:3: 4 columns, but column 4 was asked for"):
        read_columns(_write(tmp_path, "b.txt", COLUMNS), 4)
    with pytest.raises(DataError, match=r"a\.txt:3: 4 columns, but column -5 was asked for"):
        read_columns(_write(tmp_path, "a.txt", COLUMNS), -5)
    with pytest.raises(DataError, match=r"c\.txt:1: expected a token and a label, got 1 column"):
        read_columns(_write(tmp_path, "c.txt", "lonely\n"))
    with pytest.raises(ConfigError, match=r"^column: 'upos' is not a column number"):
        read_columns(path, "upos")
    with pytest.raises(ConfigError, match=r"^column: 0 is the token column"):
        read_columns(path, 0)
    with pytest.raises(DataError, match=r"d\.txt: no sentences found"):
        read_columns(_write(tmp_path, "d.txt", "-DOCSTART- O\n\n"))


def test_read_tagged_dispatches_on_name_and_content(tmp_path):
    conllu_named = _write(tmp_path, "a.conllu", CONLLU)
    conllu_content = _write(tmp_path, "a.txt", CONLLU)
    columns = _write(tmp_path, "b.txt", COLUMNS)
    assert is_conllu(conllu_named) and is_conllu(conllu_content) and not is_conllu(columns)
    assert read_tagged(conllu_content) == read_conllu(conllu_named, "upos")
    assert read_tagged(conllu_content, "xpos") == read_conllu(conllu_named, "xpos")
    assert read_tagged(columns) == read_columns(columns, -1)
    assert read_tagged(columns, "1") == read_columns(columns, 1)
    msg = r"^column: 'upos' needs a CoNLL-U file, but .*b\.txt is a column file"
    with pytest.raises(ConfigError, match=msg):
        read_tagged(columns, "upos")
    with pytest.raises(ConfigError, match=r"^column: '3' is not a CoNLL-U label column .* for .*a\.conllu"):
        read_tagged(conllu_named, 3)


def test_read_plain():
    lines = ["The cat  sat .", "", "   ", "\tHi\t!"]
    assert read_plain(lines) == [["The", "cat", "sat", "."], ["Hi", "!"]]


def test_write_conll_round_trip(tmp_path):
    sents = [Sentence(["a", "b"], ["X", "Y"]), Sentence(["c"], ["Z"])]
    buf = io.StringIO()
    write_conll(sents, buf)
    assert buf.getvalue() == "a\tX\nb\tY\n\nc\tZ\n\n"
    assert read_columns(_write(tmp_path, "out.txt", buf.getvalue())) == sents
    with pytest.raises(ValueError, match="sentence 0: 2 tokens but 1 labels"):
        write_conll([(["a", "b"], ["X"])], io.StringIO())


def test_write_conllu_minimal_round_trip(tmp_path):
    sents = [Sentence(["a", "b"], ["NOUN", "VERB"]), Sentence(["c"], ["X"])]
    for column in ("upos", "xpos"):
        buf = io.StringIO()
        write_conllu(sents, buf, column)
        assert read_conllu(_write(tmp_path, "out.conllu", buf.getvalue()), column) == sents
    assert buf.getvalue().splitlines()[0] == "1\ta\t_\t_\tNOUN\t_\t_\t_\t_\t_"


def test_write_conllu_keeps_source_layout(tmp_path):
    source = _write(tmp_path, "src.conllu", CONLLU)
    preds = [Sentence(s.tokens, [f"P{i}" for i in range(len(s.tokens))]) for s in read_conllu(source)]
    buf = io.StringIO()
    write_conllu(preds, buf, "upos", source=source)
    out = buf.getvalue()
    assert read_conllu(_write(tmp_path, "out.conllu", out), "upos") == preds
    assert read_conllu(_write(tmp_path, "out.conllu", out), "xpos") == read_conllu(source, "xpos")
    original, written = CONLLU.splitlines(), out.splitlines()
    assert len(written) == len(original)
    for a, b in zip(original, written):  # only the UPOS field of token lines may differ
        if a.split("\t")[0].isdigit():
            assert a.split("\t")[:3] + a.split("\t")[4:] == b.split("\t")[:3] + b.split("\t")[4:]
        else:
            assert a == b
    with pytest.raises(ValueError, match="do not match the sentences"):
        write_conllu(preds[:1], io.StringIO(), source=source)


def test_bundled_ud_ewt():
    paths = bundled_ud_ewt()
    assert sorted(paths) == ["dev", "test", "train"]
    assert all(p.is_file() and p.name.endswith(".conllu.gz") for p in paths.values())
    assert (paths["dev"].parent / "LICENSE.txt").read_text().startswith("Attribution-ShareAlike 4.0")
    dev = read_conllu(paths["dev"])  # gzip read transparently; counts as in SOURCE.md
    assert len(dev) == 2001 and sum(len(s.tokens) for s in dev) == 25147
    assert len({lab for s in dev for lab in s.labels}) == 17


@pytest.mark.parametrize("line, column, name", [
    ("1\t\tthe\tDET\tDT\t_\t0\troot\t_\t_", "upos", "FORM"),
    ("1\t \tthe\tDET\tDT\t_\t0\troot\t_\t_", "upos", "FORM"),
    ("1\tThe\tthe\t\tDT\t_\t0\troot\t_\t_", "upos", "UPOS"),
    ("1\tThe\tthe\tDET\t\t_\t0\troot\t_\t_", "xpos", "XPOS"),
])
def test_conllu_empty_token_or_label_is_an_error(tmp_path, line, column, name):
    p = tmp_path / "e.conllu"
    p.write_text(f"1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_conllu(p, column)
    assert str(info.value) == f"{p}:3: empty {name} column (CoNLL-U writes _ for no value)"


def test_gzipped_utf16_conllu_is_named_with_the_zcat_command(tmp_path):
    p = tmp_path / "w.conllu.gz"
    p.write_bytes(gzip.compress("1\tThe\tthe\tDET\tDT\t_\t0\troot\t_\t_\n".encode("utf-16")))
    with pytest.raises(DataError) as info:
        read_conllu(p)
    assert str(info.value) == (f"{p}: UTF-16 (little-endian) text, not UTF-8; convert it: zcat {p} | iconv -f "
                               "UTF-16LE -t UTF-8 > NEW (tagged data)")
