"""Training and inference tokens/s of rnnkit's LanguageModel against a plain-PyTorch reference loop.

Sides, all in ONE process with the same data and the same number of steps per window:

* ``reference``: a plain PyTorch LM training loop, kept unmodified (``reference_train``): nn.Embedding ->
  nn.LSTM -> nn.Linear, Adam lr 1e-3, CrossEntropyLoss, clip 5, the hidden state carried and detached between windows.
* ``rnnkit``: the code path of ``rnnkit lm train``: ``rnnkit.train.engine.Trainer.fit`` (the engine loop, as is)
  driving ``rnnkit.tasks.lm.LMTask`` (BPTT windows, ``train_loss``) and ``rnnkit.models.lm.LanguageModel``, with
  the same settings (dropout 0, Adam lr 1e-3, clip 5, log_every 50 into a temporary run folder). The only
  change: checkpoint writes are switched off (``Trainer.save`` is a no-op here) because ``fit`` writes one at
  its end and each window is one ``fit`` call; what checkpoints cost is in ``lm_process.py``.
* ``rnnkit-unfused`` (CPU, vocabularies of ``FUSED_LOSS_MIN_VOCAB`` and up; ``--skip-unfused`` drops it):
  the same, with the output layer's loss computed unfused (log-softmax over the whole ``(B*T, V)`` logits),
  i.e. rnnkit before ``rnnkit.nn.linear_cross_entropy``: the "before" of the output-layer roofline work.
* ``keras``: Keras 3 on its torch backend (stateful LSTMs, ``train_on_batch``), only where keras is installed.

Configurations (2-layer LSTMs, random tokens): ``keras-tutorial`` V=10k E=64 H=128 B=32 T=35;
``small-2x200`` V=10k E=H=200 B=20 T=35; ``medium-2x650`` V=10k E=H=650 B=20 T=35; ``char-2x512`` V=65
E=128 H=512 B=64 T=128.

For each configuration and mode (train: forward + backward + clip + Adam step; infer: forward + summed NLL
under no_grad, state carried, rnnkit through ``rnnkit.tasks.lm.evaluate_ids``) the sides run in
``--windows`` alternating windows (order rotating) of the same number of steps (about ``--window`` seconds
of the reference); we print the median tokens/s, the range, the ratio of medians to the reference with the
range of the window-paired ratios, and the fraction of the measured float32 GEMM peak (``torch.mm``) that the
model's FLOPs reach (per token: 2 * 4H(in + H) per LSTM layer + 2 H V for the output layer, forward;
training counts 3x forward). Peak resident memory of training is measured per configuration and side in a
fresh child process (``ru_maxrss`` after ``--memory-steps`` training steps).

``--adaptive``: on PTB (``--data-dir``/ptb/ptb.train.txt, tokenised by rnnkit's word tokenizer), 2x200 B=20
T=35: reference vs rnnkit full softmax vs rnnkit adaptive softmax (``--cutoffs``); the target is >= 2x the
full softmax's training tokens/s.

    python benchmarks/throughput.py                        # all four configurations (~10 minutes)
    python benchmarks/throughput.py --configs char-2x512   # a subset
    python benchmarks/throughput.py --adaptive             # adaptive vs full softmax on PTB
    python benchmarks/throughput.py --quick                # seconds-long smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET_RATIO = 1.0  # rnnkit >= 1.0x the reference's training tokens/s
TARGET_MEMORY = 1.2  # peak resident memory within 1.2x of the reference
TARGET_ADAPTIVE = 2.0  # adaptive softmax >= 2x the full softmax's training tokens/s


@dataclass(frozen=True)
class Spec:
    """One benchmark configuration: a 2-layer LSTM LM on random tokens."""

    vocab: int
    emb: int
    hidden: int
    layers: int
    batch: int
    bptt: int


CONFIGS = {
    "keras-tutorial": Spec(10_000, 64, 128, 2, 32, 35),
    "small-2x200": Spec(10_000, 200, 200, 2, 20, 35),
    "medium-2x650": Spec(10_000, 650, 650, 2, 20, 35),
    "char-2x512": Spec(65, 128, 512, 2, 64, 128),
}
ADAPTIVE_SPEC = Spec(10_000, 200, 200, 2, 20, 35)  # vocabulary: PTB's, from the data
QUICK = Spec(50, 8, 16, 2, 4, 8)


def flops_per_token(spec: Spec, vocab: int | None = None) -> int:
    """Forward FLOPs per token: 2 * 4H * (in + H) per LSTM layer (both GEMMs), plus 2 H V for the output layer."""
    v = spec.vocab if vocab is None else vocab
    lstm = sum(2 * 4 * spec.hidden * ((spec.emb if i == 0 else spec.hidden) + spec.hidden)
               for i in range(spec.layers))
    return lstm + 2 * spec.hidden * v


# --- the reference loop, unmodified -------------------------------------------------------------------------

class LM(nn.Module):
    """nn.Embedding(V, E) -> nn.LSTM(E, H, L, batch_first=True) -> nn.Linear(H, V)."""

    def __init__(self, V: int, E: int, H: int, L: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, L, batch_first=True)
        self.out = nn.Linear(H, V)

    def forward(self, x: torch.Tensor, h: Any = None) -> tuple[torch.Tensor, Any]:
        y, h = self.lstm(self.emb(x), h)  # (B, T, H)
        return self.out(y), h  # (B, T, V)


class Reference:
    """Issue 6's plain-PyTorch loop; ``train(steps)`` runs it for ``steps`` steps, carrying ``h`` and ``pos``."""

    name = "reference"

    def __init__(self, spec: Spec, data: torch.Tensor, device: torch.device, precision: str = "fp32") -> None:
        V = spec.vocab
        self.T, self.data, self.device = spec.bptt, data.to(device), device
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        model = LM(V, spec.emb, spec.hidden, spec.layers).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-3); loss_fn = nn.CrossEntropyLoss(); h = None  # noqa: E702
        self.model, self.opt, self.loss_fn, self.h, self.pos = model, opt, loss_fn, h, 0
        self.eval_h, self.eval_pos = None, 0

    def _next_pos(self, pos: int) -> int:
        return pos + self.T if pos + 2 * self.T + 1 <= self.data.size(1) else 0

    def train(self, steps: int) -> None:
        model, opt, loss_fn, data, T, h = self.model, self.opt, self.loss_fn, self.data, self.T, self.h
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            for step in range(steps):  # noqa: B007
                pos = self.pos; self.pos = self._next_pos(pos)  # noqa: E702  (the reference leaves pos implicit)
                x, y = data[:, pos:pos + T], data[:, pos + 1:pos + T + 1]        # data: (B, n) token ids
                if h is not None: h = tuple(t.detach() for t in h)  # noqa: E701
                logits, h = model(x, h)
                loss = loss_fn(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
                opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step()  # noqa: E702
        self.h = h

    @torch.no_grad()
    def infer(self, steps: int) -> None:
        model, data, T, h = self.model, self.data, self.T, self.eval_h
        model.eval()
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            for _ in range(steps):
                pos = self.eval_pos; self.eval_pos = self._next_pos(pos)  # noqa: E702
                x, y = data[:, pos:pos + T], data[:, pos + 1:pos + T + 1]
                logits, h = model(x, h)
                self.loss_fn(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        model.train()
        self.eval_h = h


# --- rnnkit: the engine's loop -----------------------------------------------------------------------------

class Rnnkit:
    """rnnkit's LanguageModel trained by the engine's ``Trainer.fit`` over ``LMTask`` windows."""

    def __init__(self, spec: Spec, ids: torch.Tensor, device: torch.device, run_dir: str, precision: str = "fp32",
                 softmax: str = "full", cutoffs: tuple[int, ...] = (), fused: bool = True,
                 log_every: int = 50) -> None:
        from rnnkit.models.lm import LanguageModel
        from rnnkit.tasks import lm
        from rnnkit.train.engine import Trainer

        class NoSaveTrainer(Trainer):
            def save(self, name: str, eval_loss: float | None = None, also_as: str | None = None) -> None:
                # checkpoints: see lm_process.py
                pass

        Path(run_dir).mkdir(parents=True, exist_ok=True)  # metrics.jsonl goes there (lm.train would create it)
        self.fused = fused
        fields: dict[str, Any] = dict(
            out=run_dir, level="word", layers=spec.layers, hidden=spec.hidden, emb=spec.emb, dropout=0.0,
            batch_size=spec.batch, bptt=spec.bptt, optimizer="adam", lr=1e-3, clip=5.0, epochs=10**6,
            time_budget=None, eval_every=0, log_every=log_every, seed=0, device=str(device), softmax=softmax,
            cutoffs=cutoffs)
        if precision != "fp32":
            fields["precision"] = precision  # a ConfigError names the field if the product lacks it
        self.cfg = lm.make_config(**fields)
        self.lm, self.spec, self.device = lm, spec, device
        self.model = LanguageModel(self.cfg.model_config(spec.vocab)).to(device)
        task = lm.LMTask(self.cfg, ids, None, device)
        meta = {"task": lm.TASK, "model_config": self.model.config.to_dict()}
        self.trainer = NoSaveTrainer(self.model, task, self.cfg, Path(run_dir), meta, device, progress=False)
        self.eval_ids = ids

    def train(self, steps: int) -> None:
        self.trainer.cfg = dataclasses.replace(self.cfg, max_steps=self.trainer.state.step + steps)
        with self._output_layer():
            self.trainer.fit()
        if self.trainer.stop_reason != "max_steps":
            raise RuntimeError(f"rnnkit training stopped early: {self.trainer.stop_reason}")

    def infer(self, steps: int) -> None:
        n = self.spec.batch * self.spec.bptt * steps + 1  # exactly `steps` windows of (B, T)
        with self._output_layer():
            self.lm.evaluate_ids(self.model, self.eval_ids[:n], self.spec.bptt, self.device, self.spec.batch)

    @contextlib.contextmanager
    def _output_layer(self) -> Iterator[None]:
        """For ``rnnkit-unfused``: the unfused loss for the duration of one window."""
        from rnnkit.models import lm as lm_model

        saved = lm_model.FUSED_LOSS_MIN_VOCAB
        if not self.fused:
            lm_model.FUSED_LOSS_MIN_VOCAB = sys.maxsize
        try:
            yield
        finally:
            lm_model.FUSED_LOSS_MIN_VOCAB = saved


# --- Keras 3 on torch (optional) ---------------------------------------------------------------------------

def keras_available() -> str | None:
    """None when Keras 3 can run on its torch backend here, else why not."""
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if not keras.__version__.startswith("3") or keras.backend.backend() != "torch":
        return f"needs Keras 3 with KERAS_BACKEND=torch, found {keras.__version__} on {keras.backend.backend()}"
    return None


class Keras:
    """The same model in Keras 3 (torch backend): Embedding -> stateful LSTM x L -> Dense, Adam, clipnorm 5."""

    name = "keras"

    def __init__(self, spec: Spec, data: torch.Tensor, device: torch.device) -> None:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        layers = [keras.Input(batch_shape=(spec.batch, spec.bptt), dtype="int32"),
                  keras.layers.Embedding(spec.vocab, spec.emb)]
        layers += [keras.layers.LSTM(spec.hidden, return_sequences=True, stateful=True) for _ in range(spec.layers)]
        self.model = keras.Sequential([*layers, keras.layers.Dense(spec.vocab)])
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.data, self.T, self.pos = data.numpy().astype("int32"), spec.bptt, 0

    def _window(self) -> tuple[Any, Any]:
        pos, T = self.pos, self.T
        self.pos = pos + T if pos + 2 * T + 1 <= self.data.shape[1] else 0
        return self.data[:, pos:pos + T], self.data[:, pos + 1:pos + T + 1]

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.model.train_on_batch(*self._window())

    def infer(self, steps: int) -> None:
        for _ in range(steps):
            self.model.test_on_batch(*self._window())


# --- data and sides ----------------------------------------------------------------------------------------

def random_ids(spec: Spec, windows: int = 200, seed: int = 0) -> torch.Tensor:
    """A random token stream long enough for ``windows`` BPTT windows per stream (plus one target)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(spec.vocab, (spec.batch * (spec.bptt * windows + 1),), generator=g)


def ptb_ids(data_dir: str, quick: bool) -> tuple[torch.Tensor, int]:
    """PTB's training text as rnnkit word-level ids (rnnkit's tokenizer; <eos> at line ends) and the vocab size."""
    from rnnkit.data.tokenize import build_tokenizer

    text = common.data_file(data_dir, "ptb", "ptb.train.txt", what="PTB training text").read_text(encoding="utf-8")
    if quick:
        text = text[:20_000]
    tok = build_tokenizer("word", [text])
    return torch.tensor(tok.encode_stream(text), dtype=torch.long), len(tok.vocab)


def make_sides(names: list[str], spec: Spec, ids: torch.Tensor, device: torch.device, run_dir: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """Build the named sides on the same token stream (seeded identically)."""
    from rnnkit.data.lm import batchify

    data = batchify(ids, spec.batch)  # (B, n): the layout both loops read
    sides = {}
    log = {"log_every": 1 if getattr(args, "quick", False) else 50}  # --quick exercises the logging too
    for name in names:
        torch.manual_seed(0)
        if name == "reference":
            sides[name] = Reference(spec, data, device, args.precision)
        elif name == "rnnkit":
            sides[name] = Rnnkit(spec, ids, device, os.path.join(run_dir, name), args.precision, **log)
        elif name == "rnnkit-unfused":
            sides[name] = Rnnkit(spec, ids, device, os.path.join(run_dir, name), args.precision, fused=False,
                                 **log)
        elif name == "rnnkit-adaptive":
            sides[name] = Rnnkit(spec, ids, device, os.path.join(run_dir, name), args.precision,
                                 softmax="adaptive", cutoffs=args.cutoffs, **log)
        elif name == "keras":
            sides[name] = Keras(spec, data, device)
        else:
            raise ValueError(f"unknown side {name!r}")
    return sides


# --- measurement -------------------------------------------------------------------------------------------

def measure(spec: Spec, sides: dict[str, Any], mode: str, args: argparse.Namespace,
            device: torch.device) -> dict[str, list[float]]:
    """Tokens/s of every side in ``args.windows`` alternating windows of the same number of steps."""
    for side in sides.values():  # warm-up: allocator, oneDNN primitives, optimizer state
        getattr(side, mode)(2)
    base = sides["reference"] if "reference" in sides else next(iter(sides.values()))
    per_step = common.timed(lambda: getattr(base, mode)(3), device) / 3
    steps = max(2, round(args.window / max(per_step, 1e-9)))
    tokens = steps * spec.batch * spec.bptt

    def runner(side: Any):
        def run() -> float:
            return tokens / common.timed(lambda: getattr(side, mode)(steps), device)
        return run

    return common.alternate({name: runner(side) for name, side in sides.items()}, args.windows)


def child_main(args: argparse.Namespace) -> None:
    """``--child CONFIG:SIDE``: train a few steps in this fresh process and print its peak RSS as JSON."""
    config, side = args.child.split(":")
    device = common.setup(args.threads, args.device)
    spec, ids = load_spec(config, args)
    with tempfile.TemporaryDirectory() as run_dir:
        sides = make_sides([side], spec, ids, device, run_dir, args)
        sides[side].train(args.memory_steps)
    common.print_json({"config": config, "side": side, "peak_rss_mib": common.peak_rss_mib()})


def load_spec(config: str, args: argparse.Namespace) -> tuple[Spec, torch.Tensor]:
    if config == "ptb-2x200":
        ids, vocab = ptb_ids(args.data_dir, args.quick)
        spec = dataclasses.replace(QUICK if args.quick else ADAPTIVE_SPEC, vocab=vocab)
        if args.quick:  # cut-offs that fit the small quick vocabulary
            args.cutoffs = (vocab // 4, vocab // 2)
        return spec, ids
    spec = QUICK if args.quick else CONFIGS[config]
    return spec, random_ids(spec, windows=20 if args.quick else 200)


def child_peak_rss(config: str, side: str, args: argparse.Namespace) -> float:
    """Peak resident memory (MiB) of ``--memory-steps`` training steps of one side, in a fresh process."""
    argv = [str(Path(__file__).resolve()), "--child", f"{config}:{side}", "--threads", str(args.threads),
            "--device", args.device, "--precision", args.precision, "--memory-steps", str(args.memory_steps),
            "--data-dir", args.data_dir, "--cutoffs", ",".join(map(str, args.cutoffs))]
    return common.run_child(argv + (["--quick"] if args.quick else []))["peak_rss_mib"]


def run_config(config: str, sides: list[str], args: argparse.Namespace, device: torch.device,
               peak: dict[str, Any]) -> list[dict[str, Any]]:
    """Every mode of one configuration: one result per (mode, side)."""
    spec, ids = load_spec(config, args)
    from rnnkit.models.lm import FUSED_LOSS_MIN_VOCAB

    if args.skip_unfused or device.type != "cpu" or spec.vocab < FUSED_LOSS_MIN_VOCAB:
        sides = [s for s in sides if s != "rnnkit-unfused"]
    flops = flops_per_token(spec)
    memory = {side: child_peak_rss(config, side, args) for side in sides} if args.memory else {}
    results = []
    with tempfile.TemporaryDirectory() as run_dir:
        built = make_sides(sides, spec, ids, device, run_dir, args)
        for mode in args.modes:
            t0 = time.perf_counter()
            rates = measure(spec, built, mode, args, device)
            for side in sides:
                s = common.summarize(rates[side])
                frac = None
                if side != "rnnkit-adaptive":  # FLOPs of the adaptive softmax depend on the data
                    frac = round(s["median"] * flops * (3 if mode == "train" else 1) / (peak["peak_gflops"] * 1e9), 3)
                train = mode == "train" and args.memory
                results.append({
                    "config": config, "mode": mode, "side": side, "spec": dataclasses.asdict(spec),
                    "tokens_per_s": s, "vs_reference": common.ratio_summary(rates[side], rates["reference"]),
                    "vs_rnnkit_full": common.ratio_summary(rates[side], rates["rnnkit"]) if args.adaptive else None,
                    "flops_per_token_forward": flops, "peak_fraction": frac,
                    "peak_rss_mib": memory[side] if train else None,
                    "rss_vs_reference": round(memory[side] / memory["reference"], 3) if train else None})
            print(f"  {config} {mode}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return results


def table_row(res: dict[str, Any]) -> dict[str, Any]:
    s, r, rf = res["tokens_per_s"], res["vs_reference"], res["vs_rnnkit_full"]
    return {"config": res["config"], "mode": res["mode"], "side": res["side"], "tok/s": s["median"],
            "range": f"{s['min']:.0f}-{s['max']:.0f}",
            "x ref": f"{r['ratio']:.2f} [{r['paired_min']:.2f}-{r['paired_max']:.2f}]",
            "x full": f"{rf['ratio']:.2f} [{rf['paired_min']:.2f}-{rf['paired_max']:.2f}]" if rf else None,
            "% peak": f"{100 * res['peak_fraction']:.0f}%" if res["peak_fraction"] is not None else None,
            "RSS MiB": res["peak_rss_mib"], "RSS x ref": res["rss_vs_reference"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                   help="configurations to run (default: all four; with --quick the first)")
    p.add_argument("--adaptive", action="store_true",
                   help="adaptive vs full softmax on PTB at 2x200 (instead of --configs)")
    p.add_argument("--cutoffs", type=lambda s: tuple(int(v) for v in s.split(",")), default=(2000, 5000),
                   help="adaptive softmax cut-offs (default 2000,5000)")
    p.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    p.add_argument("--windows", type=int, default=7, help="alternating windows per side (default 7, at least 7 "
                   "for reported figures)")
    p.add_argument("--window", type=float, default=3.0, help="seconds per window, on the reference (default 3)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak resident memory of training in child processes (default on)")
    p.add_argument("--memory-steps", type=int, default=10, help="training steps in each memory child (default 10)")
    p.add_argument("--skip-unfused", action="store_true",
                   help="leave out the rnnkit-unfused side (rnnkit before the fused output-layer loss)")
    p.add_argument("--keras", action=argparse.BooleanOptionalAction, default=True,
                   help="include Keras 3 (torch backend) where installed (default on)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision for both sides (GPU; default fp32)")
    p.add_argument("--data-dir", default=str(common.DEFAULT_DATA_DIR),
                   help="folder holding ptb/ (--adaptive; default ../shared/data from the repo root)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 short windows, first config only")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.windows < 1 or args.window <= 0 or args.memory_steps < 1:
        p.error("--windows and --memory-steps must be >= 1 and --window > 0")
    if args.quick:
        args.windows, args.window, args.memory_steps = min(args.windows, 2), min(args.window, 0.02), 2
    if args.configs is None:
        args.configs = list(CONFIGS)[:1] if args.quick else list(CONFIGS)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    device = common.setup(args.threads, args.device)
    info = common.machine_info(device, args.threads)
    if args.adaptive:
        sides = ["reference", "rnnkit-adaptive", "rnnkit"]
    else:
        sides = ["reference", "rnnkit", "rnnkit-unfused"]  # the last only where the vocabulary is large
    keras_note = keras_available() if args.keras and not args.adaptive else "not asked for"
    if keras_note is None and device.type == "cpu":
        sides.append("keras")
    elif keras_note is None:
        keras_note = "CPU only here"
    peak = common.gemm_peak(device, sizes=(64, 128) if args.quick else (256, 512, 1024, 2048),
                            seconds=0.02 if args.quick else 0.5)
    print(f"torch {info['torch']} on {info['cpu']} ({info['cpu_count']} CPUs), device {device}, "
          f"{args.threads} threads, precision {args.precision}, {info['date']}")
    print(f"float32 GEMM peak (torch.mm): {peak['peak_gflops']:.1f} GFLOP/s at n={peak['best_size']} "
          f"({', '.join(f'{n}: {g:.0f}' for n, g in peak['gflops_by_size'].items())})")
    print(f"keras: {'included' if keras_note is None else 'skipped: ' + keras_note}")
    print(f"{args.windows} alternating windows of ~{args.window:g}s per side; tokens/s median [min-max]; "
          f"ratio = median / reference median [paired min-max]\n")

    configs = ["ptb-2x200"] if args.adaptive else args.configs
    results = [res for config in configs for res in run_config(config, sides, args, device, peak)]
    rows = [table_row(res) for res in results]
    columns = ["config", "mode", "side", "tok/s", "range", "x ref"] + (["x full"] if args.adaptive else [])
    common.print_table(rows, columns + ["% peak", "RSS MiB", "RSS x ref"])

    targets = None
    if not args.quick:
        train = [r for r in results if r["mode"] == "train"]
        targets = {}
        if args.adaptive:
            ad = [r for r in train if r["side"] == "rnnkit-adaptive"]
            targets["adaptive_ge_2x_full"] = all(r["vs_rnnkit_full"]["ratio"] >= TARGET_ADAPTIVE for r in ad)
        else:
            rk = [r for r in train if r["side"] == "rnnkit"]
            targets["train_ge_1.0x_reference"] = all(r["vs_reference"]["ratio"] >= TARGET_RATIO for r in rk)
        if args.memory:
            targets["memory_le_1.2x_reference"] = all(
                r["rss_vs_reference"] <= TARGET_MEMORY for r in train if r["side"].startswith("rnnkit"))
    print(f"\ntargets met: {targets}" if targets is not None else "\ntargets: not judged on a quick run")
    out = {"benchmark": "lm throughput" + (" (adaptive softmax)" if args.adaptive else ""), "machine": info,
           "quick": args.quick, "windows": args.windows, "window_s": args.window, "gemm": peak,
           "keras": "included" if keras_note is None else f"skipped: {keras_note}",
           "cutoffs": list(args.cutoffs) if args.adaptive else None, "results": results, "targets_met": targets}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
