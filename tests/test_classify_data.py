"""rnnkit.data.classify: labelled-text readers, their one-line errors, the label vocabulary, the EWT genres;
and rnnkit.data.files.read_text with an encoding."""

from __future__ import annotations

from collections import Counter

import pytest

from rnnkit.data.classify import (
    EWT_GENRES,
    Example,
    bundled_ewt_genres,
    detect_format,
    label_vocab,
    read_classified,
)
from rnnkit.data.files import read_text
from rnnkit.errors import ConfigError, DataError, EncodingError


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding=encoding)
    return path


def _error(exc, fn, *args, **kw) -> str:
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_csv_header_names_quoted_commas_and_newlines(tmp_path):
    path = _write(tmp_path, "d.csv", 'id,text,label\n1,"hello, world",pos\n2,"two\nlines, ""quoted""",neg\n'
                                     '3,plain,pos\n')
    data = read_classified(path, text_column="text", label_column="label")
    assert data.examples == [
        Example("hello, world", ("pos",), 2),
        Example('two\nlines, "quoted"', ("neg",), 3),
        Example("plain", ("pos",), 5),
    ]
    assert data.empty == []


def test_tsv_without_header_by_index_quotes_are_literal(tmp_path):
    path = _write(tmp_path, "d.tsv", '" the emperor \'s new clothes "\t1\nnot so\t0\n\n')
    data = read_classified(path, text_column=0, label_column="1")  # a digit string is an index
    assert [(e.text, e.labels, e.line) for e in data.examples] == [
        ('" the emperor \'s new clothes "', ("1",), 1), ("not so", ("0",), 2)]
    # header=True with indices skips the first row; negative indices count from the end
    data = read_classified(path, text_column=0, label_column=-1, header=True)
    assert [e.text for e in data.examples] == ["not so"]


def test_explicit_format_and_delimiter_override_the_name(tmp_path):
    path = _write(tmp_path, "d.data", "label;text\nx;a b\ny;c\n")
    data = read_classified(path, format="csv", delimiter=";", text_column="text", label_column="label")
    assert [(e.text, e.labels) for e in data.examples] == [("a b", ("x",)), ("c", ("y",))]
    assert detect_format("a.TSV") == "tsv" and detect_format("a.ft") == "fasttext"
    assert detect_format("a.txt") == "fasttext" and detect_format("a.jsonl") == "jsonl"
    assert detect_format("a.txt", "label-first") == "label-first"
    msg = _error(ConfigError, detect_format, "a.data")
    assert msg.startswith("format: cannot tell the format of a.data from its name (.tsv (tsv), .csv (csv)")
    assert _error(ConfigError, detect_format, "a.csv", "xml") == (
        "format: expected one of tsv, csv, fasttext, jsonl, label-first, got 'xml'")


def test_header_without_the_named_column(tmp_path):
    path = _write(tmp_path, "d.tsv", "text\tlabel\nhi\tx\n")
    assert _error(DataError, read_classified, path, text_column="sentence", label_column="label") == (
        f"{path}:1: the header has no column 'sentence' (columns: text, label)")


def test_row_missing_the_label_or_text_column(tmp_path):
    path = _write(tmp_path, "d.tsv", "hi\tx\nlonely\n")
    assert _error(DataError, read_classified, path, text_column=0, label_column=1) == (
        f"{path}:2: the row has 1 field, so no label column (1)")
    path = _write(tmp_path, "h.csv", "label,text\nx,hi\ny\n")
    assert _error(DataError, read_classified, path, text_column="text", label_column="label") == (
        f"{path}:3: the row has 1 field, so no text column ('text')")


def test_columns_are_required_and_checked_for_delimited_files(tmp_path):
    path = _write(tmp_path, "d.tsv", "hi\tx\n")
    assert _error(ConfigError, read_classified, path, label_column=1) == (
        "text_column: required for tsv/csv files (a header name or a 0-based index)")
    assert _error(ConfigError, read_classified, path, text_column="text", label_column=1, header=False) == (
        "text_column/label_column: a column given by name needs a header (header=False)")


def test_csv_with_an_unclosed_quote_names_the_line_it_opens(tmp_path):
    path = _write(tmp_path, "d.csv", 'a,x\n"b\nc",y\n"never closed,z\nmore\n')
    assert _error(DataError, read_classified, path, text_column=0, label_column=1) == (
        f"{path}:4: unclosed quote: the quoted field starting on this line never ends")
    path = _write(tmp_path, "m.csv", 'a,x\n"b"c,y\n')
    assert _error(DataError, read_classified, path, text_column=0, label_column=1) == (
        f"{path}:2: malformed CSV (',' expected after '\"')")


def test_empty_texts_are_skipped_and_counted_empty_labels_are_errors(tmp_path):
    path = _write(tmp_path, "d.tsv", "good\tx\n  \ty\nalso good\tx\n\tz\n")
    data = read_classified(path, text_column=0, label_column=1)
    assert [e.text for e in data.examples] == ["good", "also good"]
    assert data.empty == [2, 4]
    path = _write(tmp_path, "l.tsv", "good\tx\nno label\t \n")
    assert _error(DataError, read_classified, path, text_column=0, label_column=1) == f"{path}:2: empty label"
    path = _write(tmp_path, "e.tsv", "\tx\n")
    assert _error(DataError, read_classified, path, text_column=0, label_column=1) == (
        f"{path}: no examples found (classification data)")


def test_multi_label_field_and_coarse_labels(tmp_path):
    path = _write(tmp_path, "d.csv", "text,labels\nfunny and sad,funny|sad\nplain,\nsad,sad|sad\n")
    data = read_classified(path, text_column="text", label_column="labels", label_sep="|", multi_label=True)
    assert [e.labels for e in data.examples] == [("funny", "sad"), (), ("sad",)]
    msg = _error(DataError, read_classified, path, text_column="text", label_column="labels", label_sep="|")
    assert msg == f"{path}:2: 2 labels (funny, sad) in single-label data (multi-label data needs multi_label)"


def test_fasttext_format(tmp_path):
    path = _write(tmp_path, "d.txt", "__label__pos __label__funny what  a film\n\nboring __label__neg movie\n")
    data = read_classified(path, multi_label=True)
    assert data.examples == [Example("what a film", ("pos", "funny"), 1), Example("boring movie", ("neg",), 3)]
    path = _write(tmp_path, "one.ft", "__label__pos great\nno label here\n")
    assert _error(DataError, read_classified, path) == f"{path}:2: empty label"
    assert _error(ConfigError, read_classified, path, text_column=1) == (
        f"text_column and label_column are for tsv/csv/jsonl files, not fasttext ({path})")


def test_json_lines(tmp_path):
    path = _write(tmp_path, "d.jsonl", '{"text": "a b", "label": "x"}\n\n{"text": "c", "label": 3}\n'
                                       '{"text": "d", "label": ["x", "y"]}\n')
    data = read_classified(path, multi_label=True)
    assert [(e.text, e.labels, e.line) for e in data.examples] == [
        ("a b", ("x",), 1), ("c", ("3",), 3), ("d", ("x", "y"), 4)]
    path = _write(tmp_path, "k.jsonl", '{"review": "fine", "stars": "5"}\n')
    assert read_classified(path, text_column="review", label_column="stars").examples[0].labels == ("5",)
    cases = {
        '{"text": "a"}': "no key 'label' in the JSON object (keys: text)",
        "[1, 2]": "not a JSON object (got list)",
        "{oops": "not a JSON object (Expecting property name enclosed in double quotes)",
        '{"text": "a", "label": {"x": 1}}': "the label must be a string, an integer or a list of them, got dict",
        '{"text": "a", "label": true}': "the label must be a string, an integer or a list of them, got bool",
        '{"text": 5, "label": "x"}': "the text must be a string, got int",
    }
    assert _error(ConfigError, read_classified, path, text_column=0) == "text_column: JSON lines take a key name, got 0"
    assert _error(ConfigError, read_classified, path, header=True) == (
        f"header and delimiter are for tsv/csv files, not jsonl ({path})")
    for line, message in cases.items():
        bad = _write(tmp_path, "bad.jsonl", '{"text": "ok", "label": "x"}\n' + line + "\n")
        assert _error(DataError, read_classified, bad) == f"{bad}:2: {message}"


def test_label_first_trec_with_coarse_labels_and_latin1(tmp_path):
    raw = "DESC:manner How did serfdom develop ?\nLOC:city Where is Caf\xe9 Paris ?\nNUM:dist How far ?\n"
    path = _write(tmp_path, "train.label", raw, encoding="latin-1")
    msg = _error(EncodingError, read_classified, path, format="label-first")
    assert msg == (f"{path}:2: not valid UTF-8 (byte 0xe9 at column 22) (classification data); if the file has "
                   "another encoding, name it with encoding= (--encoding), e.g. latin-1")
    data = read_classified(path, format="label-first", encoding="latin-1", coarse_sep=":")
    assert [(e.text, e.labels) for e in data.examples] == [
        ("How did serfdom develop ?", ("DESC",)), ("Where is Café Paris ?", ("LOC",)), ("How far ?", ("NUM",))]
    fine = read_classified(path, format="label-first", encoding="latin-1")
    assert fine.examples[0].labels == ("DESC:manner",)


def test_read_text_encodings(tmp_path):
    path = _write(tmp_path, "u16.tsv", "héllo\tx\nwörld\ty\n", encoding="utf-16")
    assert read_text(path, encoding="utf-16") == "héllo\tx\nwörld\ty\n"
    assert read_classified(path, text_column=0, label_column=1, encoding="utf-16").examples[1].text == "wörld"
    # 0x81 is undefined in cp1252; line 2, 4th byte of the line
    path = _write(tmp_path, "cp.txt", b"ok\nab\xe9\x81\n")
    assert _error(EncodingError, read_text, path, encoding="cp1252") == (
        f"{path}:2: not valid cp1252 (byte 0x81 at column 4)")
    # UTF-16 without its second byte: the message still names line and column
    path = _write(tmp_path, "odd.txt", "a\nbc".encode("utf-16-le") + b"\x00\xd8")
    assert _error(EncodingError, read_text, path, encoding="utf-16-le") == (
        f"{path}:2: not valid utf-16-le (byte 0x00 at column 5)")
    assert _error(ConfigError, read_text, path, encoding="klingon") == "encoding: unknown text encoding 'klingon'"
    path = _write(tmp_path, "nul.txt", "a\nb\x00\n", encoding="utf-16")
    assert _error(DataError, read_text, path, encoding="utf-16") == f"{path}:2: binary file (NUL byte)"


def test_label_vocab_and_single_class(tmp_path):
    examples = [Example("a", ("x",), 1), Example("b", ("y",), 2), Example("c", ("y",), 3)]
    assert label_vocab(examples).itos == ["y", "x"]
    assert _error(DataError, label_vocab, examples[:1], where="t.tsv") == (
        "t.tsv: only one class ('x') in the training data; a classifier needs two or more")
    assert label_vocab(examples[:1], multi_label=True).itos == ["x"]
    assert _error(DataError, label_vocab, [Example("a", (), 1)], multi_label=True) == (
        "training data: no label in the training data")


def test_bundled_ewt_genres_balance():
    texts, labels = bundled_ewt_genres("dev")
    assert len(texts) == len(labels) == 2001
    assert Counter(labels) == {"answers": 419, "email": 523, "newsgroup": 274, "reviews": 554, "weblog": 231}
    assert set(labels) == set(EWT_GENRES)
    assert all(t and t == " ".join(t.split()) for t in texts)
    assert _error(ConfigError, bundled_ewt_genres, "valid") == "split: expected one of train, dev, test, got 'valid'"
