"""UPOS tagging quality on UD English EWT through the product's API (``rnnkit.tasks.tag.train``).

Four variants, each trained for at most ``--minutes`` (15) on ``--threads`` (2) CPU threads from the same
settings, the best checkpoint chosen on the dev split (highest dev accuracy, evaluated ``EVALS`` times), then the
test split scored once:

    words       word embeddings -> BiLSTM -> softmax
    words+crf   ... -> CRF (Viterbi)
    chars       word embeddings + character BiLSTM -> BiLSTM -> softmax
    chars+crf   ... -> CRF

Target: test UPOS accuracy >= 95.0% with no pre-trained vectors. Anchors: Plank et al. 2016,
word + char BiLSTM, about 94.6% UPOS on UD English; UDPipe 2 with pre-trained vectors about 97%.

Settings (``BASE``; ``--set FIELD=VALUE`` overrides any ``rnnkit tag train`` field): word embeddings 100,
character embeddings 50 into a 2x100 character BiLSTM, a 2-layer 2x200 sentence BiLSTM, dropout 0.33; word
embeddings for the words seen at least twice, looked up lowercased (``lowercase``; the character encoder still
sees the case), and word dropout 0.25 (a word becomes ``<unk>`` with that probability, so the model learns to
tag from characters and context what it will meet unseen in test data; the word variants, which have no
characters to fall back on, keep cased embeddings of every word and word dropout 0.05: ``WORD_ONLY``),
batches of 32 sentences bucketed by length,
Adam 2e-3 with 100 warm-up steps and a cosine decay to 0 over the steps that fit the time budget (planned
from a short throughput probe, not counted; the budget still stops training), clip 5, no early stopping.
Why: these are the usual sizes of BiLSTM taggers (Plank et al. 2016; Lample et al. 2016; the UDPipe 2 and
Stanza taggers are wider, with pre-trained vectors); EWT is 204k training tokens, so at a few thousand
tokens/s on 2 cores 15 minutes are roughly 10 epochs, where such taggers have converged; a decay to 0
within the budget settles the weights at the end of a short run. The best checkpoint is the one with the
highest dev accuracy (the tagging task's selection metric). Tuning (2026-11-27, ``chars``, dev accuracy,
step-matched: 5000 steps each with ``--steps 5000 --device cuda`` on a GPU, about what 15 CPU minutes allow):
char BiLSTM 2x64 with char emb 32 0.9432 (the first settings); 2x100 / 50: 0.9457 (kept); word dropout 0.1
and emb 128: 0.9445; hidden 300: 0.9429; dropout 0.5: 0.9427; 3 layers: 0.9396; lr 1e-3: 0.9390. Differences
under ~0.002 are within run-to-run noise. Those settings reached 0.945 test (0.942 dev) in 15 CPU minutes, with
72% accuracy on the 8% of dev tokens unseen in training against 97.5% on words seen 50+ times. Second round
(same day, CPU, ``--steps N --threads 1``, two runs at a time, dev accuracy of the selected checkpoint, unseen-
word accuracy in brackets): at 1500 steps, the first settings 0.9320 (68%), word dropout 0.25: 0.9336 (71%),
plus ``lowercase``: 0.9362 (74%), plus min count 2: 0.9372 (75%; kept), word dropout 0.33 instead: 0.9361,
char BiLSTM 2x150: 0.9384 but 1.3x slower; at 3000 steps, the first settings 0.9412 (73%), the kept ones
0.9474 (79%). Tune with ``--set`` on dev (``--no-test``) before the one test run.

Data: ``--data-dir`` (default ``../shared/data`` from the repo root) ``/ud-english-ewt/en_ewt-ud-{train,dev,
test}.conllu``. When that folder is missing and ``--data-dir`` was not given, the copy bundled with rnnkit
is used (the same official v2.16 files, gzipped; see ``rnnkit/resources/ud-english-ewt/SOURCE.md``) and the
output says so.

    python benchmarks/tag_quality.py                      # 4 x 15 minutes (+ probes and evaluation)
    python benchmarks/tag_quality.py --variant chars+crf --minutes 5 --no-test --set hidden=256
    python benchmarks/tag_quality.py --quick              # smoke run: tiny model, a few steps, seconds
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.data.conll import bundled_ud_ewt, read_conllu, write_conllu  # noqa: E402
from rnnkit.tasks import tag  # noqa: E402

# Without the character encoder a word's embedding is all the model knows of it: the word variants keep cased
# embeddings of every training word and light word dropout (word dropout 0.25 and min count 2 cost them dev
# accuracy in a 15-minute run: 0.906 at step 2,888, against 0.915 at step 2,870 with these settings).
WORD_ONLY = dict(chars=False, lowercase=False, word_dropout=0.05, min_count=1)
VARIANTS = {"words": dict(WORD_ONLY, crf=False), "words+crf": dict(WORD_ONLY, crf=True),
            "chars": dict(chars=True, crf=False), "chars+crf": dict(chars=True, crf=True)}
TARGET = 0.95
EVALS = 10  # dev evaluations per run (checkpoint selection)
BASE = dict(column="upos", emb=100, char_emb=50, char_hidden=100, max_word_chars=24, hidden=200, layers=2,
            dropout=0.33, word_dropout=0.25, min_count=2, lowercase=True, batch_size=32, bucket=True,
            optimizer="adam", lr=2e-3, scheduler="cosine", warmup_steps=100, clip=5.0, patience=0, epochs=1000,
            log_every=50)
QUICK = dict(emb=16, char_emb=8, char_hidden=8, hidden=16, layers=1, batch_size=8, warmup_steps=0, max_steps=3,
             log_every=1)
QUICK_SENTENCES = {"train": 200, "dev": 40, "test": 40}


# --- helpers -----------------------------------------------------------------------------------------------

def ewt_files(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Path], str]:
    """The train/dev/test files and a line saying where they come from (``--quick``: small prefixes)."""
    folder = Path(args.data_dir) / "ud-english-ewt"
    if (folder / "en_ewt-ud-train.conllu").is_file() or args.data_dir_given:
        paths = {s: common.data_file(args.data_dir, "ud-english-ewt", f"en_ewt-ud-{s}.conllu",
                                     what=f"UD English EWT {s} split") for s in ("train", "dev", "test")}
        source = f"{folder}"
    else:
        paths = bundled_ud_ewt()
        source = f"bundled copy {paths['train'].parent} ({folder} not found)"
    if args.quick:
        small = {}
        for split, path in paths.items():
            small[split] = tmp / f"{split}.conllu"
            with open(small[split], "w", encoding="utf-8") as f:
                write_conllu(read_conllu(path)[:QUICK_SENTENCES[split]], f)
        paths, source = small, source + f", first {QUICK_SENTENCES} sentences (--quick)"
    return paths, source


def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_run(fields: dict[str, Any], out: Path) -> tuple[tag.TagRun, dict[str, Any]]:
    """``tag.train`` into ``out``; returns the loaded best run and how the training went."""
    start = time.perf_counter()
    run = tag.train(out=str(out), overwrite=True, progress=sys.stderr.isatty(), **fields)
    wall = time.perf_counter() - start
    lines = metrics_lines(out)
    train_lines = [r for r in lines if r.get("split") == "train"]
    valid_lines = [r for r in lines if r.get("split") == "valid"]
    best = max(valid_lines, key=lambda r: r["accuracy"]) if valid_lines else {}  # what the task selects on
    last = lines[-1] if lines else {}
    return run, {"wall_s": round(wall, 1), "train_s": last.get("elapsed_s"), "steps": last.get("step"),
                 "epochs_started": last.get("epoch", 0) + 1 if lines else None, "best_step": best.get("step"),
                 "train_tokens_per_s": statistics.median([r["tokens_per_s"] for r in train_lines[1:]])
                 if len(train_lines) > 1 else None}


def plan_steps(fields: dict[str, Any], budget_s: float, out: Path, args: argparse.Namespace,
               dev_tokens: int) -> tuple[int, int, dict[str, Any]]:
    """Steps that fit ``budget_s`` with ``EVALS`` dev evaluations, from a probe run's tokens/s.

    The probe trains ``--probe-steps`` steps with the same settings and reads the engine's tokens/s
    (``metrics.jsonl``, windows after the first); an evaluation is assumed to cost half as many seconds as
    training on the same number of tokens (no backward pass, but it runs the model twice: loss and decoding).
    ``--steps N`` skips the probe (N steps, then the time budget is off: for step-matched tuning runs on
    another machine).
    """
    if args.steps is not None:
        return args.steps, max(1, args.steps // EVALS), {"planned_steps": args.steps, "probe": "skipped (--steps)"}
    probe = {**fields, "max_steps": args.probe_steps, "log_every": max(1, args.probe_steps // 4),
             "eval_every": 0, "time_budget": None, "scheduler": "none", "valid": None}
    start = time.perf_counter()
    train_run(probe, out)
    rates = [r["tokens_per_s"] for r in metrics_lines(out) if r.get("split") == "train"][1:]
    tps = statistics.median(rates) if rates else 1.0
    sentences = read_conllu(fields["train"])
    train_tokens = sum(len(s.tokens) for s in sentences)
    per_step = train_tokens / len(sentences) * fields["batch_size"]  # tokens per batch, on average
    eval_s = dev_tokens / (2 * tps)
    # A 30-step probe (a small sample of the bucketed lengths) overestimated the run's tokens/s by 20% and the
    # cosine schedule was cut at 80%; 100 steps came within 2% (chars: probe 2,348, run 2,378 tokens/s), but
    # with 0.9 slack and evaluations costed as training, the 15-minute runs of 2026-11-27 trained 722-856 s
    steps = max(1, int(0.97 * (budget_s - EVALS * eval_s) * tps / per_step))
    if args.quick:
        steps = min(steps, QUICK["max_steps"])
    shutil.rmtree(out, ignore_errors=True)
    return steps, max(1, steps // EVALS), {"probe_steps": args.probe_steps, "probe_tokens_per_s": round(tps, 1),
                                           "probe_wall_s": round(time.perf_counter() - start, 1),
                                           "planned_steps": steps,
                                           "planned_epochs": round(steps * per_step / train_tokens, 2)}


def run_variant(name: str, args: argparse.Namespace, files: dict[str, Path], root: Path) -> dict[str, Any]:
    fields = {**BASE, **VARIANTS[name], **(QUICK if args.quick else {}), **args.overrides,
              "train": str(files["train"]), "valid": str(files["dev"])}
    budget = args.minutes * 60
    dev_tokens = sum(len(s.tokens) for s in read_conllu(files["dev"]))
    steps, eval_every, plan = plan_steps(fields, budget, root / name / "probe", args, dev_tokens)
    fields.update(max_steps=steps, eval_every=eval_every, time_budget=None if args.steps else budget)
    run, how = train_run(fields, root / name / "run")
    dev = run.evaluate(files["dev"])
    res = {"variant": name, "settings": {k: v for k, v in fields.items() if k not in ("train", "valid")}, **plan,
           **how, "dev": dev}
    if not args.no_test:
        res["test"] = run.evaluate(files["test"])
        res["target_met"] = None if args.quick else res["test"]["accuracy"] >= TARGET
    return res


# --- main --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                   help="which variants (default all four)")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per variant (default 15)")
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly N steps with no time budget and no probe (step-matched tuning runs)")
    p.add_argument("--probe-steps", type=int, default=100, help="steps of the throughput probe (default 100)")
    p.add_argument("--set", dest="overrides", action="append", type=common.parse_override, default=[],
                   metavar="FIELD=VALUE", help="override a tag train field (repeatable)")
    p.add_argument("--no-test", action="store_true", help="dev only (while choosing settings)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding ud-english-ewt/ (default ../shared/data from the repo root, or the "
                   "bundled copy when that is missing)")
    p.add_argument("--out-dir", default=None, help="where the runs go (default runs/tag_quality in the repo; "
                   "a temporary folder with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model and data, a few steps per variant")
    args = p.parse_args(argv)
    args.data_dir_given = args.data_dir is not None
    args.data_dir = args.data_dir or str(common.DEFAULT_DATA_DIR)
    args.overrides = common.typed_overrides(tag.TagConfig, args.overrides, p)
    args.overrides.update(threads=args.threads, device=args.device, seed=args.overrides.get("seed", 1))
    if args.quick:
        args.minutes, args.probe_steps = 2 / 60, 4
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-tag-quality-")) if args.quick else None
    root = Path(args.out_dir) if args.out_dir else (tmp or common.REPO_ROOT / "runs" / "tag_quality")
    results = []
    try:
        files, source = ewt_files(args, tmp or root)
        print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
              f"{info['date']}; data: {source}; runs in {root}", flush=True)
        for name in args.variant:
            print(f"\n== {name} ==", flush=True)
            res = run_variant(name, args, files, root)
            results.append(res)
            print("settings: " + " ".join(f"{k}={v}" for k, v in res["settings"].items()), flush=True)
            test = f", test accuracy {res['test']['accuracy']:.4f}" if "test" in res else ""
            print(f"{name}: dev accuracy {res['dev']['accuracy']:.4f}{test} after {res['steps']} steps "
                  f"({res['train_s']} s of training)", flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [{"variant": r["variant"], "dev acc": r["dev"]["accuracy"],
             "test acc": r["test"]["accuracy"] if "test" in r else None, "steps": r["steps"],
             "planned epochs": r.get("planned_epochs"), "best step": r["best_step"],
             "tokens/s": r["train_tokens_per_s"], "train s": r["train_s"]} for r in results]
    print()
    common.print_table(rows, ["variant", "dev acc", "test acc", "steps", "planned epochs", "best step", "tokens/s",
                              "train s"], title=f"UPOS accuracy, UD English EWT (target: test >= {TARGET:.3f})")
    out = {"benchmark": "tag quality", "machine": info, "quick": args.quick, "data": source,
           "minutes": args.minutes, "target": TARGET, "results": results,
           "test_accuracy": {r["variant"]: r["test"]["accuracy"] for r in results if "test" in r},
           "targets_met": {r["variant"]: r.get("target_met") for r in results}}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
