"""Reading user text files with one-line, file:line error messages.

Every data file rnnkit reads goes through :func:`read_text` or :func:`read_lines` (or, for the content
of a ``.gz`` file, :func:`decode_text`). They read the bytes once, check them, and decode them strictly
as UTF-8 (or the ``encoding`` asked for); line numbers are only computed when something is wrong, so the
common path over a large corpus is two linear scans in C.

Errors (all :class:`rnnkit.errors.DataError`, message on one line)::

    PATH: no such file
    PATH: is a directory
    PATH: cannot read (Permission denied)
    PATH: file is empty                          (no bytes, or only whitespace)
    PATH: UTF-16 (little-endian) text, not UTF-8; convert it: iconv -f UTF-16LE -t UTF-8 PATH > NEW
    PATH:LINE: binary file (NUL byte)
    PATH:LINE: not valid UTF-8 (byte 0xNN at column C)     (EncodingError; another encoding is named so)

UTF-16 and UTF-32 (either byte order) are recognised by their byte-order mark, or without one by
the zero bytes that ASCII-range text has at fixed positions; the message names the encoding and the
``iconv`` command that converts the file. ``C`` is the 1-based byte column inside line ``LINE``.
When ``what`` names the role of the file (``"training text"``), the message ends with it in
parentheses: ``a.txt: no such file (training text)``.

Normalisation: a leading UTF-8 byte-order mark is dropped and Windows line ends ``\\r\\n`` become
``\\n`` (as Python's text mode does); nothing else is changed.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from rnnkit.errors import ConfigError, DataError, EncodingError

__all__ = ["decode_text", "read_bytes", "read_lines", "read_text", "split_lines"]

_BOM = b"\xef\xbb\xbf"
# (byte-order mark, encoding, iconv name); UTF-32 first: its little-endian mark starts like UTF-16's
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16 (little-endian)", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16 (big-endian)", "UTF-16BE"),
)
# Without a mark: which byte positions (mod 4) are zero in ASCII-range text of each encoding.
_WIDE_ZEROS = (
    ((1, 2, 3), (0,), "UTF-32 (little-endian)", "UTF-32LE"),
    ((0, 1, 2), (3,), "UTF-32 (big-endian)", "UTF-32BE"),
    ((1, 3), (0, 2), "UTF-16 (little-endian)", "UTF-16LE"),
    ((0, 2), (1, 3), "UTF-16 (big-endian)", "UTF-16BE"),
)


def _fail(path: str | os.PathLike, detail: str, what: str, line: int | None = None) -> DataError:
    where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
    role = f" ({what})" if what and what != "file" else ""
    return DataError(f"{where}: {detail}{role}")


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and byte column of ``data[offset]``."""
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def _wide_encoding(data: bytes) -> tuple[str, str] | None:
    """(encoding, iconv name) when ``data`` is UTF-16 or UTF-32 text, judged by its byte-order mark or,
    without one, by the zero bytes in its first 4 KiB, and confirmed by decoding it; None otherwise."""
    found = next(((name, iconv) for bom, name, iconv in _WIDE_BOMS if data.startswith(bom)), None)
    sample = data[: min(len(data), 4096) // 4 * 4]
    if found is None and sample:
        quarter = len(sample) // 4
        zero = [sample[j::4].count(0) / quarter for j in range(4)]  # fraction of zero bytes at each position
        found = next(((name, iconv) for zeros, nonzeros, name, iconv in _WIDE_ZEROS
                      if all(zero[j] >= 0.75 for j in zeros) and all(zero[j] <= 0.1 for j in nonzeros)), None)
    if found is None:
        return None
    try:
        data.decode(found[1])  # Python knows iconv's names (UTF-16LE...)
    except UnicodeDecodeError:
        return None
    return found


def read_bytes(path: str | os.PathLike, *, what: str = "file") -> bytes:
    """Read a file's bytes, turning OS errors into one-line :class:`DataError` messages.

    Args:
        path: file to read.
        what: the file's role (``"training text"``), appended to error messages.

    Returns:
        The file's bytes (possibly empty: emptiness is checked by :func:`read_text`).
    """
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file", what) from None
    except IsADirectoryError:
        raise _fail(path, "is a directory", what) from None
    except NotADirectoryError:
        raise _fail(path, "no such file", what) from None
    except PermissionError:
        if p.is_dir():  # Windows reports directories as permission errors
            raise _fail(path, "is a directory", what) from None
        raise _fail(path, "cannot read (Permission denied)", what) from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})", what) from None


def read_text(path: str | os.PathLike, *, what: str = "file", encoding: str = "utf-8") -> str:
    """Read a whole text file, rejecting missing, empty, binary and undecodable files.

    Args:
        path: file to read.
        what: the file's role (``"training text"``), appended to error messages.
        encoding: a Python codec name (``"latin-1"``, ``"cp1252"``, ``"utf-16"``). Default UTF-8, whose
            byte-order mark is dropped; an undecodable byte raises :class:`~rnnkit.errors.EncodingError`
            (``PATH:LINE: not valid ENCODING (byte 0xNN at column C)``, ``UTF-8`` spelt so).

    Returns:
        The decoded text, BOM dropped and ``\\r\\n`` turned into ``\\n``.

    Raises:
        DataError: with one of the one-line messages listed in the module docstring.
        ConfigError: ``encoding`` is not a codec Python knows.

    Example::

        >>> text = read_text("train.txt", what="training text")  # doctest: +SKIP
    """
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"encoding: unknown text encoding {encoding!r}") from None
    return decode_text(read_bytes(path, what=what), path, what=what, encoding=codec)


def decode_text(data: bytes, path: str | os.PathLike, *, what: str = "file", encoding: str = "utf-8") -> str:
    """Decode the bytes of a text file (or of a ``.gz`` file's content) with :func:`read_text`'s checks.

    Args:
        data: the bytes.
        path: the file they came from, for error messages.
        what: the file's role, appended to error messages.
        encoding: a Python codec name (checked by the caller); UTF-16/UTF-32 data is named as such only
            when UTF-8 was expected.

    Returns:
        The decoded text, BOM dropped and ``\\r\\n`` turned into ``\\n``.

    Raises:
        DataError: UTF-16/UTF-32, binary, undecodable (:class:`~rnnkit.errors.EncodingError`) or empty, as
            listed in the module docstring.
    """
    codec = codecs.lookup(encoding).name
    start = len(_BOM) if codec == "utf-8" and data.startswith(_BOM) else 0
    ascii_compatible = "\n\x00".encode(codec) == b"\n\x00"  # not UTF-16/32: bytes give lines and NULs
    nul = data.find(b"\x00", start) if ascii_compatible else -1
    if codec == "utf-8":
        wide = _wide_encoding(data) if nul >= 0 or data[:2] in (b"\xff\xfe", b"\xfe\xff") else None
        if wide is not None:
            name, iconv = wide
            p = os.fspath(path)
            convert = (f"zcat {p} | iconv -f {iconv} -t UTF-8" if p.endswith(".gz")
                       else f"iconv -f {iconv} -t UTF-8 {p}")
            raise _fail(path, f"{name} text, not UTF-8; convert it: {convert} > NEW", what)
    if nul >= 0:
        raise _fail(path, "binary file (NUL byte)", what, _line_col(data, nul)[0])
    try:
        text = data[start:].decode(codec) if start else data.decode(codec)
    except UnicodeDecodeError as e:
        bad = start + e.start  # offset in the file
        if ascii_compatible:
            line, col = _line_col(data, bad)
        else:  # the text before the bad byte decodes cleanly and gives its line and column
            before = data[:bad].decode(codec)
            line, col = before.count("\n") + 1, bad - len(before[: before.rfind("\n") + 1].encode(codec)) + 1
        name = "UTF-8" if codec == "utf-8" else encoding
        detail = f"not valid {name} (byte 0x{data[bad]:02x} at column {col})"
        raise EncodingError(_fail(path, detail, what, line).args[0]) from None
    if not ascii_compatible and "\x00" in text:
        raise _fail(path, "binary file (NUL byte)", what, text.count("\n", 0, text.index("\x00")) + 1)
    if not text.strip():
        raise _fail(path, "file is empty", what)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def read_lines(path: str | os.PathLike, *, what: str = "file", encoding: str = "utf-8") -> list[str]:
    """Read a UTF-8 text file as a list of lines without their newline characters.

    Lines are split on ``\\n`` only (not on the other characters :meth:`str.splitlines` treats as
    line breaks), so ``lines[i]`` is line ``i + 1`` of the file as an editor numbers it. A final
    newline does not add an empty last line; blank lines inside the file are kept as ``""``.

    Args:
        path: file to read.
        what: the file's role (``"training data"``), appended to error messages.
        encoding: as for :func:`read_text`.

    Returns:
        The lines, in file order.

    Raises:
        DataError: as :func:`read_text`.
    """
    return split_lines(read_text(path, what=what, encoding=encoding))


def split_lines(text: str) -> list[str]:
    """``text`` split on ``\\n`` as :func:`read_lines` does: a final newline adds no empty last line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines
