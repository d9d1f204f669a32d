"""Plots: training curves from ``metrics.jsonl``, attention heatmaps, attention-pooling weights over a text
and confusion matrices (matplotlib, no display needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rnnkit.errors import DataError  # noqa: E402


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file; a malformed line is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file; is {path.parent} an rnnkit run folder?")
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{i}: not a JSON object") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{i}: not a JSON object")
        records.append(rec)
    return records


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw train and valid loss against step from ``RUN/metrics.jsonl`` into ``out`` (RUN/curves.png)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for split, style in (("train", "-"), ("valid", "o-")):
        pts = [(r["step"], r["loss"]) for r in records if r.get("split") == split and "loss" in r]
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
    target = Path(out) if out is not None else run_dir / "curves.png"
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def plot_attention(weights: Sequence[Sequence[float]], source: Sequence[str], target: Sequence[str],
                   out: str | Path) -> Path:
    """Heatmap of attention weights (target tokens x source tokens) into ``out``."""
    rows, cols = len(target), len(source)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * cols + 2), max(3, 0.45 * rows + 1.5)))
    im = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(cols), labels=list(source), rotation=60, ha="right")
    ax.set_yticks(range(rows), labels=list(target))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def plot_word_weights(weights: Sequence[Sequence[float]], tokens: Sequence[str], out: str | Path) -> Path:
    """Attention-pooling weights over a text's words (one row per head, a heat strip) into ``out``.

    Args:
        weights: ``r`` rows of ``len(tokens)`` weights (``Classifier`` attention, padding cut off).
        tokens: the text's tokens.
        out: the PNG file to write.
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
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
