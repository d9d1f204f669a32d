"""Plots: training curves from ``metrics.jsonl``, attention heatmaps, attention-pooling weights over a text
and confusion matrices (matplotlib, no display needed).

Where images go (:func:`image_path`): ``out`` may be a file whose extension names a format matplotlib
writes (``.png``, ``.pdf``, ``.svg``...) in an existing folder, or an existing folder, which receives the
default file name (``curves.png``, ``attention.png``, ``confusion.png``). Anything else is a one-line
:class:`~rnnkit.errors.ConfigError` before anything is drawn. The image is written to a temporary file
in the same folder and renamed over ``out``, so a failed write leaves an older image intact.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from rnnkit.data.files import decode_text, read_bytes, split_lines  # noqa: E402
from rnnkit.errors import ConfigError, DataError  # noqa: E402

# Attention heatmaps: 0.5 inch per token up to this many inches a side; beyond it the plot is scaled down
# and only every k-th token is labelled (the title says so).
MAX_FIGURE_INCHES = 16.0
_LABEL_INCHES = 0.3  # room one tick label needs


def image_path(out: str | os.PathLike, default_name: str) -> Path:
    """The image file for ``--out`` (an image file name, or an existing folder that gets ``default_name``).

    Raises:
        ConfigError: ``field 'out': ...``: the folder does not exist or is not a folder, or the extension
            is missing or not a format matplotlib writes (the message lists those).
    """
    target = Path(out)
    if target.is_dir():
        target = target / default_name
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    ext = target.suffix[1:].lower()
    if ext not in formats:
        what = f"unknown image format '.{ext}'" if ext else "no image extension (nor an existing folder)"
        raise ConfigError(f"field 'out': {out}: {what}; use one of {', '.join('.' + f for f in formats)}")
    folder = target.parent
    if not folder.exists():
        raise ConfigError(f"field 'out': {out}: folder {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"field 'out': {out}: {folder} is not a folder")
    return target


def _save(fig: plt.Figure, target: Path) -> Path:
    """Write ``fig`` to ``target`` through a temporary file in its folder; close the figure."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=target.suffix[1:].lower(), dpi=120)
        os.replace(tmp, target)
    except OSError as e:
        raise ConfigError(f"field 'out': {target}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (none while it is empty); a line that is not a JSON object,
    or a train/valid record whose ``step`` or ``loss`` (unless null) is not a number, is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file; is {path.parent} an rnnkit run folder?")
    data = read_bytes(path, what="metrics")
    text = decode_text(data, path, what="metrics") if data.strip() else ""
    records = []
    for i, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{i}: not a JSON object") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{i}: not a JSON object")
        plotted = rec.get("split") in ("train", "valid") and rec.get("loss") is not None
        if plotted and not (_is_number(rec.get("step")) and _is_number(rec["loss"])):
            raise DataError(f"{path}:{i}: a {rec['split']} record needs numbers for 'step' and 'loss'")
        records.append(rec)
    return records


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw train and valid loss against step from ``RUN/metrics.jsonl`` into ``out`` (default
    RUN/curves.png; a folder gets ``curves.png``); returns the file written."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    target = image_path(out, "curves.png") if out is not None else run_dir / "curves.png"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for split, style in (("train", "-"), ("valid", "o-")):
        pts = [(r["step"], r["loss"]) for r in records if r.get("split") == split and r.get("loss") is not None]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, style, label=split, markersize=3)
    if not ax.lines:
        plt.close(fig)
        raise DataError(f"{run_dir / 'metrics.jsonl'}: no loss values to plot yet")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, target)


def _ticks(n: int, inches: float) -> int:
    """Label every k-th of ``n`` tokens drawn across ``inches`` so that labels do not overlap."""
    return max(1, math.ceil(n * _LABEL_INCHES / inches))


def plot_attention(weights: ArrayLike, source: Sequence[str], target: Sequence[str], out: str | Path) -> Path:
    """Heatmap of attention weights, a (len(target), len(source)) array or nested list, into ``out`` (a
    folder gets ``attention.png``); returns the file written.

    Each token gets half an inch up to :data:`MAX_FIGURE_INCHES` a side; a longer sentence is drawn
    scaled down with every k-th token labelled, and the title says which.
    """
    path = image_path(out, "attention.png")
    rows, cols = len(target), len(source)
    width = min(MAX_FIGURE_INCHES, max(4, 0.5 * cols + 2))
    height = min(MAX_FIGURE_INCHES, max(3, 0.45 * rows + 1.5))
    kx, ky = _ticks(cols, width - 2), _ticks(rows, height - 1.5)
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0, interpolation="nearest",
                   interpolation_stage="data")  # resample before colouring: fast on long sentences
    ax.set_xticks(range(0, cols, kx), labels=list(source)[::kx], rotation=60, ha="right")
    ax.set_yticks(range(0, rows, ky), labels=list(target)[::ky])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if kx > 1 or ky > 1:
        ax.set_title(f"{cols} source x {rows} output tokens; labelled: 1 source token in {kx}, 1 output in {ky}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_word_weights(weights: Sequence[Sequence[float]], tokens: Sequence[str], out: str | Path) -> Path:
    """Attention-pooling weights over a text's words (one row per head, a heat strip) into ``out``.

    Args:
        weights: ``r`` rows of ``len(tokens)`` weights (``Classifier`` attention, padding cut off).
        tokens: the text's tokens.
        out: the image file (or folder) to write, as for :func:`image_path`.
    """
    if any(len(row) != len(tokens) for row in weights) or not weights:
        raise ValueError(f"weights: expected rows of {len(tokens)} weights (one per token)")
    return plot_attention(weights, tokens, [f"head {k + 1}" for k in range(len(weights))], out)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], out: str | Path) -> Path:
    """A confusion matrix (rows gold, columns predicted, as
    :func:`rnnkit.metrics.classification.confusion_matrix` gives it) into ``out``.

    Each cell shows its count; its colour is the fraction of its row (the recall of the diagonal).
    """
    n = len(labels)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"matrix: expected {n} x {n} counts for {n} labels")
    path = image_path(out, "confusion.png")
    totals = [max(sum(row), 1) for row in matrix]
    shares = [[x / t for x in row] for row, t in zip(matrix, totals)]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2.5), max(3.5, 0.5 * n + 2)))
    im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xticks(range(n), labels=list(labels), rotation=60, ha="right")
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the gold class")
    fig.tight_layout()
    return _save(fig, path)
