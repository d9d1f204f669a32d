"""``rnnkit lm train | generate | evaluate``."""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli import common
from rnnkit.decode.sampling import check_sampling
from rnnkit.errors import ConfigError
from rnnkit.tasks import lm


def register(tasks: argparse._SubParsersAction) -> None:
    sub = common.add_task_parser(tasks, "lm", help="language modelling",
                                 description="Language modelling: train, generate text, evaluate perplexity.")

    p = common.add_train_parser(sub, lm, report_training, help="train a language model",
                                description="Train a recurrent language model. With no data given: char level on "
                                "the bundled Tiny Shakespeare, within a few minutes.")
    p.add_argument("--sample-length", type=int, default=300, metavar="N",
                   help="characters/tokens of the sample printed after training (0: none; default 300)")

    p = common.add_run_command(sub, cmd_generate, "generate", help="sample text from a trained run")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new line)")
    p.add_argument("--length", type=int, default=500, help="tokens to generate (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default 0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1.0 = off)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for reproducible samples (default: none, a fresh seed each time)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default 1)")

    common.add_evaluate_command(sub, cmd_evaluate, help="loss and perplexity on a text",
                                test="text to score (default: the run's validation text)")


def report_training(run: lm.LMRun, args: argparse.Namespace) -> None:
    """After training: the best checkpoint's validation loss (stderr) and a sample (stdout)."""
    if run.config.valid is not None or run.config.train is None:
        metrics = run.evaluate()
        print(f"rnnkit: best checkpoint: valid loss {metrics['loss']:.4f}, perplexity "
              f"{metrics['perplexity']:.2f}", file=sys.stderr)
    if args.sample_length > 0:
        print(run.generate("", args.sample_length, temperature=0.8, seed=run.config.seed)[0])


def cmd_generate(args: argparse.Namespace) -> int:
    if args.length < 0 or args.num_samples < 1:
        raise ConfigError("field 'length/num-samples': length >= 0 and num-samples >= 1")
    check_sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)  # before loading
    run = common.load_run(lm, args)
    unknown = run.unknown_symbols(args.prompt)
    if unknown:
        shown = " ".join(repr(u) for u in unknown[:10])
        print(f"rnnkit: warning: prompt symbols outside the vocabulary map to <unk>: {shown}", file=sys.stderr)
    for text in run.generate(args.prompt, args.length, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, seed=args.seed, num_samples=args.num_samples):
        print(args.prompt + text)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = common.load_run(lm, args)
    metrics = run.evaluate(args.test)
    text = (f"loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.2f}  "
            f"bits/token {metrics['bits_per_token']:.4f}  tokens {metrics['tokens']}")
    return common.print_result(metrics, args.json, text)
