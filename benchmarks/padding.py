"""Padding and training speed with and without length bucketing (``--bucket`` / ``--no-bucket``).

For each task: the fraction of padded cells in one epoch's batches (:func:`rnnkit.data.batching.
padding_fraction` over the batches the task really trains on), and training throughput in real (non-padding)
tokens/s over ``--steps`` steps through the product's API, the two settings timed in alternating windows
(``common.alternate``: a shared machine's drift hits both) and summarised by median and range.

* tagging: UD English EWT train (UPOS), the ``rnnkit tag train`` default model (word + char BiLSTM, softmax),
  batches of ``--batch-size`` sentences. Bucketed = :func:`length_batches` pools of 50 batches sorted by
  length; random = consecutive runs of the shuffled sentences.
* seq2seq: the bundled Tatoeba English-French training pairs, the ``rnnkit seq2seq train`` default model,
  batches of ``--batch-size`` pairs; padding over source and decoder cells (see :func:`seq2seq_half`).

* layers: one recurrent layer (``--layer-size`` B T H, default 32 64 256; ``--num-layers`` stacked, default 1),
  forward + backward, LSTM and GRU, uni- and bidirectional: rnnkit without lengths (plain), with lengths all
  equal to T, with variable lengths (uniform in [1, T]), and torch.nn with the same variable lengths through
  ``pack_padded_sequence`` (torch's packed path), in ms per step (medians of alternating windows) and as the
  ratios the layers aim at: all-T over plain time (target <= 1/0.95) and packed over variable time (target >= 2).

    python benchmarks/padding.py                 # ~2-3 minutes on 2 cores
    python benchmarks/padding.py --task layers   # under a minute on 2 cores
    python benchmarks/padding.py --quick         # smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.data.batching import length_batches, padding_fraction  # noqa: E402
from rnnkit.data.conll import bundled_ud_ewt, read_conllu, write_conllu  # noqa: E402
from rnnkit.data.pairs import bundled_tatoeba, read_tsv_pairs  # noqa: E402
from rnnkit.nn import GRU, LSTM  # noqa: E402
from rnnkit.tasks import seq2seq as s2s  # noqa: E402
from rnnkit.tasks import tag  # noqa: E402

QUICK_TAG = dict(emb=16, char_emb=8, char_hidden=8, hidden=16, layers=1)
QUICK_SEQ2SEQ = dict(emb=16, enc_hidden=16, hidden=32)
QUICK_SENTENCES = 300


def ewt_train(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The EWT training file (shared copy, else the bundled one) and where it comes from."""
    shared = Path(args.data_dir) / "ud-english-ewt" / "en_ewt-ud-train.conllu"
    if shared.is_file() or args.data_dir_given:
        path = common.data_file(args.data_dir, "ud-english-ewt", "en_ewt-ud-train.conllu",
                                what="UD English EWT train split")
        source = str(path)
    else:
        path = bundled_ud_ewt()["train"]
        source = f"bundled copy {path} ({shared} not found)"
    if args.quick:
        small = tmp / "train.conllu"
        with open(small, "w", encoding="utf-8") as f:
            write_conllu(read_conllu(path)[:QUICK_SENTENCES], f)
        return small, source + f", first {QUICK_SENTENCES} sentences (--quick)"
    return path, source


# --- tagging -------------------------------------------------------------------------------------------------

def tagging_half(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per batching) and details for the tagging task."""
    train, source = ewt_train(args, tmp)
    fields = {"train": str(train), "valid": None, "column": "upos", "batch_size": args.batch_size,
              "threads": args.threads, "device": args.device, "seed": 1, "time_budget": None, "eval_every": 0,
              "max_steps": args.steps, "log_every": args.steps, **(QUICK_TAG if args.quick else {})}
    cfg = tag.make_config(**fields, out=str(tmp / "unused"))
    _, examples, _, _, _ = tag.prepare(cfg)
    lengths = [len(e.words) for e in examples]
    rows, windows = [], {}
    for bucket in (True, False):
        batches = length_batches(lengths, args.batch_size, shuffle=True, seed=1, epoch=0, bucket=bucket)
        name = "bucketed" if bucket else "random"
        rows.append({"task": "tagging", "batching": name, "padding": padding_fraction(batches, lengths),
                     "batches": len(batches)})

        def window(bucket: bool = bucket, name: str = name) -> float:
            out = tmp / f"tag-{name}"
            tag.train(out=str(out), overwrite=True, progress=False, bucket=bucket, **fields)
            logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            return [r for r in logged if r.get("split") == "train"][-1]["tokens_per_s"]

        windows[name] = window
    rates = common.alternate(windows, args.windows)
    for row in rows:
        row.update(tokens_per_s=common.summarize(rates[row["batching"]]), steps=args.steps)
    speedup = common.ratio_summary(rates["bucketed"], rates["random"])
    return rows, {"data": source, "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "train"},
                  "bucketed_vs_random_tokens_per_s": speedup}


# --- seq2seq -------------------------------------------------------------------------------------------------

def seq2seq_half(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per batching) and details for the seq2seq task, on the bundled Tatoeba English-French pairs.

    Padding is counted over the cells the model really computes: source ``(B, S)`` and decoder ``(B, T)``
    with T = longest target + 1 (``<bos>``/``<eos>``); ``padding`` is the fraction of both together, with
    ``padding_src`` and ``padding_tgt`` separately. Bucketed batches are sorted by (target, source) length
    within pools of 50 batches; random = consecutive runs of the shuffled pairs. Tokens/s counts real target
    tokens (``<eos>`` included), as the engine logs them; model = the ``rnnkit seq2seq train`` defaults.
    """
    train = bundled_tatoeba()["train"]
    source = str(train)
    if args.quick:
        pairs = read_tsv_pairs(train).pairs[:QUICK_SENTENCES]
        train = tmp / "pairs.tsv"
        train.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
        source += f", first {QUICK_SENTENCES} pairs (--quick)"
    fields = {"train": str(train), "batch_size": args.batch_size, "threads": args.threads, "device": args.device,
              "seed": 1, "time_budget": None, "eval_every": 0, "max_steps": args.steps, "log_every": args.steps,
              **(QUICK_SEQ2SEQ if args.quick else {})}
    rows, windows, cfg = [], {}, None
    for bucket in (True, False):
        cfg = s2s.make_config(**fields, bucket=bucket, out=str(tmp / "unused"))
        tokenizers, examples, _, _ = s2s.prepare(cfg)
        batches = s2s.Seq2SeqTask(cfg, tokenizers, examples, None, None, torch.device("cpu")).epoch_batches(0)
        src = [len(e.src) for e in examples]
        tgt = [len(e.tgt) + 1 for e in examples]  # decoder steps: <bos> y_1..y_n in, y_1..y_n <eos> out
        cells = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)
        real = sum(src) + sum(tgt)
        name = "bucketed" if bucket else "random"
        rows.append({"task": "seq2seq", "batching": name, "padding": 1.0 - real / cells,
                     "padding_src": padding_fraction(batches, src), "padding_tgt": padding_fraction(batches, tgt),
                     "batches": len(batches)})

        def window(bucket: bool = bucket, name: str = name) -> float:
            out = tmp / f"seq2seq-{name}"
            s2s.train(out=str(out), overwrite=True, progress=False, bucket=bucket, **fields)
            logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            return [r for r in logged if r.get("split") == "train"][-1]["tokens_per_s"]

        windows[name] = window
    rates = common.alternate(windows, args.windows)
    for row in rows:
        row.update(tokens_per_s=common.summarize(rates[row["batching"]]), steps=args.steps)
    speedup = common.ratio_summary(rates["bucketed"], rates["random"])
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("train", "bucket", "out")}
    return rows, {"data": source, "settings": settings, "bucketed_vs_random_tokens_per_s": speedup}


# --- layers --------------------------------------------------------------------------------------------------

def layer_ways(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor
               ) -> dict[str, Any]:
    """The four ways to run one layer over ``x`` (B, T, H), each returning the padded output."""
    steps = x.size(1)

    def packed() -> torch.Tensor:
        out, _ = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True, total_length=steps)[0]

    full = torch.full_like(lengths, steps)
    return {"plain": lambda: ours(x)[0], "all T": lambda: ours(x, lengths=full)[0],
            "variable": lambda: ours(x, lengths=lengths)[0], "torch packed": packed}


def layers_half(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per layer and direction) of ms per forward + backward step for the four ways to run it."""
    batch, steps, hidden = args.layer_size
    device = torch.device(args.device)
    lengths = torch.randint(1, steps + 1, (batch,), generator=torch.Generator().manual_seed(1))

    def timing(run: Any) -> Any:
        def work() -> None:
            for _ in range(args.steps):
                run().sum().backward()
        return lambda: 1000.0 * common.timed(work, device) / args.steps

    rows = []
    for cls, ref_cls in ((LSTM, torch.nn.LSTM), (GRU, torch.nn.GRU)):
        for bidirectional in (False, True):
            kwargs = dict(num_layers=args.num_layers, batch_first=True, bidirectional=bidirectional, device=device)
            ours = cls(hidden, hidden, **kwargs)
            ref = ref_cls(hidden, hidden, **kwargs)
            ref.load_state_dict(ours.state_dict())
            x = torch.randn(batch, steps, hidden, device=device, requires_grad=True)
            ways = layer_ways(ours, ref, x, lengths)
            for run in ways.values():  # warm-up (oneDNN primitives, allocator)
                run().sum().backward()
            ms = common.alternate({name: timing(run) for name, run in ways.items()}, args.windows)
            row = {"task": "layers", "layer": cls.__name__ + (" bi" if bidirectional else ""),
                   **{name: common.summarize(v, 2) for name, v in ms.items()}}
            row["all T / plain time"] = round(row["all T"]["median"] / row["plain"]["median"], 3)
            row["packed / variable time"] = round(row["torch packed"]["median"] / row["variable"]["median"], 3)
            rows.append(row)
    details = {"batch": batch, "steps": steps, "hidden": hidden, "num_layers": args.num_layers,
               "lengths": lengths.tolist(),
               "padding": 1.0 - lengths.sum().item() / (batch * steps)}
    return rows, details


# --- main ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", nargs="+", choices=("tagging", "seq2seq", "layers"),
                   default=["tagging", "seq2seq", "layers"], help="which parts (default all three)")
    p.add_argument("--layer-size", nargs=3, type=int, default=[32, 64, 256], metavar=("B", "T", "H"),
                   help="batch, steps and hidden size of the layers part (default 32 64 256)")
    p.add_argument("--num-layers", type=int, default=1, help="stacked layers in the layers part (default 1)")
    p.add_argument("--steps", type=int, default=40, help="training steps per timing window (default 40)")
    p.add_argument("--windows", type=int, default=3, help="alternating timing windows per setting (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--data-dir", default=None, help="folder holding ud-english-ewt/ (default ../shared/data from "
                   "the repo root, or the bundled copy when that is missing)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model and data, a few steps")
    args = p.parse_args(argv)
    args.data_dir_given = args.data_dir is not None
    args.data_dir = args.data_dir or str(common.DEFAULT_DATA_DIR)
    if args.quick:
        args.steps, args.windows, args.layer_size = 3, 1, [4, 6, 8]
    common.setup(args.threads, args.device)
    info = common.machine_info(args.device, args.threads)
    info["freed_blocks_kept"] = common.as_in_training()
    print(f"torch {info['torch']}, {info['cpu_count']} CPUs, {args.threads} threads, device {args.device}, "
          f"{info['date']}; {args.steps} steps x {args.windows} windows per setting; freed blocks kept as in "
          f"training: {info['freed_blocks_kept']}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-padding-"))
    halves = {"tagging": tagging_half, "seq2seq": seq2seq_half, "layers": layers_half}
    rows: list[dict[str, Any]] = []
    details = {}
    try:
        for task in args.task:
            task_rows, details[task] = halves[task](args, tmp)
            rows += task_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = [{"task": r["task"], "batching": r["batching"], "padding": r["padding"], "batches": r["batches"],
              "tok/s median": r["tokens_per_s"]["median"], "tok/s min": r["tokens_per_s"]["min"],
              "tok/s max": r["tokens_per_s"]["max"]} for r in rows if r["task"] != "layers"]
    if table:
        print()
        columns = ["task", "batching", "padding", "batches", "tok/s median", "tok/s min", "tok/s max"]
        common.print_table(table, columns, title="Padded fraction of the batches and training speed in real tokens/s")
    ways = ("plain", "all T", "variable", "torch packed")
    layer_table = [{"layer": r["layer"], **{w: r[w]["median"] for w in ways},
                    "all T / plain time": r["all T / plain time"],
                    "packed / variable time": r["packed / variable time"]} for r in rows if r["task"] == "layers"]
    if layer_table:
        size = "B {batch}, T {steps}, H {hidden}, {num_layers} layer(s), padding {padding:.2f}".format(
            **details["layers"])
        print()
        common.print_table(layer_table, ["layer", *ways, "all T / plain time", "packed / variable time"],
                           title=f"One layer (or stack), forward + backward, ms per step (median), {size}")
    out = {"benchmark": "padding", "machine": info, "quick": args.quick, "rows": rows, "details": details}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
