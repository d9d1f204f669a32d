"""``rnnkit``: the command line. Each task's CLI module registers its own subcommands.

Errors caused by input (files, flags, config values, checkpoints) print one line,
``rnnkit: error: <file:line or field>: <what is wrong>``, and exit with status 2; a failing system call
(a full disk, a permission...) prints ``rnnkit: error: <file>: <why>`` and exits with status 1. Training
stopped by Ctrl-C or SIGTERM saves, prints how to resume and exits with 130 or 143 (128 + the signal's
number); Ctrl-C or SIGTERM anywhere else prints ``rnnkit: interrupted`` and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from rnnkit import __version__
from rnnkit.errors import RnnkitError, TrainingInterrupted


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


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (which handles it itself): stop like Ctrl-C, exit with 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous = None
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except TrainingInterrupted as e:
        if str(e):  # empty on torchrun's ranks other than 0
            print(f"rnnkit: {e}", file=sys.stderr)
        return e.exit_code
    except RnnkitError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("rnnkit: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # e.g. `rnnkit lm generate ... | head`
        return 0
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"rnnkit: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
