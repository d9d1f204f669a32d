"""Generation tokens/s: rnnkit's sampler with the state carried against re-running the model over the prefix.

* carried: ``rnnkit.decode.sampling.generate`` (what ``rnnkit lm generate`` and ``LMRun.generate`` call): the
  prompt is read once, then each new token costs one recurrent step.
* naive: each new token re-runs the recurrent stack over the whole prefix from a zero state (what a loop
  without carried state does), O(prefix) steps per token. Charitably, the output layer is applied to the
  last position only, so the gap measured is the recurrence alone. It samples with rnnkit's ``sample_next``.

Both generate ``--length`` tokens after a ``--prompt-length`` prompt at batch 1 and batch 32
(``num_samples``), temperature 1, from the same randomly initialised ``LanguageModel``, alternating
``--windows`` times (one generation per window). Tokens/s counts generated tokens (batch x length).

    python benchmarks/generation.py                 # char-2x512 and word-2x650, batch 1 and 32
    python benchmarks/generation.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from rnnkit.decode.sampling import generate, sample_next  # noqa: E402
from rnnkit.models.lm import LanguageModel, LMModelConfig  # noqa: E402
from rnnkit.tasks.lm import LMConfig  # noqa: E402

MODELS = {  # vocabulary, embedding, hidden, layers (2, the task's default)
    "char-2x512": LMConfig(emb=128, hidden=512).model_config(vocab_size=65),
    "word-2x650": LMConfig(emb=650, hidden=650).model_config(vocab_size=10_000),
}
QUICK = LMConfig(emb=8, hidden=16).model_config(vocab_size=50)


@torch.no_grad()
def naive_generate(model: LanguageModel, prompt: list[int], length: int, num_samples: int,
                   generator: torch.Generator, temperature: float = 1.0) -> list[list[int]]:
    """Re-run the model over the whole prefix for every new token (no carried state)."""
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)  # (S, P)
    for _ in range(length):
        hidden, _ = model.hidden_states(tokens)  # (S, P + t, H): the whole prefix again
        nxt = sample_next(model.log_probs(hidden[:, -1]), temperature=temperature, generator=generator)  # (S,)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return tokens[:, len(prompt):].tolist()


def measure(name: str, cfg: LMModelConfig, batch: int, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = LanguageModel(cfg).to(device).eval()
    prompt = torch.randint(cfg.vocab_size, (args.prompt_length,)).tolist()
    generator = torch.Generator(device=device).manual_seed(0)
    tokens = batch * args.length

    def carried() -> float:
        return tokens / common.timed(lambda: generate(model, prompt, args.length, seed=0, num_samples=batch), device)

    def naive() -> float:
        return tokens / common.timed(lambda: naive_generate(model, prompt, args.length, batch, generator), device)

    carried(), naive()  # warm-up
    rates = common.alternate({"carried": carried, "naive": naive}, args.windows)
    return {"model": name, "batch": batch, "config": cfg.to_dict(),
            "carried_tokens_per_s": common.summarize(rates["carried"]),
            "naive_tokens_per_s": common.summarize(rates["naive"]),
            "speedup": common.ratio_summary(rates["carried"], rates["naive"])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32], help="samples generated together (1 32)")
    p.add_argument("--length", type=int, default=200, help="tokens generated per sample (default 200)")
    p.add_argument("--prompt-length", type=int, default=20, help="prompt tokens (default 20)")
    p.add_argument("--windows", type=int, default=5, help="alternating generations of each (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 5 tokens, 1 window")
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.length < 1 or args.prompt_length < 1 or args.windows < 1:
        p.error("--batches, --length, --prompt-length and --windows must be >= 1")
    models = {name: MODELS[name] for name in args.models}
    if args.quick:
        models = {"quick": QUICK}
        args.length, args.prompt_length, args.windows = 5, 3, 1
    device = common.setup(args.threads, args.device)
    info = common.machine_info(device, args.threads)
    print(f"torch {info['torch']}, device {device}, {args.threads} threads, {info['date']}; prompt "
          f"{args.prompt_length} tokens, {args.length} generated, temperature 1, {args.windows} windows; "
          f"tokens/s median [min-max]")
    results = [measure(name, cfg, batch, args, device) for name, cfg in models.items() for batch in args.batches]
    rows = [{"model": r["model"], "batch": r["batch"], "carried tok/s": r["carried_tokens_per_s"]["median"],
             "carried range": f"{r['carried_tokens_per_s']['min']:.0f}-{r['carried_tokens_per_s']['max']:.0f}",
             "naive tok/s": r["naive_tokens_per_s"]["median"],
             "naive range": f"{r['naive_tokens_per_s']['min']:.0f}-{r['naive_tokens_per_s']['max']:.0f}",
             "speed-up": f"{r['speedup']['ratio']:.1f}x"} for r in results]
    print()
    common.print_table(rows, ["model", "batch", "carried tok/s", "carried range", "naive tok/s", "naive range",
                               "speed-up"])
    out = {"benchmark": "lm generation", "machine": info, "quick": args.quick, "length": args.length,
           "prompt_length": args.prompt_length, "windows": args.windows, "results": results}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
