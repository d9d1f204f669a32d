"""``rnnkit``: the command line. Each task's CLI module registers its own subcommands.

Errors caused by input (files, flags, config values, checkpoints) print one line,
``rnnkit: error: <file:line or field>: <what is wrong>``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from rnnkit import __version__
from rnnkit.errors import RnnkitError


def build_parser() -> argparse.ArgumentParser:
    from rnnkit.cli import classify, export, lm, plot, seq2seq, serve, tag  # a broken module fails here, loudly

    parser = argparse.ArgumentParser(
        prog="rnnkit", description="Recurrent neural networks on sequences: train, evaluate and use "
        "language models, taggers, attention seq2seq models and text classifiers.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    tasks = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (lm, tag, seq2seq, classify, plot, export, serve):
        module.register(tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RnnkitError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnkit lm generate ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
