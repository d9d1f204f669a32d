"""Language-model quality through the product's API (``rnnkit.tasks.lm.train``): figures, settings and wall times.

Parts (``--part``, one or more; each trains into ``--out-dir/<part>`` and reports the best checkpoint,
chosen on the validation split; the test split is scored once, at the end):

* ``char``: Tiny Shakespeare (the bundled copy: first 90% train, last 10% valid), ``--minutes`` (10) of
  training. Target: valid loss <= 1.55 nats/char. Settings: 2x256 LSTM, emb 64, dropout 0.2, batch
  64, BPTT 128, Adam 4e-3 with 100 warm-up steps and a cosine decay to 0 over the steps that fit the time
  budget (planned from a short throughput probe, which is not counted; the budget still stops training).
  Measured 2026-11-27 on this project's 2-core machine: valid 1.547 after 897 steps (7.3M chars, 7 epochs,
  581 s). Why this size: char models run at this machine's GEMM roofline (``throughput.py``: 2x512 at 93%),
  so 10 minutes are a fixed FLOP budget and the question is which size spends it best. Probes: 2x512 / batch
  32 4.5k chars/s, 2x384 / 64 6.8-7.9k, 2x256 / 64 12.8-14.7k. The same command with 2x512 / batch 32 / lr
  2e-3 (588 steps, 2.3 epochs) gave 1.715, with 2x384 / emb 96 / batch 64 / lr 4e-3 (474 steps) 1.613.
  Batch 64 / lr 4e-3 came from step-matched GPU runs (2x512: 1.47 after 700 steps, lr 2e-3 1.58).
* ``zaremba``: PTB word level, Zaremba et al. 2014 "small": 2x200 LSTM, BPTT 20, batch 20, SGD, clip, 13
  epochs, lr decay 0.5 per epoch after epoch 4, no dropout. Anchor: test perplexity 114.5. Their loss is
  the per-step batch mean SUMMED over the 20 time steps (lr 1, clip 5 on that gradient); rnnkit optimises
  the mean over all tokens, whose gradient is 20x smaller, so the same updates are lr 20 and clip 0.25 here
  (clipping scales linearly, so this is exact). Their init is uniform(-0.1, 0.1) for every weight; rnnkit
  initialises embedding and output that way but the LSTM with torch's uniform(+-1/sqrt(200) = 0.071) (see
  the note printed when the product has no ``init_range`` field).
* ``best``: the best PTB test perplexity within ``--best-minutes`` (30) of training. Target <= 100.
  Settings: 2x400 LSTM with tied embedding/output weights (emb = hidden = 400), locked dropout 0.3 on the
  output, 0.15 between layers, 0.05 on the embeddings, batch 32, BPTT 35, Adam 4e-3, clip 0.5, 1,500 linear
  warm-up steps, then cosine decay to 0 over the planned steps (probe as for ``char``). Measured on this
  project's 2-core machine (``--steps N --no-test``, then the chosen run's test split once): warm-up 600 /
  1000 (3,442 steps) valid 107.1 / 104.1; warm-up 1500 (3,560 planned, 3,420 done in the 30 minutes) valid
  103.2, **test 98.3**. Why: PTB medium (2x650) trains at ~1.8k tokens/s here, only ~3.5 epochs in 30
  minutes, too few for its regularisation to pay; 2x400 costs about half per token, tying removes 4M
  parameters and is worth ~5-10 perplexity points at this size (Press & Wolf 2017; Inan et al. 2017), and
  Adam with a decay to 0 converges in few epochs where SGD needs 30+. Learning rate, warm-up and dropout
  came from step-matched runs on one GPU: each candidate
  trained the steps its CPU throughput allows in 30 minutes (80-step probes here: 2x400 tied 2,317 tokens/s
  -> 3,442 steps; 2x200 tied 4,565 -> 6,946; 2x400 with the adaptive softmax (2000,5000, untied) 3,887 ->
  5,889; 2x650 adaptive 2,032 -> 2,997; 2x300 tied 2,907 -> 4,361; 2x400 tied batch 64 2,520 -> 1,879),
  i.e. ``--device cuda --steps N --no-test --set ...``; valid perplexity of the best checkpoint:

  | model | lr | dropout out/between/emb | warm-up | valid |
  | --- | --- | --- | --- | --- |
  | 2x400 tied | 2e-3 / 3e-3 / 4e-3 / 5e-3 | 0.3/0.15/0.05 | 100 | 124.6 / 115.1 / 114.1 / 112.2 |
  | 2x400 tied | 4e-3 | 0.2/0.1/0.05 | 100 | 113.7 |
  | 2x400 tied | 4e-3 / 5e-3 | 0.3/0.15/0.05 | 300 | 110.1 / 108.8 |
  | 2x400 tied | 5e-3 | 0.3/0.2/0.1 ; 0.2/0.1/0.05 | 300 | 109.4 ; 110.6 |
  | 2x400 tied | 6e-3 ; 4e-3 | 0.3/0.15/0.05 | 500 ; 600 | 107.4 ; 106.3 |
  | 2x400 tied, batch 64 | 4e-3 | 0.3/0.15/0.05 | 100 | 123.4 |
  | 2x300 tied | 3e-3 | 0.3/0.15/0.05 | 100 | 123.4 |
  | 2x200 tied | 3e-3 ; 5e-3 | 0.2/0.1/0.05 | 100 | 120.3 ; 115.9 |
  | 2x200 tied | 3e-3 / 5e-3 / 7e-3 | 0.3/0.2/0.1 | 100 | 116.9 / 112.9 / 114.0 |
  | 2x200 tied | 5e-3 | 0.3/0.2/0.1 | 600 | 114.6 |
  | 2x400 adaptive | 3e-3 / 5e-3 | 0.3/0.15/0.05 | 100 | 112.1 / 115.2 (clip 1.0: 113.5) |
  | 2x400 adaptive | 3e-3 / 4e-3 | 0.2/0.1/0.05 | 100 | 116.2 / 122.7 (emb 200: 118.7) |
  | 2x400 adaptive | 3e-3 | 0.4/0.25/0.1 ; 0.15/0.05/0 | 100 | 114.3 ; 119.0 |
  | 2x650 adaptive | 2e-3 | 0.4/0.25/0.1 | 100 | 138.5 |

  The GPU runs use cuDNN and other dropout masks, so a CPU run of the same steps lands near, not on, these
  figures; differences of 1-2 points between neighbouring rows are within run-to-run noise (e.g. the adaptive
  0.3 and 0.2 dropout rows). CPU results: see benchmarks/README.md.
* ``adaptive``: PTB 2x200 (dropout 0.2, batch 20, BPTT 35, Adam 2e-3, clip 0.5), ``--adaptive-epochs`` (3)
  epochs with the full softmax, then the same with the adaptive softmax (``--cutoffs``): test perplexity and
  training time of each. Target: adaptive within 3% of the full softmax's test perplexity.

``--set FIELD=VALUE`` (repeatable) overrides any ``rnnkit lm train`` field of the selected parts, e.g.
``--set hidden=650 --set dropout=0.5``.

    python benchmarks/lm_quality.py --part char                # ~11 minutes
    python benchmarks/lm_quality.py --part zaremba             # 13 epochs of PTB small (~30 minutes)
    python benchmarks/lm_quality.py --part best                # ~31 minutes
    python benchmarks/lm_quality.py --part adaptive            # 2 x 3 epochs of PTB 2x200
    python benchmarks/lm_quality.py --part char zaremba best adaptive --quick   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.tasks import lm  # noqa: E402

PARTS = ("char", "zaremba", "best", "adaptive")
TARGETS = {"char": 1.55, "zaremba": 114.5, "best": 100.0, "adaptive": 1.03}

CHAR = dict(level="char", model="lstm", layers=2, hidden=256, emb=64, dropout=0.2, batch_size=64, bptt=128,
            optimizer="adam", lr=4e-3, scheduler="cosine", warmup_steps=100, clip=5.0, patience=0)
ZAREMBA = dict(level="word", model="lstm", layers=2, hidden=200, emb=200, dropout=0.0, batch_size=20, bptt=20,
               optimizer="sgd", lr=20.0, clip=0.25, scheduler="step", lr_decay=0.5, decay_start=4, epochs=13,
               patience=0, eval_every=0, time_budget=None)
BEST = dict(level="word", model="lstm", layers=2, hidden=400, emb=400, tie_weights=True, dropout=0.3,
            dropout_hidden=0.15, dropout_emb=0.05, batch_size=32, bptt=35, optimizer="adam", lr=4e-3, clip=0.5,
            scheduler="cosine", warmup_steps=1500, patience=0)
ADAPTIVE = dict(level="word", model="lstm", layers=2, hidden=200, emb=200, dropout=0.2, batch_size=20, bptt=35,
                optimizer="adam", lr=2e-3, clip=0.5, patience=0, eval_every=0, time_budget=None)
QUICK = dict(layers=2, hidden=16, emb=16, batch_size=8, bptt=32, warmup_steps=0, max_steps=3)


# --- helpers -----------------------------------------------------------------------------------------------

def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_run(fields: dict[str, Any], out: Path) -> tuple[lm.LMRun, dict[str, Any]]:
    """``lm.train`` into ``out``; returns the loaded best run and how the training went.

    ``wall_s``: the whole call (data, training, evaluations, checkpoints); ``train_s``: the engine's training
    time (evaluations during training included), from the ``last`` checkpoint.
    """
    start = time.perf_counter()
    run = lm.train(out=str(out), overwrite=True, progress=sys.stderr.isatty(), **fields)
    wall = time.perf_counter() - start
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        state = json.loads(f.metadata()["rnnkit"])["state"]
    rates = [r["tokens_per_s"] for r in metrics_lines(out) if r.get("split") == "train"][1:]
    return run, {"wall_s": round(wall, 1), "train_s": round(state["elapsed_s"], 1), "steps": state["step"],
                 "epochs_done": state["epoch"], "train_tokens_per_s": statistics.median(rates) if rates else None}


def plan_steps(fields: dict[str, Any], budget_s: float, out: Path, args: argparse.Namespace,
               evals: int) -> tuple[int, int, dict[str, Any]]:
    """Steps that fit ``budget_s`` (and an eval interval giving ``evals`` evaluations), from a probe run.

    The probe trains ``--probe-steps`` steps with the same settings and reads the engine's own tokens/s
    (``metrics.jsonl``, windows after the first); an evaluation is assumed to run 3x faster per token.
    ``--steps`` skips the probe.
    """
    if args.steps is not None:
        return args.steps, max(1, args.steps // evals), {"planned_steps": args.steps, "probe": "skipped (--steps)"}
    probe = {**fields, "max_steps": args.probe_steps, "log_every": max(1, args.probe_steps // 4), "eval_every": 0,
             "time_budget": None, "scheduler": "none"}
    start = time.perf_counter()
    train_run(probe, out)
    lines = metrics_lines(out)
    rates = [r["tokens_per_s"] for r in lines if r.get("split") == "train"][1:]
    tps = statistics.median(rates) if rates else 1.0
    valid_tokens = next((r["tokens"] for r in lines if r.get("split") == "valid"), 0)
    eval_s = valid_tokens / (3 * tps)
    per_step = fields["batch_size"] * fields["bptt"]
    steps = max(1, int(0.97 * (budget_s - evals * eval_s) * tps / per_step))
    if args.quick:
        steps = min(steps, QUICK["max_steps"])
    shutil.rmtree(out, ignore_errors=True)
    return steps, max(1, steps // evals), {"probe_steps": args.probe_steps, "probe_tokens_per_s": round(tps, 1),
                                             "probe_wall_s": round(time.perf_counter() - start, 1),
                                             "planned_steps": steps}


def init_note(fields: dict[str, Any]) -> str | None:
    """Use an ``init_range`` field when the product has one; otherwise say what differs from Zaremba et al."""
    if "init_range" in {f.name for f in dataclasses.fields(lm.LMConfig)}:
        fields["init_range"] = 0.1
        return None
    return ("rnnkit has no init_range field: LSTM weights use torch's uniform(+-1/sqrt(H)) = +-0.071, not "
            "Zaremba's +-0.1 (embedding and output are +-0.1)")


def evaluate(run: lm.LMRun, test: Path | None) -> dict[str, Any]:
    out = {"valid": run.evaluate()}
    if test is not None:
        out["test"] = run.evaluate(test)
    return out


# --- parts -------------------------------------------------------------------------------------------------

def part_char(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    fields = {**CHAR, **(QUICK if args.quick else {}), **args.overrides, "train": None, "valid": None,
              "epochs": 1000}
    budget = args.minutes * 60
    steps, eval_every, plan = plan_steps(fields, budget, out / "probe", args, evals=5)
    fields.update(max_steps=steps, eval_every=eval_every, time_budget=budget)
    run, how = train_run(fields, out / "run")
    res = evaluate(run, None)
    loss = res["valid"]["loss"]
    return {"part": "char", "settings": fields, **plan, **how, **res, "target": f"valid loss <= {TARGETS['char']}",
            "target_met": None if args.quick else loss <= TARGETS["char"], "headline": f"valid {loss:.4f} nats/char"}


def ptb_fields(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    train = common.data_file(args.data_dir, "ptb", "ptb.train.txt", what="PTB training text")
    valid = common.data_file(args.data_dir, "ptb", "ptb.valid.txt", what="PTB validation text")
    test = common.data_file(args.data_dir, "ptb", "ptb.test.txt", what="PTB test text")
    return {"train": str(train), "valid": str(valid)}, test


def part_zaremba(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    data, test = ptb_fields(args)
    fields = {**ZAREMBA, **data, **(QUICK if args.quick else {})}
    note = init_note(fields)
    fields.update(args.overrides)
    run, how = train_run(fields, out / "run")
    res = evaluate(run, test)
    ppl = res["test"]["perplexity"]
    return {"part": "zaremba", "settings": fields, **how, **res, "note": note,
            "target": f"test perplexity near the anchor {TARGETS['zaremba']}",
            "target_met": None if args.quick else ppl <= TARGETS["zaremba"] * 1.03,
            "headline": f"test ppl {ppl:.1f} (anchor {TARGETS['zaremba']})"}


def part_best(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    data, test = ptb_fields(args)
    fields = {**BEST, **data, **(QUICK if args.quick else {}), **args.overrides, "epochs": 1000}
    if fields.get("tie_weights"):
        fields["emb"] = fields["hidden"]
    budget = args.best_minutes * 60
    steps, eval_every, plan = plan_steps(fields, budget, out / "probe", args, evals=8)
    fields.update(max_steps=steps, eval_every=eval_every, time_budget=budget)
    run, how = train_run(fields, out / "run")
    res = evaluate(run, None if args.no_test else test)
    if args.no_test:
        target, met, headline = "test not scored (--no-test)", None, f"valid ppl {res['valid']['perplexity']:.1f}"
    else:
        ppl = res["test"]["perplexity"]
        target, met, headline = f"test perplexity <= {TARGETS['best']}", ppl <= TARGETS["best"], f"test ppl {ppl:.1f}"
    return {"part": "best", "settings": fields, **plan, **how, **res, "target": target,
            "target_met": None if args.quick else met, "headline": headline}


def part_adaptive(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    data, test = ptb_fields(args)
    base = {**ADAPTIVE, **data, **(QUICK if args.quick else {}), "epochs": args.adaptive_epochs, **args.overrides}
    cutoffs = args.cutoffs
    if args.quick:  # cut-offs that fit the quick corpus's vocabulary
        vocab = len(lm.prepare(lm.make_config(**base, out=str(out / "x")))[0].vocab)
        cutoffs = (vocab // 4, vocab // 2)
    runs = {}
    for softmax in ("full", "adaptive"):
        fields = {**base, "softmax": softmax, "cutoffs": cutoffs if softmax == "adaptive" else ()}
        run, how = train_run(fields, out / softmax)
        runs[softmax] = {"settings": fields, **how, **evaluate(run, test)}
    ratio = runs["adaptive"]["test"]["perplexity"] / runs["full"]["test"]["perplexity"]
    fast, slow = runs["adaptive"]["train_tokens_per_s"], runs["full"]["train_tokens_per_s"]
    speed = round(fast / slow, 3) if fast and slow else None  # the engine's tokens/s (log windows after the first)
    return {"part": "adaptive", "epochs": args.adaptive_epochs, "cutoffs": list(cutoffs), "full": runs["full"],
            "adaptive": runs["adaptive"], "test_ppl_ratio": round(ratio, 4), "train_tokens_per_s_ratio": speed,
            "train_time_ratio": round(runs["full"]["train_s"] / max(runs["adaptive"]["train_s"], 1e-9), 3),
            "target": "adaptive test perplexity within 3% of full",
            "target_met": None if args.quick else ratio <= TARGETS["adaptive"],
            "headline": f"test ppl full {runs['full']['test']['perplexity']:.1f}, adaptive "
                        f"{runs['adaptive']['test']['perplexity']:.1f} ({ratio:.3f}x); training tokens/s "
                        f"adaptive/full {speed}"}


# --- main --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", nargs="+", choices=PARTS, required=True, help="what to run")
    p.add_argument("--minutes", type=float, default=10.0, help="char: training minutes (default 10)")
    p.add_argument("--best-minutes", type=float, default=30.0, help="best: training minutes (default 30)")
    p.add_argument("--adaptive-epochs", type=int, default=3, help="adaptive: epochs of each run (default 3)")
    p.add_argument("--cutoffs", type=lambda s: tuple(int(v) for v in s.split(",")), default=(2000, 5000),
                   help="adaptive: cut-offs (default 2000,5000)")
    p.add_argument("--steps", type=int, default=None, help="char/best: planned steps (the cosine length), "
                   "instead of probing the throughput")
    p.add_argument("--probe-steps", type=int, default=40, help="char/best: steps of the throughput probe (40)")
    p.add_argument("--no-test", action="store_true", help="best: valid only, while choosing settings (score the "
                   "chosen run's test split once, e.g. with rnnkit lm evaluate RUN --test ptb.test.txt)")
    p.add_argument("--set", dest="overrides", action="append", type=common.parse_override, default=[],
                   metavar="FIELD=VALUE", help="override an lm train field (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                   help="folder holding ptb/ (default ../shared/data from the repo root)")
    p.add_argument("--out-dir", default=None, help="where the runs go (default runs/lm_quality in the repo; "
                   "a temporary folder with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, a few steps per part")
    args = p.parse_args(argv)
    args.overrides = common.typed_overrides(lm.LMConfig, args.overrides, p)
    args.overrides.update(threads=args.threads, device=args.device, seed=args.overrides.get("seed", 1))
    if args.quick:
        args.minutes = args.best_minutes = 2 / 60
        args.adaptive_epochs, args.probe_steps = 1, 4
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-lm-quality-")) if args.quick and args.out_dir is None else None
    root = tmp or Path(args.out_dir or common.REPO_ROOT / "runs" / "lm_quality")
    print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
          f"{info['date']}; runs in {root}")
    runners = {"char": part_char, "zaremba": part_zaremba, "best": part_best, "adaptive": part_adaptive}
    results = []
    try:
        for part in args.part:
            print(f"\n== {part} ==", flush=True)
            res = runners[part](args, root / part)
            results.append(res)
            settings = res.get("settings") or res["full"]["settings"]
            print("settings: " + " ".join(f"{k}={v}" for k, v in settings.items() if k not in ("train", "valid")))
            if res.get("note"):
                print(f"note: {res['note']}")
            print(f"{part}: {res['headline']}; target: {res['target']} -> {res['target_met']}", flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for res in results:
        for name, r in ([(res["part"], res)] if "valid" in res else
                        [(f"adaptive:{k}", res[k]) for k in ("full", "adaptive")]):
            rows.append({"part": name, "valid loss": r["valid"]["loss"], "valid ppl": r["valid"]["perplexity"],
                         "test ppl": r["test"]["perplexity"] if "test" in r else None,
                         "steps": r["steps"], "train s": r["train_s"], "wall s": r["wall_s"]})
    print()
    common.print_table(rows, ["part", "valid loss", "valid ppl", "test ppl", "steps", "train s", "wall s"])
    out = {"benchmark": "lm quality", "machine": info, "quick": args.quick, "results": results,
           "targets_met": {r["part"]: r["target_met"] for r in results}}
    common.print_json(_finite(out))
    return out


def _finite(x: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


if __name__ == "__main__":
    main()
