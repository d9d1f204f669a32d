"""Training tokens/s of `rnnkit lm train` with 1 and 2 processes under torchrun (DDP).

On this 2-core CPU machine this is a plumbing check, not a speed claim: two processes share the same two
cores (one thread each). On a machine with GPUs, pass --device cuda and --procs up to the GPU count.

    python benchmarks/scaling.py                   # CPU, gloo, 1 vs 2 processes
    python benchmarks/scaling.py --device cuda --procs 1 2 4

Prints a table and one JSON line. Tokens/s is the median of the logged training windows after the first
(which includes start-up), summed over ranks by the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "the cat dog sat on a mat and ran to house with red blue small big over under".split()


def make_corpus(path: Path, lines: int = 20000) -> None:
    import random

    rng = random.Random(0)
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "\n"
                            for _ in range(lines)))


def run(procs: int, corpus: Path, out: Path, args: argparse.Namespace) -> dict:
    threads = max(1, args.threads // procs) if args.device == "cpu" else 1
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--standalone",
           "-m", "rnnkit", "lm", "train", "--train", str(corpus), "--level", "word", "--out", str(out),
           "--overwrite", "--hidden", str(args.hidden), "--emb", str(args.hidden), "--layers", "2",
           "--batch-size", str(args.batch_size), "--bptt", "35", "--dropout", "0", "--max-steps", str(args.steps),
           "--log-every", str(max(1, args.steps // 6)), "--eval-every", "0", "--time-budget", "none",
           "--sample-length", "0", "--no-progress", "--threads", str(threads), "--device", args.device,
           "--precision", args.precision]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in recs if r["split"] == "train"][1:]
    return {"procs": procs, "threads_per_proc": threads, "tokens_per_s": statistics.median(tps), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over processes)")
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=20, help="global batch (split over processes)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = p.parse_args()
    if args.quick:
        args.hidden, args.steps = 32, 12
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        make_corpus(corpus, 2000 if args.quick else 20000)
        rows = [run(n, corpus, Path(tmp) / f"run{n}", args) for n in args.procs]
    print(f"{'procs':>5} {'threads/proc':>12} {'tokens/s':>10} {'wall s':>7}")
    for r in rows:
        print(f"{r['procs']:>5} {r['threads_per_proc']:>12} {r['tokens_per_s']:>10.0f} {r['wall_s']:>7.1f}")
    print(json.dumps({"benchmark": "scaling", "device": args.device, "precision": args.precision,
                      "hidden": args.hidden, "global_batch": args.batch_size, "results": rows}))


if __name__ == "__main__":
    main()
