"""rnnkit.data.files: reading text files with one-line file:line errors."""

from __future__ import annotations

import re

import pytest

from rnnkit.data.files import read_lines, read_text
from rnnkit.errors import DataError, RnnkitError


def _err(fn, path, **kw) -> str:
    with pytest.raises(DataError) as info:
        fn(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert isinstance(info.value, RnnkitError)
    return msg


def test_read_text_and_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("héllo wörld\n\nsecond line\n", encoding="utf-8")
    assert read_text(p) == "héllo wörld\n\nsecond line\n"
    assert read_lines(p) == ["héllo wörld", "", "second line"]
    p.write_text("no final newline", encoding="utf-8")
    assert read_lines(str(p)) == ["no final newline"]


def test_crlf_and_bom_normalised(tmp_path):
    p = tmp_path / "win.txt"
    p.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert read_text(p) == "one\ntwo\n"
    assert read_lines(p) == ["one", "two"]


def test_only_newline_splits_lines(tmp_path):
    # \x0c and \u2028 are line breaks for str.splitlines but not for editors' line numbers
    p = tmp_path / "ff.txt"
    p.write_text("a\x0cb\u2028c\nd\n", encoding="utf-8")
    assert read_lines(p) == ["a\x0cb\u2028c", "d"]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.txt"
    assert _err(read_text, p) == f"{p}: no such file"
    assert _err(read_lines, p, what="training text") == f"{p}: no such file (training text)"


def test_directory(tmp_path):
    assert _err(read_text, tmp_path) == f"{tmp_path}: is a directory"


def test_empty_and_whitespace_only(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    assert _err(read_text, p) == f"{p}: file is empty"
    p.write_bytes(b"  \n\n\t\n")
    assert _err(read_lines, p, what="validation text") == f"{p}: file is empty (validation text)"


def test_binary_file_names_line(tmp_path):
    p = tmp_path / "bin.dat"
    p.write_bytes(b"line one\nline two\nab\x00cd\n")
    assert _err(read_text, p) == f"{p}:3: binary file (NUL byte)"


def test_invalid_utf8_names_line_byte_and_column(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("first\nsecond\ncaf\u00e9 au lait\n".encode("latin-1"))
    msg = _err(read_text, p, what="training text")
    assert msg == f"{p}:3: not valid UTF-8 (byte 0xe9 at column 4) (training text)"
    # multi-byte characters before the bad byte count as bytes in the column
    p.write_bytes("ok\néé".encode() + b"\xff\n")
    msg = _err(read_lines, p)
    assert re.fullmatch(rf"{re.escape(str(p))}:2: not valid UTF-8 \(byte 0xff at column 5\)", msg), msg


def test_invalid_utf8_after_bom_column_counts_file_bytes(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfab\xffc\n")
    assert _err(read_text, p) == f"{p}:1: not valid UTF-8 (byte 0xff at column 6)"


def test_truncated_multibyte_at_end(tmp_path):
    p = tmp_path / "trunc.txt"
    p.write_bytes(b"abc\nxy\xe2\x82")
    assert _err(read_text, p) == f"{p}:2: not valid UTF-8 (byte 0xe2 at column 3)"


@pytest.mark.parametrize("codec, name, iconv", [
    ("utf-16", "UTF-16 (little-endian)", "UTF-16LE"),  # Python writes a little-endian BOM
    ("utf-16-le", "UTF-16 (little-endian)", "UTF-16LE"),
    ("utf-16-be", "UTF-16 (big-endian)", "UTF-16BE"),
    ("utf-32", "UTF-32 (little-endian)", "UTF-32LE"),
    ("utf-32-be", "UTF-32 (big-endian)", "UTF-32BE"),
])
def test_utf16_and_utf32_are_named_not_binary(tmp_path, codec, name, iconv):
    p = tmp_path / "wide.txt"
    p.write_bytes("The cat sat.\nLe chat \u00e9tait assis.\n".encode(codec))
    assert _err(read_text, p, what="training text") == (
        f"{p}: {name} text, not UTF-8; convert it: iconv -f {iconv} -t UTF-8 {p} > NEW (training text)")


def test_utf16_bom_without_zero_bytes(tmp_path):
    p = tmp_path / "cjk.txt"
    p.write_bytes("\u732b\u304c\u5ea7\u3063\u305f".encode("utf-16"))  # no byte of the text is zero
    assert _err(read_lines, p) == f"{p}: UTF-16 (little-endian) text, not UTF-8; convert it: " \
        f"iconv -f UTF-16LE -t UTF-8 {p} > NEW"


def test_binary_with_zero_pattern_that_does_not_decode_stays_binary(tmp_path):
    p = tmp_path / "odd.dat"
    p.write_bytes(b"a\x00b\x00\x00\xd8c\x00")  # UTF-16LE zero pattern, but an unpaired surrogate
    assert _err(read_text, p) == f"{p}:1: binary file (NUL byte)"
