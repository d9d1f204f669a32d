"""GPU check and throughput: rnnkit on CUDA against the plain-PyTorch reference on the same card.

    python benchmarks/gpu.py            # needs a CUDA device; prints a table and one JSON line
    python benchmarks/gpu.py --device cpu --quick   # smoke run of the same code on tiny sizes (tests use it)

1. Exactness: rnnkit.nn.LSTM (fused -> cuDNN) equals torch.nn.LSTM with the same weights, with lengths.
2. Training tokens/s of the plain reference loop and of rnnkit's LanguageModel driven through LMTask and
   the engine's step (fp32, and bf16 autocast for rnnkit), 2x650 LSTM, V=10k, batch 20 and 64, BPTT 35,
   alternating windows, median.
3. cuDNN's "weights are not part of single contiguous chunk" warning: how often the 2x650 LM's training and
   evaluation steps raise it, with the default settings and with locked dropout between the layers
   (``dropout_hidden``, where the fused engine runs layer by layer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from rnnkit.models.lm import LanguageModel


class RefLM(nn.Module):
    def __init__(self, V: int, E: int, H: int) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(V, E), nn.LSTM(E, H, 2, batch_first=True), nn.Linear(H, V)

    def forward(self, x, h=None):
        y, h = self.rnn(self.emb(x), h)
        return self.out(y), h


def check_exactness(device: torch.device) -> float:
    from rnnkit.nn import LSTM

    torch.manual_seed(0)
    ref = nn.LSTM(16, 32, 2, batch_first=True, bidirectional=True).to(device)
    ours = LSTM(16, 32, 2, batch_first=True, bidirectional=True).to(device)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 9, 16, device=device)
    lengths = torch.tensor([9, 3, 7, 1])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    r_out, (r_h, _) = ref(packed)
    r_out, _ = nn.utils.rnn.pad_packed_sequence(r_out, batch_first=True, total_length=9)
    o_out, (o_h, _) = ours(x, lengths=lengths)
    assert ours.last_engine == "fused"
    return max((o_out - r_out).abs().max().item(), (o_h - r_h).abs().max().item())


def ref_steps(B: int, T: int, V: int, H: int, device: torch.device):
    model = RefLM(V, H, H).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    data = torch.randint(V, (B, 100_000 // B), device=device)
    state = {"h": None, "pos": 0}

    def step():
        pos = state["pos"]
        x, y = data[:, pos:pos + T], data[:, pos + 1:pos + T + 1]
        state["pos"] = (pos + T) % (data.size(1) - T - 1)
        h = state["h"]
        if h is not None:
            h = tuple(t.detach() for t in h)
        logits, h = model(x, h)
        state["h"] = h
        loss = loss_fn(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def rnnkit_steps(B: int, T: int, V: int, H: int, device: torch.device, precision: str):
    from rnnkit.tasks.lm import LMConfig, LMTask
    from rnnkit.train.engine import Trainer

    cfg = LMConfig(batch_size=B, bptt=T, hidden=H, emb=H, dropout=0.0, lr=1e-3, clip=5.0, epochs=1000,
                   max_steps=None, time_budget=None, log_every=10**9, precision=precision)
    model = LanguageModel(cfg.model_config(vocab_size=V)).to(device)  # 2 layers, the task's default
    ids = torch.randint(V, (100_000,))
    task = LMTask(cfg, ids, None, device)
    trainer = Trainer(model, task, cfg, Path(tempfile.mkdtemp()), meta={}, device=device, progress=False)
    batches = iter(())
    state = {"carry": None}
    params = list(model.parameters())

    def step():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = task.train_batches(0, 0)
            batch = next(batches)
        with trainer._autocast():
            loss_sum, carry, tokens, _ = trainer.step_module(batch, state["carry"])
        loss = loss_sum.float() / tokens
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.unscale_(trainer.optimizer)
        nn.utils.clip_grad_norm_(params, 5.0)
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        state["carry"] = tuple(t.detach() for t in carry)
    return step


def chunk_warnings(device: torch.device, dropout_hidden: float, H: int, V: int) -> dict[str, int]:
    """cuDNN weight-chunk warnings raised by 5 training and 5 evaluation forwards of the 2xH LM."""
    from rnnkit.tasks.lm import LMConfig

    cfg = LMConfig(hidden=H, emb=H, dropout_hidden=dropout_hidden)
    model = LanguageModel(cfg.model_config(vocab_size=V)).to(device)
    tokens = torch.randint(V, (20, 35), device=device)
    counts = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(5):
                with torch.set_grad_enabled(mode == "train"):
                    out, _ = model(tokens)
                    if mode == "train":
                        out.sum().backward()
        counts[mode] = sum("single contiguous chunk" in str(w.message) for w in caught)
    return counts


def timed(step, n: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (default); cpu only to smoke-test the script")
    p.add_argument("--quick", action="store_true", help="tiny sizes (H 32, V 200, B 4), 1 window of 2 steps")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here (--device cpu --quick smoke-tests the script)")
    device = torch.device(args.device)
    H, V, T, batches = (32, 200, 35, (4,)) if args.quick else (650, 10_000, 35, (20, 64))
    if args.quick:
        args.windows, args.steps = 1, 2
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    err = check_exactness(device)
    print(f"{card}  torch {torch.__version__}  cuDNN {torch.backends.cudnn.version()}")
    print(f"exactness: rnnkit LSTM (fused) vs torch.nn.LSTM with lengths, max abs diff {err:.2e}")
    chunks = {f"dropout_hidden={p}": chunk_warnings(device, p, H, V) for p in (0.0, 0.5)}
    print(f"cuDNN weight-chunk warnings in 5 train / 5 eval forwards of the 2x{H} LM: {chunks}")
    results = []
    for B in batches:
        sides = {"reference fp32": ref_steps(B, T, V, H, device),
                 "rnnkit fp32": rnnkit_steps(B, T, V, H, device, "fp32"),
                 "rnnkit bf16": rnnkit_steps(B, T, V, H, device, "bf16")}
        for step in sides.values():
            timed(step, 5, device)  # warm-up (cuDNN plans, allocator)
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.windows):
            for side, step in sides.items():
                times[side].append(B * T * args.steps / timed(step, args.steps, device))
        ref = statistics.median(times["reference fp32"])
        for side, tps in times.items():
            med = statistics.median(tps)
            results.append({"batch": B, "side": side, "tokens_per_s": round(med), "min": round(min(tps)),
                            "max": round(max(tps)), "ratio_to_reference": round(med / ref, 3)})
            print(f"B={B:<3} {side:<15} {med:>10,.0f} tok/s  (range {min(tps):,.0f}-{max(tps):,.0f})  "
                  f"x{med / ref:.2f}")
    print(json.dumps({"benchmark": "gpu", "device": card, "quick": args.quick, "exactness_max_abs": err,
                      "chunk_warnings": chunks,
                      "config": f"2x{H} LSTM, V={V}, BPTT {T}, Adam, clip 5", "results": results}))


if __name__ == "__main__":
    main()
