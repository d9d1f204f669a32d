"""minGRU / minLSTM (parallel scan) against the LSTM: training throughput at equal parameters, char-LM quality.

Parts (``--part``, one or more; default ``throughput``):

* ``throughput``: forward + backward tokens/s of one recurrent layer at T = 256, B = 64 (``--length``,
  ``--batch``) for each ``--hidden`` H (512 and 1024): ``lstm-fused`` (``rnnkit.nn.LSTM``, torch's fused
  kernels: cuDNN on GPU), ``lstm-generic`` (the same layer, ``engine="generic"``: the cell's step loop), and
  ``mingru`` / ``minlstm`` (``rnnkit.nn.MinGRU`` / ``MinLSTM``, parallel scan). Each layer reads its own
  hidden size, as a layer inside a stack does, and the min layers get the hidden size H' whose parameter
  count is nearest the LSTM's (``matched_hidden``): LSTM 8H^2 + 8H, minGRU 2H'^2 + 2H' (H' ~ 2H), minLSTM
  3H'^2 + 3H' (H' ~ 1.63H), H' a multiple of 8. Loss: mean square of the output. Competitors are timed in
  alternating windows (``common.alternate``); the table gives the median, the range and the ratio to
  ``lstm-fused``.
* ``quality``: a char LM (embedding 64 -> 2-layer recurrent layer -> linear) per model on Tiny Shakespeare
  (first 90% train, last 10% valid), each trained for ``--minutes`` (10) of wall time (evaluation not
  counted): LSTM 2x256 and the min layers at the nearest equal recurrent parameter count. Random windows of
  ``--bptt`` (128) + 1 characters, batch 64, Adam ``--lr`` (4e-3), clip 1, dropout 0.2 between layers.
  Valid loss (nats/char) over the whole valid split read as 64 contiguous streams with the state carried.
  A self-contained model, independent of the task driver.

The data file is ``--data`` (default ``../shared/data/tinyshakespeare/input.txt``, else the copy bundled in
``rnnkit/resources``). A markdown table on stdout per part, then one JSON line.

    python benchmarks/cells.py                                   # throughput, CPU, ~5 minutes
    python benchmarks/cells.py --part quality --minutes 10       # 30 minutes: three 10-minute runs
    python benchmarks/cells.py --device cuda --part throughput quality --minutes 2
    python benchmarks/cells.py --quick --part throughput quality # smoke run, seconds
"""

from __future__ import annotations

import argparse
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

import common
import torch
import torch.nn.functional as F

import rnnkit.nn as rn

MIN_LAYERS = {"mingru": rn.MinGRU, "minlstm": rn.MinLSTM}
DEFAULT_DATA = common.DEFAULT_DATA_DIR / "tinyshakespeare" / "input.txt"


def count_parameters(layer: torch.nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def build(kind: str, input_size: int, hidden: int, num_layers: int = 1, dropout: float = 0.0,
          device: torch.device | str | None = None) -> torch.nn.Module:
    """``lstm-fused``, ``lstm-generic``, ``mingru`` or ``minlstm``: a batch-first layer."""
    if kind.startswith("lstm"):
        engine = kind.split("-")[1]
        return rn.LSTM(input_size, hidden, num_layers, batch_first=True, dropout=dropout, engine=engine,
                       device=device)
    return MIN_LAYERS[kind](input_size, hidden, num_layers, dropout=dropout, device=device)


def matched_hidden(kind: str, input_size: int | None, target: int, num_layers: int = 1) -> int:
    """The multiple of 8 whose ``kind`` layer has the parameter count nearest ``target``.

    ``input_size`` None means the layer reads its own hidden size (a layer inside a stack).
    """
    def params(h: int) -> int:
        return count_parameters(build(kind, input_size or h, h, num_layers, device="meta"))

    h = 8
    while params(h) < target:
        h += 8
    return h if h == 8 or params(h) - target <= target - params(h - 8) else h - 8


# --- throughput --------------------------------------------------------------------------------------------

def throughput(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for hidden in args.hidden:
        target = count_parameters(build("lstm-fused", hidden, hidden, device="meta"))
        sizes = {"lstm-fused": hidden, "lstm-generic": hidden}
        sizes.update({kind: matched_hidden(kind, None, target) for kind in MIN_LAYERS})
        layers, inputs = {}, {}
        for kind, size in sizes.items():
            torch.manual_seed(0)
            layers[kind] = build(kind, size, size, device=device)
            inputs[kind] = torch.randn(args.batch, args.length, size, device=device)

        def runner(layer: torch.nn.Module, x: torch.Tensor):  # noqa: ANN202
            def step() -> None:
                for p in layer.parameters():
                    p.grad = None
                out, _ = layer(x)
                out.square().mean().backward()

            def window() -> float:
                steps, start = 0, time.perf_counter()
                while True:
                    step()
                    steps += 1
                    common.sync(device)
                    elapsed = time.perf_counter() - start
                    if steps >= 2 and elapsed >= args.window:
                        return steps * x.size(0) * x.size(1) / elapsed

            step()  # warm-up: allocator, oneDNN primitives, cuDNN plans
            common.sync(device)
            return window

        rates = common.alternate({kind: runner(layers[kind], inputs[kind]) for kind in sizes}, args.windows)
        for kind in sizes:
            rows.append({
                "H": hidden, "layer": kind, "hidden": sizes[kind], "params": count_parameters(layers[kind]),
                "engine": layers[kind].last_engine, "tokens_per_s": common.summarize(rates[kind], 0),
                "vs_lstm_fused": common.ratio_summary(rates[kind], rates["lstm-fused"]),
            })
    return rows


# --- quality -----------------------------------------------------------------------------------------------

class CharLM(torch.nn.Module):
    """Embedding (V, E) -> recurrent layer -> linear (V): logits (B, T, V) and the layer's final state."""

    def __init__(self, kind: str, vocab: int, emb: int, hidden: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, emb)
        self.rnn = build(kind, emb, hidden, num_layers, dropout)
        self.output = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out, state = self.rnn(self.embedding(tokens), state)  # (B, T, H)
        return self.output(out), state  # (B, T, V)


def read_text(path: str | None) -> tuple[str, str]:
    """(text, where it came from): ``path``, else the shared copy if present, else the bundled one."""
    if path is not None:
        file = common.data_file(Path(path).parent, Path(path).name, what="Tiny Shakespeare text")
        return file.read_text(encoding="utf-8"), str(file)
    if DEFAULT_DATA.is_file():
        return DEFAULT_DATA.read_text(encoding="utf-8"), str(DEFAULT_DATA)
    bundled = resources.files("rnnkit").joinpath("resources/tinyshakespeare.txt")
    return bundled.read_text(encoding="utf-8"), "rnnkit/resources/tinyshakespeare.txt"


@torch.no_grad()
def valid_loss(model: CharLM, data: torch.Tensor, streams: int, bptt: int) -> float:
    """Mean nats/char over ``data`` read as ``streams`` contiguous streams, the state carried between windows."""
    model.eval()
    length = (data.numel() - 1) // streams
    inputs = data[: streams * length].view(streams, length)  # (S, L)
    targets = data[1 : streams * length + 1].view(streams, length)
    total, state = 0.0, None
    for start in range(0, length, bptt):
        logits, state = model(inputs[:, start : start + bptt], state)
        total += float(F.cross_entropy(logits.flatten(0, 1), targets[:, start : start + bptt].flatten(),
                                       reduction="sum"))
    model.train()
    return total / inputs.numel()


def train_for(model: CharLM, train: torch.Tensor, args: argparse.Namespace, device: torch.device,
              seed: int) -> dict[str, Any]:
    """Random windows until ``args.minutes`` of wall time are spent; returns steps, chars/s and last loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    offsets = torch.arange(args.bptt + 1)
    steps, loss, start = 0, float("nan"), time.perf_counter()
    while time.perf_counter() - start < args.minutes * 60 or steps == 0:
        begin = torch.randint(0, train.numel() - args.bptt - 1, (args.batch,), generator=generator)
        window = train[begin[:, None] + offsets].to(device)  # (B, T+1)
        logits, _ = model(window[:, :-1])
        batch_loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps += 1
        loss = float(batch_loss.detach())  # also waits for the GPU, so the clock covers the step
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": round(seconds, 1), "chars_per_s": round(steps * args.batch * args.bptt
                                                                               / seconds), "train_loss": loss}


def quality(args: argparse.Namespace, device: torch.device) -> tuple[list[dict[str, Any]], str]:
    text, source = read_text(args.data)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(0.9 * data.numel())
    train, valid = data[:cut], data[cut:].to(device)
    target = count_parameters(build("lstm-fused", args.emb, args.lm_hidden, args.lm_layers, device="meta"))
    rows = []
    for kind in ("lstm-fused", *MIN_LAYERS):
        hidden = args.lm_hidden if kind == "lstm-fused" else matched_hidden(kind, args.emb, target, args.lm_layers)
        torch.manual_seed(args.seed)
        model = CharLM(kind, len(chars), args.emb, hidden, args.lm_layers, args.dropout).to(device)
        trained = train_for(model, train, args, device, args.seed)
        rows.append({
            "layer": kind, "hidden": hidden, "recurrent_params": count_parameters(model.rnn), **trained,
            "valid_loss": round(valid_loss(model, valid, args.batch, args.bptt), 4),
        })
    return rows, source


# --- output ------------------------------------------------------------------------------------------------

def markdown(rows: list[dict[str, Any]], columns: dict[str, Any]) -> None:
    """A markdown table: column title -> function of a row."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(get(row)) for get in columns.values()) + " |", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", nargs="+", choices=("throughput", "quality"), default=["throughput"])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a second per model")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--hidden", nargs="+", type=int, default=[512, 1024], help="LSTM hidden sizes (512 1024)")
    p.add_argument("--batch", type=int, default=64, help="batch size of both parts (default 64)")
    p.add_argument("--length", type=int, default=256, help="throughput: sequence length (default 256)")
    p.add_argument("--windows", type=int, default=5, help="throughput: alternating windows (default 5)")
    p.add_argument("--window", type=float, default=2.0, help="throughput: seconds per layer per window")
    p.add_argument("--data", help="quality: Tiny Shakespeare text (default: ../shared/data/tinyshakespeare/"
                                  "input.txt if present, else the bundled copy)")
    p.add_argument("--minutes", type=float, default=10.0, help="quality: training wall time per model (10)")
    p.add_argument("--lm-hidden", type=int, default=256, help="quality: LSTM hidden size (default 256)")
    p.add_argument("--lm-layers", type=int, default=2, help="quality: layers (default 2)")
    p.add_argument("--emb", type=int, default=64, help="quality: embedding size (default 64)")
    p.add_argument("--bptt", type=int, default=128, help="quality: window length (default 128)")
    p.add_argument("--lr", type=float, default=4e-3, help="quality: Adam learning rate (default 4e-3)")
    p.add_argument("--dropout", type=float, default=0.2, help="quality: dropout between layers (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.batch, args.length, args.windows, args.window = [16], 4, 32, 2, 0.02
        args.minutes, args.lm_hidden, args.emb, args.bptt = 0.01, 16, 8, 16
    device = common.setup(args.threads, args.device, args.seed)
    result: dict[str, Any] = {"benchmark": "cells", "quick": args.quick,
                              "machine": common.machine_info(device, args.threads)}
    result["machine"]["freed_blocks_kept"] = common.as_in_training()  # glibc's allocator as in a training run
    if "throughput" in args.part:
        rows = throughput(args, device)
        print(f"\nTraining tokens/s (forward + backward), T={args.length}, B={args.batch}, device {device}:\n")
        markdown(rows, {
            "LSTM H": lambda r: r["H"], "layer": lambda r: r["layer"], "hidden": lambda r: r["hidden"],
            "params": lambda r: f"{r['params']:,}",
            "tokens/s (median)": lambda r: f"{r['tokens_per_s']['median']:,.0f}",
            "range": lambda r: f"{r['tokens_per_s']['min']:,.0f}-{r['tokens_per_s']['max']:,.0f}",
            "vs lstm-fused": lambda r: f"{r['vs_lstm_fused']['ratio']:.2f}x",
        })
        result["throughput"] = rows
    if "quality" in args.part:
        rows, source = quality(args, device)
        print(f"\nChar LM on {source}, {args.minutes:g} min of training each, device {device}:\n")
        markdown(rows, {
            "layer": lambda r: r["layer"], "hidden": lambda r: f"{args.lm_layers}x{r['hidden']}",
            "recurrent params": lambda r: f"{r['recurrent_params']:,}", "steps": lambda r: r["steps"],
            "chars/s": lambda r: f"{r['chars_per_s']:,}", "valid nats/char": lambda r: f"{r['valid_loss']:.3f}",
        })
        result["quality"] = {"data": source, "minutes": args.minutes, "results": rows}
        if not all(math.isfinite(r["valid_loss"]) for r in rows):
            raise SystemExit("error: a model's valid loss is not finite")
    common.print_json(result)
    return result


if __name__ == "__main__":
    main()
