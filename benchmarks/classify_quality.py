"""Text classification quality through the product's API (``rnnkit.tasks.classify``): SST-2, SST-2 after LM
pre-training, TREC-6.

Three parts, each training on ``--threads`` (2) CPU threads for a fixed time, the best checkpoint chosen on a
dev split (highest dev accuracy, the classification task's selection metric), then the test split scored once:

    sst2      train on sst2/train.tsv (67,349 phrases), select on dev.tsv, report test.tsv accuracy;
              ``--minutes`` (15) of training. Anchors: Kim 2014 CNN-rand 83.7, GLUE's BiLSTM 85.9.
              Target: test accuracy >= 85.0 from scratch.
    sst2-lm   first an rnnkit word LM on wikitext-2/wiki.train.tokens (lowercased, as SST-2 is) for at most
              ``--lm-minutes`` (20), then the sst2 part with ``init_from`` that LM run, ``--minutes`` of
              fine-tuning; reports both accuracies and the gain (the sst2 part runs too when not asked for,
              unless ``--scratch-accuracy`` gives its figure from an earlier run of the same settings).
    trec      TREC-6: trec/train_5500.label (Latin-1 bytes: read with ``encoding="latin-1"``; label-first
              format ``COARSE:fine question``, ``coarse_sep=":"`` keeps the six coarse classes); the last 10% of
              a seeded shuffle of it is the dev split; ``--trec-minutes`` (10) of training; accuracy on
              TREC_10.label. Anchors: Kim 2014 CNN-rand 91.2, CNN-static 92.8. Target: >= 93.0.

Settings (``BASE``; ``--set FIELD=VALUE`` overrides any ``rnnkit classify train`` field): word level, embeddings
300, a one-layer 2x256 BiLSTM, max pooling, dropout 0.5, Adam 1e-3, clip 5, batches of 32 texts bucketed by
length, no early stopping, the time budget ends training; dev evaluated about ``EVALS`` times an epoch for SST-2
(2,100 steps an epoch) and once an epoch for TREC (150 steps). The LM (``LM``) has the classifier's cell,
embedding and hidden sizes and depth (``init_from`` needs them equal), an adaptive softmax for WikiText-2's 33k
words, BPTT 70, dropout 0.3. These are first, untuned settings (the usual sizes of BiLSTM sentence classifiers);
tune on dev (``--no-test``) before the one test run.

Data: ``--data-dir`` (default ``../shared/data`` from the repo root) with ``sst2/``, ``trec/`` and ``wikitext-2/``
(research use only: never shipped with rnnkit).

    python benchmarks/classify_quality.py                       # all three parts (about 15 + 20 + 15 + 10 min)
    python benchmarks/classify_quality.py --part trec --no-test --set pooling=attention
    python benchmarks/classify_quality.py --quick               # smoke run: tiny generated data, seconds
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.tasks import classify, lm  # noqa: E402

PARTS = ("sst2", "sst2-lm", "trec")
TARGETS = {"sst2": 0.85, "trec": 0.93}
EVALS = 4  # dev evaluations per SST-2 epoch
DEV_SHARE = 0.1  # TREC: the share of the (shuffled) training file held out for selection
BASE = dict(level="word", emb=300, hidden=256, layers=1, bidirectional=True, pooling="max", dropout=0.5,
            optimizer="adam", lr=1e-3, clip=5.0, batch_size=32, bucket=True, patience=0, epochs=1000, log_every=50)
SST2 = dict(format="tsv", text_column="0", label_column="1", header=False)
TREC = dict(format="label-first", coarse_sep=":", encoding="latin-1")
LM = dict(level="word", model="lstm", softmax="adaptive", cutoffs=(2000, 10000), bptt=70, batch_size=32,
          dropout=0.3, lr=1e-3, clip=1.0, epochs=1000, patience=0, log_every=100)
QUICK = dict(emb=8, hidden=8, batch_size=8, max_steps=3, log_every=1)
QUICK_LM = dict(emb=8, hidden=8, batch_size=4, bptt=8, softmax="full", cutoffs=(), max_steps=3, log_every=1)


# --- data --------------------------------------------------------------------------------------------------

def quick_data(root: Path) -> Path:
    """Tiny files in the shapes of the real ones (SST-2 TSV without header, TREC label-first Latin-1, WikiText)."""
    rng = random.Random(0)
    words = ["the", "film", "plot", "was", "a", "very", "story", "it", "caf\u00e9"]

    def text(cue: str) -> str:
        body = [rng.choice(words) for _ in range(rng.randint(2, 8))]
        body.insert(rng.randint(0, len(body)), cue)
        return " ".join(body)

    (root / "sst2").mkdir(parents=True)
    for split, n in (("train", 80), ("dev", 20), ("test", 20)):
        rows = [(lab, text("good" if lab else "bad")) for lab in (rng.randint(0, 1) for _ in range(n))]
        (root / "sst2" / f"{split}.tsv").write_text("".join(f"{t} \t{lab}\n" for lab, t in rows), encoding="utf-8")
    (root / "trec").mkdir()
    classes = {"DESC:manner": "how", "HUM:ind": "who", "LOC:city": "where", "NUM:date": "when"}
    for name, n in (("train_5500.label", 80), ("TREC_10.label", 20)):
        rows = [rng.choice(list(classes)) for _ in range(n)]
        (root / "trec" / name).write_bytes("".join(f"{c} {text(classes[c])} ?\n" for c in rows).encode("latin-1"))
    (root / "wikitext-2").mkdir()
    (root / "wikitext-2" / "wiki.train.tokens").write_text("".join(f" {text('good')} . \n" for _ in range(200)))
    return root


def trec_split(data_dir: Path, tmp: Path, seed: int) -> dict[str, Path]:
    """TREC train/dev (the last ``DEV_SHARE`` of a seeded shuffle of train_5500) and test files, as Latin-1."""
    src = common.data_file(data_dir, "trec", "train_5500.label", what="TREC training file")
    test = common.data_file(data_dir, "trec", "TREC_10.label", what="TREC test file")
    lines = [line for line in src.read_bytes().split(b"\n") if line.strip()]
    random.Random(seed).shuffle(lines)
    cut = len(lines) - int(len(lines) * DEV_SHARE)
    files = {"train": tmp / "trec-train.label", "dev": tmp / "trec-dev.label", "test": test}
    files["train"].write_bytes(b"\n".join(lines[:cut]) + b"\n")
    files["dev"].write_bytes(b"\n".join(lines[cut:]) + b"\n")
    return files


def sst2_files(data_dir: Path) -> dict[str, Path]:
    return {s: common.data_file(data_dir, "sst2", f"{s}.tsv", what=f"SST-2 {s} split")
            for s in ("train", "dev", "test")}


# --- runs --------------------------------------------------------------------------------------------------

def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def how_it_went(out: Path, wall: float, metric: str) -> dict[str, Any]:
    lines = metrics_lines(out)
    valid = [r for r in lines if r.get("split") == "valid"]
    best = max(valid, key=lambda r: r[metric] if metric == "accuracy" else -r[metric]) if valid else {}
    last = lines[-1] if lines else {}
    return {"wall_s": round(wall, 1), "train_s": last.get("elapsed_s"), "steps": last.get("step"),
            "epochs_started": last.get("epoch", 0) + 1 if lines else None, "best_step": best.get("step"),
            f"best_dev_{metric}": best.get(metric)}


def train_classifier(name: str, fields: dict[str, Any], files: dict[str, Path], out: Path,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Train into ``out`` (select on dev), score dev and, unless ``--no-test``, the test split once."""
    start = time.perf_counter()
    run = classify.train(out=str(out), overwrite=True, progress=sys.stderr.isatty(), train=str(files["train"]),
                         valid=str(files["dev"]), **fields)
    res = {"part": name, "settings": fields, **how_it_went(out, time.perf_counter() - start, "accuracy"),
           "dev": run.evaluate(files["dev"])}
    if not args.no_test:
        res["test"] = run.evaluate(files["test"])
        target = TARGETS.get(name.removesuffix("-lm"))
        res["target_met"] = None if args.quick or target is None else res["test"]["accuracy"] >= target
    return res


def lowercased(src: Path, tmp: Path) -> Path:
    """A lowercased copy of a text file in ``tmp`` (SST-2 is lowercased; WikiText is not)."""
    out = tmp / f"lower-{src.name}"
    out.write_text(src.read_text(encoding="utf-8").lower(), encoding="utf-8")
    return out


def train_lm(args: argparse.Namespace, data_dir: Path, out: Path, tmp: Path) -> dict[str, Any]:
    """The WikiText-2 word LM for ``sst2-lm``: the classifier's cell and sizes, lowercased text
    (WikiText's ``<unk>`` is lowercase already), at most ``--lm-minutes``."""
    fields = {**LM, "emb": BASE["emb"], "hidden": BASE["hidden"], "layers": BASE["layers"],
              **{k: v for k, v in args.overrides.items() if k in ("emb", "hidden", "layers", "seed", "threads",
                                                                   "device")},
              **(QUICK_LM if args.quick else {}), "time_budget": args.lm_minutes * 60}
    if "cell" in args.overrides:
        fields["model"] = args.overrides["cell"]
    source = common.data_file(data_dir, "wikitext-2", "wiki.train.tokens", what="WikiText-2 training text")
    train = lowercased(source, tmp)
    valid_source = data_dir / "wikitext-2" / "wiki.valid.tokens"
    valid = lowercased(valid_source, tmp) if valid_source.is_file() else None
    start = time.perf_counter()
    run = lm.train(out=str(out), overwrite=True, progress=sys.stderr.isatty(), train=str(train),
                   valid=str(valid) if valid else None, **fields)
    res = {"settings": fields, **how_it_went(out, time.perf_counter() - start, "loss"), "path": str(out)}
    if valid:
        res["valid"] = run.evaluate(valid)
    return res


def classifier_fields(args: argparse.Namespace, part: str, minutes: float) -> dict[str, Any]:
    data = SST2 if part.startswith("sst2") else TREC
    eval_every = 0 if part == "trec" else max(1, 67_349 // BASE["batch_size"] // EVALS)
    return {**BASE, **data, "eval_every": eval_every, "time_budget": minutes * 60, **args.overrides,
            **(QUICK if args.quick else {})}


# --- main --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default all)")
    p.add_argument("--minutes", type=float, default=15.0, help="SST-2 training minutes per run (default 15)")
    p.add_argument("--lm-minutes", type=float, default=20.0, help="WikiText-2 LM training minutes (default 20)")
    p.add_argument("--trec-minutes", type=float, default=10.0, help="TREC training minutes (default 10)")
    p.add_argument("--scratch-accuracy", type=float, default=None, metavar="ACC",
                   help="sst2-lm alone: the from-scratch SST-2 accuracy (test, or dev with --no-test) of an earlier "
                   "run with the same settings, instead of running the sst2 part again")
    p.add_argument("--set", dest="overrides", action="append", type=common.parse_override, default=[],
                   metavar="FIELD=VALUE", help="override a classify train field (repeatable)")
    p.add_argument("--no-test", action="store_true", help="dev only (while choosing settings)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                   help="folder holding sst2/, trec/ and wikitext-2/ (default ../shared/data from the repo root)")
    p.add_argument("--out-dir", default=None, help="where the runs go (default runs/classify_quality in the repo; "
                   "a temporary folder with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny generated data and model, a few steps")
    args = p.parse_args(argv)
    args.overrides = common.typed_overrides(classify.ClassifyConfig, args.overrides, p)
    args.overrides.update(threads=args.threads, device=args.device, seed=args.overrides.get("seed", 1))
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-classify-quality-"))
    root = Path(args.out_dir) if args.out_dir else (tmp / "runs" if args.quick else
                                                    common.REPO_ROOT / "runs" / "classify_quality")
    data_dir = quick_data(tmp / "data") if args.quick else Path(args.data_dir)
    parts = list(args.part)
    if "sst2-lm" in parts and "sst2" not in parts and args.scratch_accuracy is None:
        parts.insert(parts.index("sst2-lm"), "sst2")  # the gain needs the from-scratch figure
    results: dict[str, Any] = {}
    try:
        print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
              f"{info['date']}; data: {data_dir}; runs in {root}", flush=True)
        for part in parts:
            print(f"\n== {part} ==", flush=True)
            if part == "trec":
                files = trec_split(data_dir, tmp, args.overrides["seed"])
                res = train_classifier(part, classifier_fields(args, part, args.trec_minutes), files, root / part, args)
            elif part == "sst2":
                res = train_classifier(part, classifier_fields(args, part, args.minutes), sst2_files(data_dir),
                                       root / part, args)
            else:
                lm_res = train_lm(args, data_dir, root / "wikitext2-lm", tmp)
                fields = {**classifier_fields(args, part, args.minutes), "init_from": lm_res["path"]}
                res = {**train_classifier(part, fields, sst2_files(data_dir), root / part, args), "lm": lm_res}
            results[part] = res
            test = f", test accuracy {res['test']['accuracy']:.4f}" if "test" in res else ""
            print(f"{part}: dev accuracy {res['dev']['accuracy']:.4f}{test} after {res['steps']} steps "
                  f"({res['train_s']} s of training)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    split = "dev" if args.no_test else "test"
    gain = None
    if "sst2-lm" in results:
        scratch = results["sst2"][split]["accuracy"] if "sst2" in results else args.scratch_accuracy
        gain = results["sst2-lm"][split]["accuracy"] - scratch
    rows = [{"part": name, "dev acc": r["dev"]["accuracy"], "test acc": r["test"]["accuracy"] if "test" in r else None,
             "macro F1": r[split]["macro_f1"], "steps": r["steps"], "best step": r["best_step"],
             "train s": r["train_s"]} for name, r in results.items()]
    print()
    common.print_table(rows, ["part", "dev acc", "test acc", "macro F1", "steps", "best step", "train s"],
                       title="text classification accuracy (targets: SST-2 test >= 0.850, TREC-6 test >= 0.930)")
    if gain is not None:
        print(f"LM pre-training gain on SST-2 ({split}): {gain:+.4f}")
    out = {"benchmark": "classify quality", "machine": info, "quick": args.quick, "data": str(data_dir),
           "results": results, f"{split}_accuracy": {k: r[split]["accuracy"] for k, r in results.items()},
           "lm_gain": gain, "targets_met": {k: r.get("target_met") for k, r in results.items()}}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
