"""Training throughput of recurrent layers: torch.nn vs rnnkit's fused and generic engines.

For LSTM and GRU at hidden 128/512, batch 32/64, length 64 (input size = hidden), measures forward + backward
tokens/s of ``torch.nn.<LSTM|GRU>``, ``rnnkit.nn.<LSTM|GRU>`` (fused engine) and the same layer with
``engine="generic"`` (the cell loop), all with the same weights, in one process. Each window runs every
implementation in turn (the order rotates per window) for ``--window`` seconds; we report the median and range
over windows and the ratio to torch.nn (ratio of medians, and the range of the per-window paired ratios).
Targets: fused >= 0.95x torch.nn; generic LSTM >= 0.9x the fused engine at hidden 512 (ratio of medians).
The input does not need its gradient unless ``--input-grad``: the fused kernels compute it anyway, the generic
engine only when asked, so the default favours the generic engine over a layer inside a model. The last line
is JSON.

    python benchmarks/layers.py                 # full run (a few minutes; use a quiet machine)
    python benchmarks/layers.py --input-grad    # the input needs its gradient (a layer inside a model)
    python benchmarks/layers.py --quick         # smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

try:
    import rnnkit.nn as rn
except ImportError:  # run from a checkout without installing: python benchmarks/layers.py
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import rnnkit.nn as rn
import common  # noqa: E402  (benchmarks/, on the path when run as a script)

IMPLS = ("torch.nn", "fused", "generic")


def build(mode: str, hidden: int, device: torch.device) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ref = getattr(torch.nn, mode)(hidden, hidden, batch_first=True).to(device)
    fused = getattr(rn, mode)(hidden, hidden, batch_first=True, engine="fused").to(device)
    generic = getattr(rn, mode)(hidden, hidden, batch_first=True, engine="generic").to(device)
    fused.load_state_dict(ref.state_dict())
    generic.load_state_dict(ref.state_dict())
    return {"torch.nn": ref, "fused": fused, "generic": generic}


def train_step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    for p in layer.parameters():
        p.grad = None
    out, _ = layer(x)
    out.square().mean().backward()


def window(layer: torch.nn.Module, x: torch.Tensor, seconds: float, device: torch.device) -> float:
    """Tokens/s over at least ``seconds`` (and at least two steps)."""
    steps = 0
    start = time.perf_counter()
    while True:
        train_step(layer, x)
        steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if steps >= 2 and elapsed >= seconds:
            return steps * x.size(0) * x.size(1) / elapsed


def measure(mode: str, hidden: int, batch: int, length: int, args: argparse.Namespace, device: torch.device) -> dict:
    layers = build(mode, hidden, device)
    x = torch.randn(batch, length, hidden, device=device, requires_grad=args.input_grad)
    for layer in layers.values():  # warm-up (allocator, oneDNN primitives, cuDNN plans)
        for _ in range(2):
            train_step(layer, x)
    rates: dict[str, list[float]] = {name: [] for name in IMPLS}
    for w in range(args.windows):
        order = IMPLS[w % 3 :] + IMPLS[: w % 3]
        for name in order:
            rates[name].append(window(layers[name], x, args.window, device))
    result = {"mode": mode, "hidden": hidden, "batch": batch, "length": length}
    base = statistics.median(rates["torch.nn"])
    for name in IMPLS:
        median = statistics.median(rates[name])
        paired = [r / t for r, t in zip(rates[name], rates["torch.nn"])]
        result[name] = {
            "median_tok_s": round(median, 1),
            "min_tok_s": round(min(rates[name]), 1),
            "max_tok_s": round(max(rates[name]), 1),
            "ratio": round(median / base, 3),
            "ratio_range": [round(min(paired), 3), round(max(paired), 3)],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: hidden 32, batch 4, length 16, 3 windows")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--windows", type=int, default=7, help="alternating windows per configuration (default 7)")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per implementation per window")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--input-grad", action="store_true",
                        help="the input needs its gradient, as for any layer above an embedding or another layer "
                             "(default: not; the fused kernels compute it anyway, the generic engine only if asked)")
    parser.add_argument("--modes", nargs="+", default=["LSTM", "GRU"], choices=["LSTM", "GRU"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 512], help="hidden sizes (default 128 512)")
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 64], help="batch sizes (default 32 64)")
    args = parser.parse_args()
    if args.threads < 1 or args.windows < 1 or args.window <= 0:
        parser.error("--threads and --windows must be >= 1 and --window > 0")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kept = common.as_in_training()  # glibc's allocator as in a training run (its page faults slow the fused kernel)
    if args.quick:
        args.windows, args.window = min(args.windows, 3), min(args.window, 0.05)
        grid = [(32, 4)]
        length = 16
    else:
        grid = [(h, b) for h in args.hidden for b in args.batch]
        length = 64

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
        f"threads {args.threads}, mkldnn {torch.backends.mkldnn.is_available()}, "
        f"{args.windows} windows x {args.window}s, training tokens/s (forward + backward), freed blocks kept as "
        f"in training: {kept}, input needs its gradient: {args.input_grad}"
    )
    header = f"{'layer':5} {'H':>4} {'B':>3} {'impl':9} {'median':>10} {'range':>21} {'ratio':>6} {'ratio range':>13}"
    print(header)
    print("-" * len(header))
    results = []
    for mode in args.modes:
        for hidden, batch in grid:
            res = measure(mode, hidden, batch, length, args, device)
            results.append(res)
            for name in IMPLS:
                r = res[name]
                span = f"{r['min_tok_s']:.0f}-{r['max_tok_s']:.0f}"
                ratios = f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"
                print(f"{mode:5} {hidden:>4} {batch:>3} {name:9} {r['median_tok_s']:>10.0f} {span:>21} "
                      f"{r['ratio']:>6.2f} {ratios:>13}", flush=True)
    targets = None
    if not args.quick:
        lstm_512 = [r for r in results if r["mode"] == "LSTM" and r["hidden"] == 512]
        targets = {
            "fused_ge_0.95": all(r["fused"]["ratio"] >= 0.95 for r in results),
            "generic_lstm_512_ge_0.9_fused": all(
                r["generic"]["median_tok_s"] >= 0.9 * r["fused"]["median_tok_s"] for r in lstm_512
            ) if lstm_512 else None,
        }
    print(f"targets met: {targets}" if targets else "targets: not judged on a quick run")
    print(json.dumps({
        "benchmark": "rnnkit.nn layers training throughput",
        "torch": torch.__version__, "device": str(device), "threads": args.threads, "quick": args.quick,
        "freed_blocks_kept": kept, "input_grad": args.input_grad, "windows": args.windows, "window_s": args.window,
        "results": results,
        "targets_met": targets,
    }))


if __name__ == "__main__":
    main()
