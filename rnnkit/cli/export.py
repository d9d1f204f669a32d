"""``rnnkit export RUN --format onnx [--quantize int8] --out DIR``: a self-contained ONNX folder."""

from __future__ import annotations

import argparse


def register(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser("export", help="export a trained run to ONNX", description="Write RUN's model as ONNX "
                         "graphs, with its vocabularies, a model.json describing the graphs and a standalone "
                         "example.py (onnxruntime + numpy), into DIR.")
    p.add_argument("run", metavar="RUN", help="run folder (any task)")
    p.add_argument("--format", choices=("onnx",), required=True, help="export format")
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantisation of the weights (default: none)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DIR")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from rnnkit.export.onnx import export

    print(export(args.run, args.out, quantize=args.quantize, overwrite=args.overwrite))
    return 0
