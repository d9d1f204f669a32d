"""Sentence-pair readers: TSV and parallel files, file:line errors, over-long pairs, splits, bundled data."""

from __future__ import annotations

import re

import pytest

from rnnkit.data.pairs import (
    MAX_CHARS,
    bundled_tatoeba,
    collate_pairs,
    group_references,
    read_parallel,
    read_tsv_pairs,
    split_pairs,
)
from rnnkit.errors import DataError


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_tsv_reads_pairs_in_order_and_strips_sides(tmp_path):
    path = write(tmp_path / "p.tsv", "Hello .\tBonjour .\n  I am cold \t J'ai froid\r\nÇa va ?\tça va\n")
    result = read_tsv_pairs(path)
    assert result.pairs == [("Hello .", "Bonjour ."), ("I am cold", "J'ai froid"), ("Ça va ?", "ça va")]
    assert result.skipped == 0 and result.skipped_lines == [] and result.max_chars == MAX_CHARS


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\tb\nno tab here\n", ":2: expected one tab (source<TAB>target), found none"),
        ("a\tb\tc\n", ":1: expected one tab (source<TAB>target), found 2"),
        ("a\tb\n\nc\td\n", ":2: empty line (expected source<TAB>target)"),
        ("a\tb\n  \tx\n", ":2: empty source side"),
        ("a\tb\nc\td\ne\t \n", ":3: empty target side"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError) as info:
        read_tsv_pairs(path)
    assert str(info.value) == f"{path}{message}"
    assert "\n" not in str(info.value)


def test_tsv_non_utf8_and_missing_file(tmp_path):
    path = write(tmp_path / "latin1.tsv", b"a\tb\n" + "café\tx\n".encode("latin-1"))
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not valid UTF-8")):
        read_tsv_pairs(path)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope.tsv'}: no such file")):
        read_tsv_pairs(tmp_path / "nope.tsv", what="training pairs")


def test_overlong_pairs_are_skipped_and_counted(tmp_path):
    lines = ["ok\tfine"] + [f"{'x' * 11}\tshort"] * 3 + ["short\t" + "y" * 11, "tenchars10\t1234567890"]
    path = write(tmp_path / "long.tsv", "\n".join(lines) + "\n")
    result = read_tsv_pairs(path, max_chars=10)
    assert result.pairs == [("ok", "fine"), ("tenchars10", "1234567890")]
    assert result.skipped == 4 and result.skipped_lines == [2, 3, 4, 5] and result.max_chars == 10
    message = f"{path}: all 6 pairs have a side longer than 3 characters"
    with pytest.raises(DataError, match=re.escape(message)):
        read_tsv_pairs(path, max_chars=3)
    with pytest.raises(ValueError, match="max_chars"):
        read_tsv_pairs(path, max_chars=0)


def test_parallel_files(tmp_path):
    src = write(tmp_path / "a.en", "Hello .\n I am cold\n" + "z" * 20 + "\n")
    tgt = write(tmp_path / "a.fr", "Bonjour .\nJ'ai froid \nshort\n")
    result = read_parallel(src, tgt, max_chars=15)
    assert result.pairs == [("Hello .", "Bonjour ."), ("I am cold", "J'ai froid")]
    assert result.skipped == 1 and result.skipped_lines == [3]


def test_parallel_errors(tmp_path):
    src = write(tmp_path / "a.en", "one\ntwo\nthree\n")
    short = write(tmp_path / "b.fr", "un\ndeux\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, short)
    assert str(info.value) == f"{src}: 3 lines but {short} has 2 (parallel files must align line by line)"
    blank = write(tmp_path / "c.fr", "un\n \ntrois\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, blank)
    assert str(info.value) == f"{blank}:2: empty line (parallel files need a sentence on every line)"
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'x.fr'}: no such file (target of")):
        read_parallel(src, tmp_path / "x.fr")


def test_split_pairs_is_seeded_grouped_by_source_and_complete():
    pairs = [(f"s{i % 40}", f"t{i}") for i in range(100)]  # 40 distinct sources, most with several targets
    train, valid, test = split_pairs(pairs, seed=3, valid=0.1, test=0.2)
    assert (train, valid, test) == split_pairs(pairs, seed=3, valid=0.1, test=0.2)
    assert split_pairs(pairs, seed=4, valid=0.1, test=0.2) != (train, valid, test)
    assert sorted(train + valid + test) == sorted(pairs)
    sources = [{s for s, _ in split} for split in (train, valid, test)]
    assert [len(s) for s in sources] == [28, 4, 8]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    for split in (train, valid, test):  # input order kept inside each split
        assert split == [p for p in pairs if p in set(split)]
    with pytest.raises(ValueError, match="valid \\+ test must be < 1"):
        split_pairs(pairs, seed=0, valid=0.5, test=0.5)


def test_bundled_tatoeba_is_a_clean_disjoint_split():
    paths = bundled_tatoeba()
    assert sorted(paths) == ["test", "train", "valid"]
    splits = {name: read_tsv_pairs(path) for name, path in paths.items()}
    assert all(result.skipped == 0 for result in splits.values())
    sizes = {name: len(result.pairs) for name, result in splits.items()}
    assert sizes == {"train": 10993, "valid": 618, "test": 606}
    sources = {name: {src for src, _ in result.pairs} for name, result in splits.items()}
    assert not (sources["train"] & sources["test"] or sources["train"] & sources["valid"])
    assert not sources["valid"] & sources["test"]
    prefixes = ("I am ", "I'm ", "He is ", "He's ", "She is ", "She's ", "You are ", "You're ", "We are ",
                "We're ", "They are ", "They're ")
    for result in splits.values():
        assert all(src.startswith(prefixes) and len(src.split()) <= 8 for src, _ in result.pairs)


def test_collate_pairs_builds_teacher_forcing_tensors():
    batch = collate_pairs([[5, 6, 7], [8]], [[9], [10, 11, 12]], pad_id=0, bos_id=2, eos_id=3)
    assert batch.src.tolist() == [[5, 6, 7], [8, 0, 0]] and batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[2, 9, 0, 0], [2, 10, 11, 12]]
    assert batch.tgt_out.tolist() == [[9, 3, 0, 0], [10, 11, 12, 3]]
    with pytest.raises(ValueError, match="empty source sequences at batch positions \\[1\\]"):
        collate_pairs([[5], []], [[1], [2]], pad_id=0, bos_id=2, eos_id=3)


def test_group_references_gathers_targets_of_repeated_sources():
    pairs = [("Hi .", "Salut ."), ("Run !", "Cours !"), ("Hi .", "Bonjour ."), ("Hi .", "Salut ."),
             ("Run !", "Courez !")]
    sources, refs = group_references(pairs)
    assert sources == ["Hi .", "Run !"]
    assert refs == [["Salut .", "Bonjour ."], ["Cours !", "Courez !"]]  # input order, duplicates once
    assert group_references([]) == ([], [])
    # the bundled Tatoeba test split repeats sources: grouping keeps every target of each one
    test = read_tsv_pairs(bundled_tatoeba()["test"]).pairs
    sources, refs = group_references(test)
    assert len(sources) == len({s for s, _ in test}) and len(sources) < len(test)
    assert sum(len(r) for r in refs) == len(set(test))
    for source, targets in zip(sources, refs):
        assert targets == list(dict.fromkeys(t for s, t in test if s == source))


def test_tsv_multi_target_columns(tmp_path):
    path = write(tmp_path / "m.tsv", "Hi .\tSalut .\tBonjour .\nRun !\tCours !\t\nHi .\tCoucou .\n")
    result = read_tsv_pairs(path, multi_target=True)
    assert result.pairs == [("Hi .", "Salut ."), ("Hi .", "Bonjour ."), ("Run !", "Cours !"), ("Hi .", "Coucou .")]
    assert group_references(result.pairs) == (["Hi .", "Run !"], [["Salut .", "Bonjour .", "Coucou ."], ["Cours !"]])
    with pytest.raises(DataError, match=re.escape("m.tsv:1: expected one tab (source<TAB>target), found 2")):
        read_tsv_pairs(path)  # several targets only when asked for
    for text, message in [("a\tb\nc\n", ":2: expected a tab (source<TAB>target[<TAB>target...]), found none"),
                          ("a\t \t \n", ":1: empty target side"), ("\tb\tc\n", ":1: empty source side")]:
        with pytest.raises(DataError, match=re.escape(message)):
            read_tsv_pairs(write(tmp_path / "bad.tsv", text), multi_target=True)
