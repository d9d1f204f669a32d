"""Streaming LM inference latency at batch 1: PyTorch eager (rnnkit) vs ONNX Runtime fp32 vs ONNX Runtime int8.

Sides, per model, all in one process on the same tokens:

* ``eager``: :func:`rnnkit.decode.stream.step` (what ``LMRun.step`` calls): one token, state carried.
* ``ort-fp32``: the exported ``lm_step`` graph (:mod:`rnnkit.export.lm`) in onnxruntime, state carried as numpy.
* ``ort-int8``: the same graph after ``onnxruntime.quantization.quantize_dynamic`` (int8 weights), as
  ``rnnkit export --quantize int8`` writes it.

Each side feeds ``--steps`` tokens one at a time (greedy: each step's argmax is the next input), in
``--windows`` alternating windows (order rotating); we print the median and p99 per-token latency over all
steps, and the speed-ups of the medians. Quality: the perplexity of each side's ``lm_sequence`` scoring of
``--ppl-rows`` rows of ``--ppl-length`` tokens (with ``--run`` and ``--text``: the text's tokens; otherwise
random tokens, where only the int8-vs-fp32 difference means anything), and the relative difference.

Models: ``char-2x256`` (V=65, E=128, H=256) and ``word-2x650`` (V=10k, E=H=650), 2-layer LSTMs, randomly
initialised; or ``--run RUN``, a trained LM run.

    python benchmarks/inference.py                                   # both models, 1,000 steps each side
    python benchmarks/inference.py --run runs/ptb --text ptb.test.txt # a trained run, its test perplexity
    python benchmarks/inference.py --quick                           # smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.decode import stream  # noqa: E402
from rnnkit.export import lm as export_lm  # noqa: E402
from rnnkit.export.onnx import export_graph, quantize_int8  # noqa: E402
from rnnkit.models.lm import LanguageModel  # noqa: E402
from rnnkit.tasks.lm import LMConfig  # noqa: E402

# LSTM LMs with the task's defaults for every other setting (dropout is off at inference)
MODELS = {
    "char-2x256": LMConfig(emb=128, hidden=256, layers=2).model_config(vocab_size=65),
    "word-2x650": LMConfig(emb=650, hidden=650, layers=2).model_config(vocab_size=10_000),
}
QUICK = LMConfig(emb=8, hidden=16, layers=2).model_config(vocab_size=40)
SIDES = ("eager", "ort-fp32", "ort-int8")


def sessions(model: LanguageModel, folder: Path, threads: int) -> dict[str, dict[str, Any]]:
    """onnxruntime sessions of the step and sequence graphs, fp32 and int8."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    out: dict[str, dict[str, Any]] = {}
    for kind in ("fp32", "int8"):
        out[kind] = {}
        for graph in export_lm.graphs(SimpleNamespace(model=model)):
            path = folder / f"{graph.name}-{kind}.onnx"
            export_graph(graph, path)
            if kind == "int8":
                quantize_int8(path)
            out[kind][graph.name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return out


def eager_steps(model: LanguageModel, first: int, steps: int) -> list[float]:
    state, token, lat = stream.initial_state(model, 1), torch.tensor([first]), []
    for _ in range(steps):
        t0 = time.perf_counter()
        log_probs, state = stream.step(model, token, state)
        token = log_probs.argmax(-1)
        lat.append(time.perf_counter() - t0)
    return lat


def ort_steps(sess: Any, names: list[str], shape: tuple[int, ...], first: int, steps: int) -> list[float]:
    state = {n: np.zeros(shape, dtype=np.float32) for n in names}
    token, lat = np.array([first], dtype=np.int64), []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = sess.run(None, {"ids": token, **state})
        state = dict(zip(names, out[1:]))
        token = out[0].argmax(-1)
        lat.append(time.perf_counter() - t0)
    return lat


def perplexities(model: LanguageModel, sess: dict[str, dict[str, Any]], rows: torch.Tensor) -> dict[str, float]:
    """Perplexity of each side over independent rows (B, T) (the first token of a row is not predicted)."""
    lengths = torch.full((rows.shape[0],), rows.shape[1])
    count = rows.shape[0] * (rows.shape[1] - 1)
    with torch.no_grad():
        eager = float(export_lm.LMSequence(model)(rows, lengths).double().sum())
    out = {"eager": math.exp(-eager / count)}
    for kind in ("fp32", "int8"):
        (lp,) = sess[kind]["lm_sequence"].run(None, {"ids": rows.numpy(), "lengths": lengths.numpy()})
        out[f"ort-{kind}"] = math.exp(-float(lp.astype(np.float64).sum()) / count)
    return out


def measure(name: str, model: LanguageModel, rows: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    model = model.cpu().eval()
    c = model.config
    with tempfile.TemporaryDirectory() as tmp:
        sess = sessions(model, Path(tmp), args.threads)
        names = export_lm.state_names(model)
        shape = (c.layers, 1, c.hidden)
        per_window = max(1, args.steps // args.windows)
        run = {"eager": lambda: eager_steps(model, 1, per_window),
               "ort-fp32": lambda: ort_steps(sess["fp32"]["lm_step"], names, shape, 1, per_window),
               "ort-int8": lambda: ort_steps(sess["int8"]["lm_step"], names, shape, 1, per_window)}
        for fn in run.values():  # warm-up
            fn()
        lat: dict[str, list[float]] = {s: [] for s in SIDES}
        for w in range(args.windows):
            for side in SIDES[w % 3:] + SIDES[:w % 3]:
                lat[side] += run[side]()
        ppl = perplexities(model, sess, rows)
    ms = {s: {"median": 1e3 * statistics.median(v), "p99": 1e3 * float(np.percentile(v, 99)), "steps": len(v)}
          for s, v in lat.items()}
    return {"model": name, "config": c.to_dict(), "latency_ms": ms,
            "speedup_fp32_vs_eager": ms["eager"]["median"] / ms["ort-fp32"]["median"],
            "speedup_int8_vs_fp32": ms["ort-fp32"]["median"] / ms["ort-int8"]["median"],
            "perplexity": ppl, "int8_ppl_change": ppl["ort-int8"] / ppl["ort-fp32"] - 1}


def eval_rows(ids: list[int], rows: int, length: int) -> torch.Tensor:
    need = rows * length
    if len(ids) < need:
        raise SystemExit(f"--text: {len(ids)} tokens, need --ppl-rows x --ppl-length = {need}")
    return torch.tensor(ids[:need]).view(rows, length)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--run", help="a trained LM run folder instead of the random models")
    p.add_argument("--text", help="with --run: text whose tokens give the perplexity rows")
    p.add_argument("--steps", type=int, default=1000, help="timed steps per side (default 1000)")
    p.add_argument("--windows", type=int, default=5, help="alternating windows (default 5)")
    p.add_argument("--ppl-rows", type=int, default=16, help="perplexity rows (default 16)")
    p.add_argument("--ppl-length", type=int, default=256, help="tokens per perplexity row (default 256)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 20 steps")
    args = p.parse_args(argv)
    if min(args.steps, args.windows, args.ppl_rows) < 1 or args.ppl_length < 2:
        p.error("--steps, --windows, --ppl-rows must be >= 1 and --ppl-length >= 2")
    if args.text and not args.run:
        p.error("--text needs --run")
    common.setup(args.threads)
    if args.quick:
        args.steps, args.windows, args.ppl_rows, args.ppl_length = 20, 2, 2, 8
    if args.run:
        from rnnkit.data.files import read_text
        from rnnkit.tasks import lm

        run = lm.load(args.run, device="cpu")
        if args.text:
            rows = eval_rows(run.tokenizer.encode_stream(read_text(args.text, what="--text")), args.ppl_rows,
                             args.ppl_length)
        else:
            rows = torch.randint(run.model.config.vocab_size, (args.ppl_rows, args.ppl_length))
        models = {Path(args.run).name: run.model}
    else:
        configs = {"quick": QUICK} if args.quick else {n: MODELS[n] for n in args.models}
        models = {n: LanguageModel(c) for n, c in configs.items()}
        rows = None
    info = common.machine_info("cpu", args.threads)
    print(f"torch {info['torch']}, {args.threads} threads, {info['date']}; batch 1, {args.steps} steps per side in "
          f"{args.windows} alternating windows; latency ms")
    results = []
    for name, model in models.items():
        r = rows if rows is not None else torch.randint(model.config.vocab_size, (args.ppl_rows, args.ppl_length))
        results.append(measure(name, model, r, args))
    table = [{"model": r["model"], **{f"{s} med": round(r["latency_ms"][s]["median"], 3) for s in SIDES},
              **{f"{s} p99": round(r["latency_ms"][s]["p99"], 3) for s in SIDES},
              "fp32/eager": f"{r['speedup_fp32_vs_eager']:.2f}x", "int8/fp32": f"{r['speedup_int8_vs_fp32']:.2f}x",
              "int8 ppl": f"{100 * r['int8_ppl_change']:+.2f}%"} for r in results]
    print()
    common.print_table(table, list(table[0]))
    out = {"benchmark": "streaming inference latency", "machine": info, "quick": args.quick, "steps": args.steps,
           "windows": args.windows, "results": results}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
