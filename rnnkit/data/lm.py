"""Language-model data: a contiguous token stream, cut into parallel streams, read in BPTT windows.

The corpus is one long id stream (:meth:`Tokenizer.encode_stream
<rnnkit.data.tokenize.Tokenizer.encode_stream>`). :func:`batchify` cuts it into ``B`` contiguous
pieces laid out as the rows of a ``(B, N)`` tensor, so row ``r`` continues across batches and the
hidden state of row ``r`` can be carried from one window to the next (truncated BPTT).
:class:`BPTTStream` reads that tensor left to right in windows of ``L`` columns, each with its
targets shifted by one::

    data = [[ 0  1  2  3  4  5  6]      x = data[:, i : i+L]
            [ 7  8  9 10 11 12 13]]     y = data[:, i+1 : i+1+L]

Everything is deterministic: the only randomness (variable BPTT lengths) comes from a local
:class:`torch.Generator` whose state is part of :meth:`BPTTStream.state_dict`.
"""

from __future__ import annotations

import base64
import math
import os
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rnnkit.errors import DataError

__all__ = ["BPTTStream", "BPTTWindow", "batchify", "ids_tensor", "load_stream"]

# AWD-LSTM (Merity et al. 2018) variable BPTT: full length w.p. 0.95 else half, then N(., 5)
_P_FULL = 0.95
_STD = 5.0
_MIN_LEN = 5
_FORMAT = "rnnkit.bptt/1"


def ids_tensor(ids: Sequence[int]) -> Tensor:
    """``torch.tensor(ids, dtype=torch.int64)`` through an int64 array (torch.tensor of PTB's 929k ids: 0.17 s)."""
    data = array("q", ids)
    return torch.frombuffer(data, dtype=torch.int64) if data else torch.zeros(0, dtype=torch.int64)


def batchify(ids: Tensor | Sequence[int], batch_size: int) -> Tensor:
    """Cut a contiguous id stream into ``batch_size`` parallel streams.

    Row ``r`` is the ``r``-th contiguous chunk of the stream; the ``len(ids) % batch_size`` tokens
    at the end that do not fill a column are dropped.

    Args:
        ids: the token stream, a 1-D integer tensor or a sequence of ints.
        batch_size: number of parallel streams B, >= 1.

    Shape:
        - ids: (M,)
        - Output: (B, N) int64 with N = M // B.

    Returns:
        The ``(B, N)`` tensor (on the device of ``ids``).

    Raises:
        ValueError: fewer than 2 tokens per stream (one input and its target); the message reads
            well after ``PATH: `` so the caller can raise ``DataError(f"{path}: {e}")``.

    Example::

        >>> batchify(list(range(7)), 2).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = ids if isinstance(ids, Tensor) else torch.as_tensor(list(ids), dtype=torch.int64)
    if data.dim() != 1:
        raise ValueError(f"expected a 1-D token stream, got shape {tuple(data.shape)}")
    if data.is_floating_point() or data.is_complex():
        raise ValueError(f"expected integer token ids, got dtype {data.dtype}")
    m = data.numel()
    n = m // batch_size
    if n < 2:
        raise ValueError(
            f"text of {m} tokens is too short for batch size {batch_size} "
            f"(each of the {batch_size} streams needs at least 2 tokens)"
        )
    return data[: n * batch_size].to(torch.int64).reshape(batch_size, n).contiguous()  # (B, N)


def load_stream(path: str | os.PathLike, tokenizer: Any, batch_size: int, *, what: str = "text") -> Tensor:
    """Read a text file, encode it as an LM stream and batchify it, with file-naming errors.

    Args:
        path: UTF-8 text file.
        tokenizer: a :class:`~rnnkit.data.tokenize.Tokenizer` (its ``encode_stream`` is used).
        batch_size: number of parallel streams.
        what: the file's role in messages (``"validation text"``).

    Shape:
        Output: (B, N) int64.

    Raises:
        DataError: the file is missing, empty, binary, not UTF-8, or too short for ``batch_size``.
    """
    from rnnkit.data.files import read_text

    text = read_text(path, what=what)
    ids = ids_tensor(tokenizer.encode_stream(text))
    try:
        return batchify(ids, batch_size)
    except ValueError as e:
        role = f" ({what})" if what and what != "file" else ""
        raise DataError(f"{os.fspath(path)}: {e}{role}") from None


class BPTTWindow(NamedTuple):
    """One truncated-BPTT window: inputs, next-token targets, and the learning-rate scale.

    ``lr_scale`` is ``L / bptt`` for the sampled length L (1.0 for fixed BPTT); as in AWD-LSTM the
    trainer multiplies the learning rate by it for this step so that every token weighs the same.
    """

    x: Tensor  # (B, L)
    y: Tensor  # (B, L)
    lr_scale: float


class BPTTStream:
    """Iterate the ``(B, N)`` output of :func:`batchify` in truncated-BPTT windows.

    Each window is a :class:`BPTTWindow` ``(x, y, lr_scale)`` with ``x = data[:, i:i+L]`` and
    ``y = data[:, i+1:i+1+L]`` (views, not copies). Windows start at column 0 and tile columns
    ``0 .. N-2`` exactly once, so every column except the first is a target exactly once per epoch;
    the last window may be shorter than L.

    Fixed BPTT: ``L = bptt`` and ``lr_scale = 1``. Variable BPTT (``variable=True``, AWD-LSTM):
    ``base = bptt`` with probability 0.95 else ``bptt / 2``; ``L = int(base + 5 * e)`` with
    ``e ~ N(0, 1)``, clipped to ``[min(5, bptt), 2 * bptt]``; ``lr_scale = L / bptt`` (of the
    sampled L, also for a last window cut short by the end of the data).

    Epochs: one ``for`` loop over the stream is one epoch, from the current position to the end.
    When the loop runs out, the position returns to column 0 for the next epoch; the generator is
    not reseeded, so every epoch draws new lengths. The hidden state is the caller's: AWD-LSTM
    starts each epoch from zeros, since the last column does not continue into the first.
    Breaking out of a loop keeps the position, and the next loop continues from there.

    Resume: :meth:`state_dict` holds the position and the generator state (JSON-serialisable).
    Taken between two windows (after training on the last one yielded) and loaded into a stream
    over the same data, the next loop yields exactly the windows the original would have.
    One iterator at a time: two interleaved loops share the position.

    Args:
        data: (B, N) int64 token ids, N >= 2.
        bptt: window length (the mean length when ``variable``), >= 1.
        variable: draw window lengths as in AWD-LSTM. Default False.
        seed: seed of the stream's own generator (used only when ``variable``). Default 0.

    Example::

        >>> stream = BPTTStream(batchify(list(range(20)), 2), bptt=4)
        >>> [w.x.shape[1] for w in stream]
        [4, 4, 1]
    """

    def __init__(self, data: Tensor, bptt: int, *, variable: bool = False, seed: int = 0) -> None:
        if not isinstance(data, Tensor) or data.dim() != 2:
            shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"expected a (B, N) tensor from batchify, got {shape}")
        if data.is_floating_point() or data.is_complex():
            raise ValueError(f"expected integer token ids, got dtype {data.dtype}")
        if data.size(1) < 2:
            raise ValueError(
                f"expected at least 2 columns (an input and its target), got shape {tuple(data.shape)}"
            )
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        self.data = data
        self.bptt = int(bptt)
        self.variable = bool(variable)
        self.seed = int(seed)
        self.pos = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed)

    def __repr__(self) -> str:
        shape = tuple(self.data.shape)
        return f"BPTTStream(shape={shape}, bptt={self.bptt}, variable={self.variable}, pos={self.pos})"

    @property
    def batch_size(self) -> int:
        """B, the number of parallel streams."""
        return self.data.size(0)

    @property
    def tokens_per_epoch(self) -> int:
        """Number of target tokens in one full epoch: ``B * (N - 1)``."""
        return self.data.size(0) * (self.data.size(1) - 1)

    def __len__(self) -> int:
        """Windows in a full epoch for fixed BPTT: ``ceil((N - 1) / bptt)``.

        With ``variable=True`` this is the same figure, an estimate (for progress bars).
        """
        return math.ceil((self.data.size(1) - 1) / self.bptt)

    def _next_length(self) -> int:
        if not self.variable:
            return self.bptt
        g = self.generator
        u = torch.rand(1, generator=g, dtype=torch.float64).item()
        base = self.bptt if u < _P_FULL else self.bptt / 2
        e = torch.randn(1, generator=g, dtype=torch.float64).item()
        lo = min(_MIN_LEN, self.bptt)
        return min(max(int(base + _STD * e), lo), 2 * self.bptt)

    def __iter__(self) -> Iterator[BPTTWindow]:
        last = self.data.size(1) - 1  # the last column is a target only
        while self.pos < last:
            i = self.pos
            length = self._next_length()
            n = min(length, last - i)
            self.pos = i + n
            yield BPTTWindow(self.data[:, i : i + n], self.data[:, i + 1 : i + 1 + n], length / self.bptt)
        self.pos = 0

    def reset(self) -> None:
        """Start the next loop at column 0 (the generator is left as it is)."""
        self.pos = 0

    def state_dict(self) -> dict[str, Any]:
        """Position and generator state, JSON-serialisable (the generator state is base64 text)."""
        g_state = self.generator.get_state()
        return {
            "format": _FORMAT,
            "pos": self.pos,
            "generator": base64.b64encode(bytes(g_state.tolist())).decode("ascii"),
            "shape": list(self.data.shape),
            "bptt": self.bptt,
            "variable": self.variable,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the stream must be over data of the same shape.

        Raises:
            ValueError: the state is not a BPTT stream state, or is for other data or settings.
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError("not an rnnkit BPTT stream state")
        if list(state.get("shape", [])) != list(self.data.shape):
            raise ValueError(
                f"stream state is for data of shape {tuple(state.get('shape', []))}, "
                f"got {tuple(self.data.shape)}"
            )
        if state.get("bptt") != self.bptt or state.get("variable") != self.variable:
            raise ValueError(
                f"stream state is for bptt={state.get('bptt')}, variable={state.get('variable')}; "
                f"this stream has bptt={self.bptt}, variable={self.variable}"
            )
        pos = state.get("pos")
        if not isinstance(pos, int) or not 0 <= pos <= self.data.size(1) - 1:
            raise ValueError(f"stream state has an invalid position {pos!r}")
        try:
            raw = base64.b64decode(state["generator"], validate=True)
            g_state = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            self.generator.set_state(g_state)
        except Exception as e:  # binascii.Error, KeyError, RuntimeError from set_state
            raise ValueError(f"stream state has a damaged generator state ({type(e).__name__})") from None
        self.pos = pos
