"""Whole-process wall time of ``rnnkit lm train --max-steps N`` against a plain-PyTorch script doing the same work.

Both are timed from process start to exit, as a user sees them, alternating (reference, rnnkit, reference,
...) ``--repeats`` times after one untimed warm-up each (file cache, .pyc files):

* rnnkit: ``rnnkit lm train --train PTB --level word --max-steps N --hidden 200 --emb 200 --layers 2
  --batch-size 20 --bptt 35 --optimizer adam --lr 1e-3 --clip 5 --dropout 0 --time-budget none
  --eval-every 0 --log-every N --sample-length 0 --no-progress --threads T`` (no ``--valid``: no
  validation), into a temporary run folder. It also writes what a run folder holds (config, vocabulary,
  metrics, the best/last checkpoints) and loads the best checkpoint at the end: that is part of the product.
* reference: a script written to a temporary file: read the file, build the vocabulary (whitespace words,
  ``<eos>`` at line ends), batchify into 20 streams, N steps of a plain PyTorch LM training loop
  (2x200 LSTM, Adam 1e-3, clip 5, BPTT 35), same thread count and seed.

Target: rnnkit <= 1.05x the reference's median time for N = 150.

    python benchmarks/lm_process.py                    # N=150, 5 alternations (~2-3 minutes)
    python benchmarks/lm_process.py --steps 300 --repeats 7
    python benchmarks/lm_process.py --quick            # smoke run: a few steps, one run each
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET = 1.05

REFERENCE_SCRIPT = '''\
"""Plain PyTorch: read the file, build the vocabulary, batchify, N steps of the plain reference loop."""
import sys

import torch
from torch import nn

path, steps, threads, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(1)

# read the file and build the vocabulary: whitespace words, <eos> at each line end
vocab, ids = {}, []
with open(path, encoding="utf-8") as f:
    for line in f:
        for w in line.split() + ["<eos>"]:
            ids.append(vocab.setdefault(w, len(vocab)))
V, E, H, B, T = len(vocab), size, size, 20, 35
data = torch.tensor(ids, dtype=torch.long)
n = data.numel() // B
data = data[: n * B].view(B, n)  # (B, n): B contiguous streams


class LM(nn.Module):
    def __init__(self, V):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, 2, batch_first=True)
        self.out = nn.Linear(H, V)

    def forward(self, x, h=None):
        y, h = self.lstm(self.emb(x), h)
        return self.out(y), h


model = LM(V)  # nn.Embedding(V, E) -> nn.LSTM(E, H, 2, batch_first=True) -> nn.Linear(H, V)
opt = torch.optim.Adam(model.parameters(), 1e-3); loss_fn = nn.CrossEntropyLoss(); h = None
for step in range(steps):
    pos = (step * T) % (n - T - 1)
    x, y = data[:, pos:pos + T], data[:, pos + 1:pos + T + 1]        # data: (B, n) token ids
    if h is not None: h = tuple(t.detach() for t in h)
    logits, h = model(x, h)
    loss = loss_fn(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step()
print(f"final loss {loss.item():.4f}", file=sys.stderr)
'''


def rnnkit_command(train: Path, steps: int, threads: int, out: Path, size: int) -> list[str]:
    """The ``rnnkit lm train`` command line (the installed console script when there is one)."""
    script = Path(sys.executable).with_name("rnnkit")
    prefix = [str(script)] if script.is_file() else [sys.executable, "-m", "rnnkit"]
    return prefix + [
        "lm", "train", "--train", str(train), "--level", "word", "--max-steps", str(steps),
        "--hidden", str(size), "--emb", str(size), "--layers", "2", "--batch-size", "20", "--bptt", "35",
        "--optimizer", "adam", "--lr", "1e-3", "--clip", "5", "--dropout", "0", "--time-budget", "none",
        "--eval-every", "0", "--log-every", str(steps), "--sample-length", "0", "--no-progress",
        "--threads", str(threads), "--out", str(out), "--overwrite",
    ]


def run_timed(argv: list[str]) -> float:
    """Wall seconds of one process, start to exit; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"error: {' '.join(argv[:4])} ... exited with {proc.returncode}:\n{tail}")
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150, help="training steps N (default 150)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each, alternating (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of both processes (default 2)")
    p.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                   help="folder holding ptb/ptb.train.txt (default ../shared/data from the repo root)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, one timed run each, no warm-up, "
                   "hidden 16")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--steps, --repeats and --threads must be >= 1 and --warmup >= 0")
    size = 200
    if args.quick:
        args.steps, args.repeats, args.warmup, size = min(args.steps, 3), 1, 0, 16
    train = common.data_file(args.data_dir, "ptb", "ptb.train.txt", what="PTB training text")
    info = common.machine_info("cpu", args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-lm-process-"))
    try:
        ref_script = tmp / "reference.py"
        ref_script.write_text(REFERENCE_SCRIPT, encoding="utf-8")
        commands = {
            "reference": [sys.executable, str(ref_script), str(train), str(args.steps), str(args.threads), str(size)],
            "rnnkit": rnnkit_command(train, args.steps, args.threads, tmp / "run", size),
        }
        print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, {info['date']}; "
              f"N = {args.steps} steps at 2x{size}, batch 20, BPTT 35 on {train}")
        print("rnnkit: " + " ".join(commands["rnnkit"]))
        print(f"reference: python reference.py {train} {args.steps} {args.threads} {size}  (REFERENCE_SCRIPT in "
              f"{Path(__file__).name})")
        for _ in range(args.warmup):
            for argv_ in commands.values():
                run_timed(argv_)
        times = common.alternate({name: (lambda a=a: run_timed(a)) for name, a in commands.items()}, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {name: common.summarize(t, digits=3) for name, t in times.items()}
    ratio = common.ratio_summary(times["rnnkit"], times["reference"])
    rows = [{"process": name, "median s": s["median"], "min s": s["min"], "max s": s["max"],
             "x reference": ratio["ratio"] if name == "rnnkit" else 1.0} for name, s in summary.items()]
    print()
    common.print_table(rows, ["process", "median s", "min s", "max s", "x reference"])
    print(f"rnnkit / reference: {ratio['ratio']:.3f} (paired runs {ratio['paired_min']:.3f}-{ratio['paired_max']:.3f});"
          f" target <= {TARGET}")
    met = None if args.quick else ratio["ratio"] <= TARGET
    out = {"benchmark": "lm whole-process time", "machine": info, "quick": args.quick, "steps": args.steps,
           "hidden": size, "repeats": args.repeats, "seconds": summary, "times": times, "ratio": ratio,
           "target": TARGET, "target_met": met}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
