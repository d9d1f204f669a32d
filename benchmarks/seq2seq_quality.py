"""Seq2seq translation quality through the product's API (``rnnkit.tasks.seq2seq.train``): BLEU, settings, times.

Parts (``--part``, one or more; each trains into ``--out-dir/<part>``; decoding settings are chosen on the
validation split, and the test split is scored once, at the end):

* ``multi30k``: German -> English Multi30k (``--data-dir``/multi30k: ``train``, ``val`` and
  ``test_2016_flickr`` ``.de``/``.en``; research use only: read from there, never shipped). Two models, each
  trained for ``--minutes`` (15) on ``--threads`` (2): with additive attention, and the same model with
  ``--attention none`` (the classic encoder-decoder). Test BLEU both ways: sacrebleu's on detokenised text
  (case-sensitive, ``13a``) and lowercased tokenised BLEU (:func:`rnnkit.metrics.translation.tokenized_bleu`,
  the way the anchor scores: an attention GRU reaches 28.3 after 10 GPU epochs, 20.6 without attention).
  Targets: >= 25 with attention (lowercased tokenised) and >= 3 BLEU between the two models.
* ``tatoeba``: the bundled English -> French subset with the ``rnnkit seq2seq train`` defaults (the model a
  user gets with no flags) for ``--tatoeba-minutes`` (5, the default time budget): test BLEU, chrF, exact match.

Settings for Multi30k (``--set FIELD=VALUE`` overrides any ``rnnkit seq2seq train`` field of the selected
parts): BPE subwords (8k per side: the raw captions glue punctuation to words, ``bushes.``, which a word
vocabulary would split into rare types), a GRU encoder-decoder as the anchor's (emb 256, 256 per encoder
direction, decoder 256, dropout 0.3, label smoothing 0.1), batch 64, Adam 2e-3 with 200 warm-up steps and
a cosine decay to 0 over the steps that fit the budget. The steps are planned from a short throughput probe
of the same model (not counted; ``--steps`` skips it), separately for each model, so each gets the same
wall time; the time budget still stops training. The validation split is decoded greedily at each of 6
evaluations (logged BLEU), and the ``best`` checkpoint is the one with the lowest validation loss.

Decoding: beam ``--beam`` (5); the GNMT length penalty is picked from ``--length-penalties`` (0, 0.6, 1.0) by
sacrebleu BLEU on the validation split, for each model.

    python benchmarks/seq2seq_quality.py --part multi30k             # ~2 x 16 minutes
    python benchmarks/seq2seq_quality.py --part tatoeba              # ~6 minutes
    python benchmarks/seq2seq_quality.py --part multi30k tatoeba --quick   # smoke run, seconds

Prints a table and one JSON line (the last line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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

from rnnkit.data.pairs import bundled_tatoeba, read_parallel, read_tsv_pairs  # noqa: E402
from rnnkit.metrics.translation import corpus_scores, tokenized_bleu  # noqa: E402
from rnnkit.tasks import seq2seq as s2s  # noqa: E402

PARTS = ("multi30k", "tatoeba")
MULTI30K = dict(level="subword", subword_vocab=8000, cell="gru", attention="additive", emb=256, enc_hidden=256,
                hidden=256, layers=1, dropout=0.3, label_smoothing=0.1, batch_size=64, optimizer="adam", lr=2e-3,
                scheduler="cosine", warmup_steps=200, clip=1.0, patience=0, epochs=1000, valid_beam=1)
EVALS = 6
QUICK = dict(emb=16, enc_hidden=16, hidden=32, subword_vocab=300, batch_size=16, warmup_steps=1)
QUICK_PAIRS = {"train": 300, "valid": 30, "test": 30}
TARGET_BLEU, TARGET_GAP = 25.0, 3.0


# --- helpers -----------------------------------------------------------------------------------------------

def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def last_state(run_dir: Path) -> dict[str, Any]:
    with safe_open(str(run_dir / "last.safetensors"), "pt") as f:
        return json.loads(f.metadata()["rnnkit"])["state"]


def train_run(fields: dict[str, Any], out: Path) -> tuple[s2s.Seq2SeqRun, dict[str, Any]]:
    """``seq2seq.train`` into ``out``; returns the loaded best run and how the training went.

    ``wall_s``: the whole call (data, tokenizers, training, evaluations, checkpoints); ``train_s``: the
    engine's training time (evaluations during training included), from the ``last`` checkpoint.
    """
    start = time.perf_counter()
    run = s2s.train(out=str(out), overwrite=True, progress=sys.stderr.isatty(), **fields)
    wall = time.perf_counter() - start
    state = last_state(out)
    lines = metrics_lines(out)
    rates = [r["tokens_per_s"] for r in lines if r.get("split") == "train"][1:]
    evals = [r for r in lines if r.get("split") == "valid"]
    best = min(evals, key=lambda r: r["loss"]) if evals else {}
    return run, {"wall_s": round(wall, 1), "train_s": round(state["elapsed_s"], 1), "steps": state["step"],
                 "epochs_done": round(state["epoch"] + state["batch_in_epoch"] / max(1, run_batches(run)), 2),
                 "train_tokens_per_s": statistics.median(rates) if rates else None,
                 "best_valid": {k: best.get(k) for k in ("step", "loss", "perplexity", "bleu", "exact_match")}}


def run_batches(run: s2s.Seq2SeqRun) -> int:
    """Training batches per epoch of a run (for fractional epochs)."""
    pairs, _ = s2s.load_train_pairs(run.config)
    return -(-len(pairs) // run.config.batch_size)


def plan_steps(fields: dict[str, Any], budget_s: float, out: Path, args: argparse.Namespace) -> tuple[int, dict]:
    """Steps that fit ``budget_s`` with :data:`EVALS` evaluations, from a probe run of the same model.

    The probe trains ``--probe-steps`` steps and evaluates once (greedy BLEU included); the seconds per step
    and per evaluation come from the engine's clock (``elapsed_s`` before and after that evaluation).
    """
    if args.steps is not None:
        return args.steps, {"planned_steps": args.steps, "probe": "skipped (--steps)"}
    probe = {**fields, "max_steps": args.probe_steps, "eval_every": args.probe_steps, "log_every": args.probe_steps,
             "time_budget": None, "scheduler": "none", "warmup_steps": 0}
    start = time.perf_counter()
    train_run(probe, out)
    valid = [r for r in metrics_lines(out) if r.get("split") == "valid"]
    step_s = (valid[0]["elapsed_s"] if valid else last_state(out)["elapsed_s"]) / args.probe_steps
    eval_s = last_state(out)["elapsed_s"] - valid[0]["elapsed_s"] if valid else 0.0
    steps = max(1, int(0.97 * (budget_s - EVALS * eval_s) / step_s))
    if args.quick:
        steps = min(steps, 4)
    shutil.rmtree(out, ignore_errors=True)
    return steps, {"probe_steps": args.probe_steps, "probe_s_per_step": round(step_s, 4),
                   "probe_s_per_eval": round(eval_s, 2), "probe_wall_s": round(time.perf_counter() - start, 1),
                   "planned_steps": steps}


def pick_length_penalty(run: s2s.Seq2SeqRun, valid: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    """Valid BLEU of each candidate length penalty with beam ``--beam``; the best one (ties: the smaller)."""
    scores = {lp: run.evaluate_pairs(valid, beam=args.beam, length_penalty=lp)["bleu"] for lp in args.length_penalties}
    best = max(scores, key=lambda lp: (scores[lp], -lp))
    return {"length_penalty": best, "valid_bleu_by_length_penalty": {str(k): round(v, 2) for k, v in scores.items()}}


def score_test(run: s2s.Seq2SeqRun, test: list[tuple[str, str]], beam: int, length_penalty: float) -> dict:
    """Test scores, once: sacrebleu BLEU/chrF/exact match (detokenised) and lowercased tokenised BLEU."""
    start = time.perf_counter()
    hyps = run.translate([s for s, _ in test], beam=beam, length_penalty=length_penalty)
    refs = [t for _, t in test]
    scores = corpus_scores(hyps, refs)
    scores["bleu_lc_tok"] = tokenized_bleu(hyps, refs)
    scores["decode_s"] = round(time.perf_counter() - start, 1)
    scores["examples"] = [{"source": s, "reference": r, "hypothesis": h} for (s, r), h in
                          list(zip(test, hyps))[:3]]
    return scores


def settings_of(run: s2s.Seq2SeqRun) -> dict[str, Any]:
    skip = ("train", "valid", "src_train", "tgt_train", "src_valid", "tgt_valid", "out")
    return {k: v for k, v in dataclasses.asdict(run.config).items() if k not in skip}


def write_pairs(pairs: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


# --- parts -----------------------------------------------------------------------------------------------

def multi30k_files(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Fields pointing at the Multi30k files (subsets in ``tmp`` with --quick), and the test pairs."""
    paths = {f"{split}.{lang}": common.data_file(args.data_dir, "multi30k", f"{split}.{lang}", what=f"Multi30k {split}")
             for split in ("train", "val", "test_2016_flickr") for lang in ("de", "en")}
    if args.quick:
        for split, key in (("train", "train"), ("val", "valid"), ("test_2016_flickr", "test")):
            for lang in ("de", "en"):
                lines = paths[f"{split}.{lang}"].read_text(encoding="utf-8").splitlines()[: QUICK_PAIRS[key]]
                paths[f"{split}.{lang}"] = tmp / f"{split}.{lang}"
                paths[f"{split}.{lang}"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    fields = {"src_train": str(paths["train.de"]), "tgt_train": str(paths["train.en"]),
              "src_valid": str(paths["val.de"]), "tgt_valid": str(paths["val.en"])}
    test = read_parallel(paths["test_2016_flickr.de"], paths["test_2016_flickr.en"], max_chars=10**6).pairs
    return {"fields": fields, "test": test, "data": str(Path(args.data_dir) / "multi30k")}


def train_and_score(fields: dict[str, Any], budget_s: float, out: Path, args: argparse.Namespace,
                    test: list[tuple[str, str]]) -> dict[str, Any]:
    steps, plan = plan_steps(fields, budget_s, out, args)
    fields = {**fields, "max_steps": steps, "eval_every": max(1, steps // EVALS), "log_every": max(1, steps // 20),
              "time_budget": budget_s, "warmup_steps": min(fields.get("warmup_steps", 0), steps // 10)}
    run, how = train_run(fields, out)
    valid, _ = s2s.load_valid_pairs(run.config)
    pick = pick_length_penalty(run, valid, args)
    test_scores = score_test(run, test, args.beam, pick["length_penalty"])
    return {**how, **plan, **pick, "beam": args.beam, "test": test_scores, "settings": settings_of(run)}


def part_multi30k(args: argparse.Namespace, out: Path, tmp: Path) -> dict[str, Any]:
    files = multi30k_files(args, tmp)
    base = {**MULTI30K, **(QUICK if args.quick else {}), **files["fields"], **args.overrides}
    budget = args.minutes * 60
    models = {}
    for name, attention in (("attention", base["attention"]), ("no_attention", "none")):
        print(f"-- {name}: training for {args.minutes:g} minutes", flush=True)
        models[name] = train_and_score({**base, "attention": attention}, budget, out / name, args, files["test"])
        t = models[name]["test"]
        print(f"{name}: test BLEU {t['bleu']:.2f} (detokenised), {t['bleu_lc_tok']:.2f} (lowercased tokenised)",
              flush=True)
    att, none = models["attention"]["test"], models["no_attention"]["test"]
    gap = att["bleu_lc_tok"] - none["bleu_lc_tok"]
    met = att["bleu_lc_tok"] >= TARGET_BLEU and gap >= TARGET_GAP
    return {"part": "multi30k", "data": files["data"], "minutes": args.minutes, **models,
            "gap_lc_tok": round(gap, 2), "gap_detok": round(att["bleu"] - none["bleu"], 2),
            "target": f"attention >= {TARGET_BLEU} lowercased tokenised BLEU and >= {TARGET_GAP} above none",
            "target_met": met}


def part_tatoeba(args: argparse.Namespace, out: Path, tmp: Path) -> dict[str, Any]:
    paths = bundled_tatoeba()
    test = read_tsv_pairs(paths["test"], max_chars=10**6).pairs
    fields: dict[str, Any] = {}
    if args.quick:
        for split in ("train", "valid"):
            pairs = read_tsv_pairs(paths[split]).pairs[: QUICK_PAIRS[split]]
            fields[split] = str(write_pairs(pairs, tmp / f"tatoeba-{split}.tsv"))
        test = test[: QUICK_PAIRS["test"]]
        fields.update({k: v for k, v in QUICK.items() if k not in ("subword_vocab", "warmup_steps")}, max_steps=4)
    fields.update(args.overrides, time_budget=args.tatoeba_minutes * 60)
    print(f"-- defaults of `rnnkit seq2seq train`, {args.tatoeba_minutes:g} minutes", flush=True)
    run, how = train_run(fields, out)
    valid, _ = s2s.load_valid_pairs(run.config)
    pick = pick_length_penalty(run, valid, args)
    scores = score_test(run, test, args.beam, pick["length_penalty"])
    print(f"tatoeba: test BLEU {scores['bleu']:.2f}, exact match {scores['exact_match']:.3f}", flush=True)
    return {"part": "tatoeba", "data": str(paths["test"].parent), "minutes": args.tatoeba_minutes,
            "model": {**how, **pick, "beam": args.beam, "test": scores, "settings": settings_of(run)}}


# --- main --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (default both)")
    p.add_argument("--minutes", type=float, default=15.0, help="multi30k: training minutes per model (default 15)")
    p.add_argument("--tatoeba-minutes", type=float, default=s2s.Seq2SeqTaskConfig.time_budget / 60,
                   help="tatoeba: training minutes (default: the train command's time budget)")
    p.add_argument("--steps", type=int, default=None, help="multi30k: planned steps (the cosine length) instead of "
                   "probing the throughput")
    p.add_argument("--probe-steps", type=int, default=30, help="multi30k: steps of the throughput probe (30)")
    p.add_argument("--beam", type=int, default=s2s.DEFAULT_BEAM, help=f"beam width (default {s2s.DEFAULT_BEAM})")
    p.add_argument("--length-penalties", type=float, nargs="+", default=[0.0, 0.6, 1.0],
                   help="candidate GNMT length penalties, chosen on the valid split (default 0 0.6 1.0)")
    p.add_argument("--set", dest="overrides", action="append", type=common.parse_override, default=[],
                   metavar="FIELD=VALUE", help="override a seq2seq train field (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                   help="folder holding multi30k/ (default ../shared/data from the repo root)")
    p.add_argument("--out-dir", default=None, help="where the runs go (default runs/seq2seq_quality in the repo; "
                   "a temporary folder with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model and data, a few steps per model")
    args = p.parse_args(argv)
    args.overrides = common.typed_overrides(s2s.Seq2SeqTaskConfig, args.overrides, p)
    args.overrides.update(threads=args.threads, device=args.device, seed=args.overrides.get("seed", 1))
    if args.quick:
        args.minutes = args.tatoeba_minutes = 2 / 60
        args.probe_steps, args.beam = 2, 2
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-seq2seq-quality-"))
    root = tmp / "runs" if args.quick and args.out_dir is None else Path(args.out_dir or common.REPO_ROOT / "runs" /
                                                                           "seq2seq_quality")
    print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
          f"{info['date']}; runs in {root}", flush=True)
    runners = {"multi30k": part_multi30k, "tatoeba": part_tatoeba}
    results = []
    try:
        for part in args.part:
            print(f"\n== {part} ==", flush=True)
            results.append(runners[part](args, root / part, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for res in results:
        for name in ("attention", "no_attention", "model"):
            if name not in res:
                continue
            r, t = res[name], res[name]["test"]
            rows.append({"part": res["part"], "model": r["settings"]["attention"] if name != "model" else "defaults",
                         "test BLEU": t["bleu"], "lc tok BLEU": t["bleu_lc_tok"], "chrF": t["chrf"],
                         "exact": t["exact_match"], "valid BLEU": r["best_valid"].get("bleu"),
                         "lp": r["length_penalty"], "steps": r["steps"], "epochs": r["epochs_done"],
                         "train s": r["train_s"], "wall s": r["wall_s"]})
    print()
    common.print_table(rows, ["part", "model", "test BLEU", "lc tok BLEU", "chrF", "exact", "valid BLEU", "lp", "steps",
                              "epochs", "train s", "wall s"],
                       title=f"Test scores (beam {args.beam}; valid BLEU: greedy, best checkpoint)")
    out = {"benchmark": "seq2seq quality", "machine": info, "quick": args.quick, "results": results,
           "targets_met": {r["part"]: r["target_met"] for r in results if "target_met" in r}}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
