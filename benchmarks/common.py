"""Shared helpers for the benchmark scripts: setup, alternating timing windows, summaries, peak memory, GEMM peak.

Conventions every script follows: ``--threads`` (default 2) torch threads, ``--quick`` for a seconds-long
smoke run, a human-readable table on stdout and ONE final JSON line (:func:`print_json`). Compare
figures only within one run: on a shared 2-core machine single runs vary by 20% or more, which is why
the competitors are timed in alternating windows (:func:`alternate`) and summarised by median and range.

Typical use::

    device = setup(args.threads, args.device)
    rates = alternate({"reference": ref_window, "rnnkit": rk_window}, windows=7, sync=device)
    summary = summarize(rates["rnnkit"]); ratio = ratio_summary(rates["rnnkit"], rates["reference"])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # ../shared/data relative to the repo root

try:  # run from a checkout without installing: python benchmarks/x.py
    import rnnkit  # noqa: F401
except ImportError:  # pragma: no cover - the package is installed (editable) in the venv
    sys.path.insert(0, str(REPO_ROOT))


# --- setup -----------------------------------------------------------------------------------------------

def setup(threads: int, device: str = "cpu", seed: int = 0) -> torch.device:
    """Set torch's intra-op threads and the seed; return the device (``cuda`` must exist when asked for)."""
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU")
    return dev


def sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work (a no-op on CPU), so a timer read afterwards covers it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def as_in_training() -> bool:
    """Apply the process setting training applies that changes speed, so that a benchmark of layers outside a
    training run measures what a run gets: glibc reusing freed large blocks instead of faulting them in again
    (:func:`rnnkit.train.driver.keep_freed_blocks`; it made the fused LSTM layer at H 512 about 1.3x faster).
    Returns whether it took effect (glibc only)."""
    from rnnkit.train.driver import keep_freed_blocks

    return keep_freed_blocks()


def machine_info(device: torch.device | str, threads: int) -> dict[str, Any]:
    """What produced the figures: torch version, CPU/GPU, threads, date."""
    dev = torch.device(device)
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": str(dev),
        "date": time.strftime("%Y-%m-%d"),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def data_file(data_dir: str | Path, *parts: str, what: str = "data file") -> Path:
    """``data_dir/parts...``, or exit with a one-line error naming the missing file and the flag to fix it."""
    path = Path(data_dir).joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"error: {what} not found: {path} (point --data-dir at the folder holding "
                         f"{'/'.join(parts[:-1]) or '.'}/{parts[-1]})")
    return path


# --- timing ------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], device: torch.device | str | None = None) -> float:
    """Seconds ``fn()`` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def alternate(runners: Mapping[str, Callable[[], float]], windows: int) -> dict[str, list[float]]:
    """Run each competitor once per window, rotating who goes first, ``windows`` times.

    Each runner does one window of work and returns its rate (e.g. tokens/s). Rotating the order
    (A B C, B C A, C A B, ...) spreads slow drifts of a shared machine over every competitor.

    Returns:
        name -> the ``windows`` rates, in window order (so ``rates[a][i] / rates[b][i]`` pairs windows).
    """
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for w in range(windows):
        k = w % len(names)
        for name in names[k:] + names[:k]:
            rates[name].append(float(runners[name]()))
    return rates


def summarize(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    """Median and range of a list of rates or times."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def ratio_summary(values: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """``median(values) / median(baseline)`` and the range of the window-paired ratios."""
    paired = [v / b for v, b in zip(values, baseline)]
    return {"ratio": round(statistics.median(values) / statistics.median(baseline), 3),
            "paired_min": round(min(paired), 3), "paired_max": round(max(paired), 3)}


# --- memory ------------------------------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def run_child(argv: Sequence[str], timeout: float | None = None, env: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh interpreter and return the JSON object on its last stdout line.

    Used to measure peak resident memory: the child prints ``{"peak_rss_mib": peak_rss_mib(), ...}``
    as its last line, so each measurement starts from an empty process (no allocator cache or model
    left over from another competitor, as there would be in-process or in a forked child).
    """
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"child {' '.join(argv)} failed with exit code {proc.returncode}:\n{tail}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"child {' '.join(argv)} printed nothing")
    return json.loads(lines[-1])


# --- compute peak ------------------------------------------------------------------------------------------

def gemm_peak(device: torch.device | str = "cpu", sizes: Sequence[int] = (256, 512, 1024, 2048),
              seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Best measured ``torch.mm`` throughput (GFLOP/s, 2 n^3 FLOPs per n x n product) over square sizes.

    Run on the thread count set by :func:`setup`; the best size is the roofline the models are
    compared with. Each size: one warm-up product, then repeated products for at least ``seconds``.
    """
    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        sync(device)
        reps, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            reps += 1
            if reps % 4 == 0 or reps < 4:
                sync(device)
                elapsed = time.perf_counter() - start
                if elapsed >= seconds and reps >= 2:
                    break
        per_size[n] = round(2 * n**3 * reps / elapsed / 1e9, 1)
    best = max(per_size, key=per_size.get)
    return {"peak_gflops": per_size[best], "best_size": best, "gflops_by_size": per_size}


# --- output ------------------------------------------------------------------------------------------------

def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """A plain fixed-width table (right-aligned numbers) on stdout."""
    if title:
        print(title)
    if not rows:
        print("(no rows)")
        return

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return "-" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), flush=True)


def print_json(obj: Mapping[str, Any]) -> None:
    """The script's one final JSON line (machine-readable; everything before it is for people)."""
    print(json.dumps(obj, sort_keys=False), flush=True)


def parse_override(text: str) -> tuple[str, str]:
    """``FIELD=VALUE`` of a ``--set`` option (dashes in FIELD become underscores)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


def typed_overrides(config_cls: type, pairs: Sequence[tuple[str, str]],
                    parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``--set`` pairs checked and converted as the CLI converts flags (``"64"`` -> 64); a bad one is a usage error."""
    from rnnkit.errors import ConfigError
    from rnnkit.train.config import coerce

    names = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in names:
            parser.error(f"--set: no field {key!r} in {config_cls.__name__}")
        try:
            out[key] = coerce(config_cls, key, value, "--set")
        except ConfigError as e:
            parser.error(str(e))
    return out
