"""``rnnkit plot RUN``: training and validation loss curves."""

from __future__ import annotations

import argparse


def register(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser("plot", help="draw a run's loss curves", description="Draw training and validation "
                         "loss against step from RUN/metrics.jsonl into RUN/curves.png; prints the file written.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--out", metavar="FILE", help="image file (.png, .pdf, .svg...), or an existing folder to "
                   "write curves.png into (default RUN/curves.png)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from rnnkit.plot import plot_curves

    print(plot_curves(args.run, args.out))
    return 0
