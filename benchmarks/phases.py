"""Slow phases: training tokens/s per 50-step window over 1,000 steps, for each task's default training.

A run that starts fast and then collapses for long stretches (as the tagger did on CPU before the engine
flushed denormal floats to zero: ~7,000 tokens/s for 40-60 steps, then 200-400) shows up here as a window far
below the median. Each task trains through its public Python API (``rnnkit.tasks.lm/tag/seq2seq/classify.
train``) with its default settings (the classifier: the genres of the bundled UD EWT sentences), except:
``max_steps`` (default 1,000), no time budget, ``log_every`` = the window (default 50), ``progress=False``, and
for the tagger the XPOS column of UD English EWT, the case where the collapse was seen. The engine logs
``tokens_per_s`` for each window in ``metrics.jsonl``, leaving out the time of evaluations and checkpoints
inside it (windows holding a validation pass are marked). The first ``--warmup`` windows are left out of the
ratio median / slowest window, which is flagged when above 2.

    python benchmarks/phases.py                  # long: 1,000 steps per task on 2 cores
    python benchmarks/phases.py --task tag       # one task
    python benchmarks/phases.py --quick          # smoke run: tiny models and data, a few steps
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.data.conll import bundled_ud_ewt, read_conllu, write_conllu  # noqa: E402
from rnnkit.data.pairs import bundled_tatoeba, read_tsv_pairs  # noqa: E402
from rnnkit.tasks import classify, lm, seq2seq, tag  # noqa: E402

QUICK = {
    "lm": dict(emb=8, hidden=16, layers=1, batch_size=4, bptt=16),
    "tag": dict(emb=16, char_emb=8, char_hidden=8, hidden=16, batch_size=8),
    "seq2seq": dict(emb=16, enc_hidden=16, hidden=32, batch_size=8),
    "classify": dict(emb=16, hidden=16, batch_size=8),
}
TASKS = {"lm": lm, "tag": tag, "seq2seq": seq2seq, "classify": classify}
QUICK_LINES = 200
FLAG_RATIO = 2.0


def quick_data(task: str, tmp: Path) -> dict[str, Any]:
    """Small training (and no validation) data for ``--quick``: the first lines of the bundled data."""
    if task == "lm":
        text = tmp / "lm.txt"
        text.write_text("".join(f"line {i} of a tiny corpus, some words repeat.\n" for i in range(QUICK_LINES)))
        return {"train": str(text), "valid": None}
    if task == "tag":
        path = tmp / "tag.conllu"
        with open(path, "w", encoding="utf-8") as f:
            write_conllu(read_conllu(bundled_ud_ewt()["train"])[:QUICK_LINES], f)
        return {"train": str(path), "valid": None}
    if task == "classify":
        path = tmp / "texts.tsv"
        path.write_text("".join(f"{'a good' if i % 2 else 'a bad'} text number {i}\t{i % 2}\n"
                                for i in range(QUICK_LINES)), encoding="utf-8")
        return {"train": str(path), "valid": None, "text_column": "0", "label_column": "1"}
    pairs = read_tsv_pairs(bundled_tatoeba()["train"]).pairs[:QUICK_LINES]
    path = tmp / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return {"train": str(path), "valid": None}


def windows(metrics: Path) -> list[dict[str, Any]]:
    """Per logged training window: last step, tokens/s, and whether a validation pass fell inside it."""
    lines = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
    evals = [r["step"] for r in lines if r.get("split") == "valid" and "step" in r]
    out, previous = [], 0
    for r in lines:
        if r.get("split") == "train" and "tokens_per_s" in r:
            out.append({"step": r["step"], "tokens_per_s": r["tokens_per_s"],
                        "eval": any(previous <= s < r["step"] for s in evals)})
            previous = r["step"]
    return out


def summary(rows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Median and slowest window after warm-up and their ratio, flagged > 2."""
    kept = [r["tokens_per_s"] for r in rows[warmup:]]
    if not kept:
        return {"counted": 0, "median": None, "slowest": None, "median/slowest": None, "flag": False}
    median, slowest = statistics.median(kept), min(kept)
    ratio = median / max(slowest, 1e-9)
    return {"counted": len(kept), "median": round(median, 1), "slowest": round(slowest, 1),
            "median/slowest": round(ratio, 2), "flag": ratio > FLAG_RATIO}


def run_task(task: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / task
    fields: dict[str, Any] = {"max_steps": args.steps, "time_budget": None, "log_every": args.window,
                              "threads": args.threads, "device": args.device}
    if task == "tag" and not args.quick:  # the quick copy of the data keeps only the default UPOS column
        fields["column"] = "xpos"
    if args.quick:
        fields.update(QUICK[task], **quick_data(task, tmp))
    TASKS[task].train(out=str(out), overwrite=True, progress=False, **fields)
    rows = windows(out / "metrics.jsonl")
    return {"task": task, "settings": {k: v for k, v in fields.items() if k not in ("train", "valid")},
            "windows": rows, **summary(rows, args.warmup)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS),
                   help="which tasks (default all four)")
    p.add_argument("--steps", type=int, default=1000, help="training steps per task (default 1000)")
    p.add_argument("--window", type=int, default=50, help="steps per timing window (default 50)")
    p.add_argument("--warmup", type=int, default=1, help="first windows left out of the ratio (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models and data, a few steps")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.window, args.warmup = 6, 2, 1
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
          f"{info['date']}; {args.steps} steps per task, windows of {args.window}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-phases-"))
    try:
        results = [run_task(task, args, tmp) for task in args.task]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        marks = " ".join(f"{w['tokens_per_s']:.0f}{'*' if w['eval'] else ''}" for w in r["windows"])
        print(f"\n{r['task']}: tokens/s per {args.window}-step window (* = holds a validation pass): {marks}")
    table = [{k: r[k] for k in ("task", "counted", "median", "slowest", "median/slowest")}
             | {"flag": "SLOW PHASE" if r["flag"] else ""} for r in results]
    print()
    common.print_table(table, ["task", "counted", "median", "slowest", "median/slowest", "flag"],
                       title=f"Windows after {args.warmup} warm-up window(s)")
    out = {"benchmark": "phases", "machine": info, "quick": args.quick, "results": results}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
