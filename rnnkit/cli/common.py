"""Flags from config dataclasses, config-file merging and output conventions shared by every task's CLI.

Conventions: a field ``batch_size`` is the flag ``--batch-size``; ``--config FILE`` (TOML or YAML) sets
the same fields and flags win over it; stdout carries only results, everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from rnnkit.errors import ConfigError, DataError
from rnnkit.train.config import base_type, build_config, coerce, field_type, load_config_file

C = TypeVar("C")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: Mapping[str, Any],
                     skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls``; given flags only (argparse.SUPPRESS), so a config file can fill
    the rest. ``defaults`` overrides the dataclass defaults shown in the help."""
    group = parser.add_argument_group("run settings (also settable in --config)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if f.metadata.get("duration") and isinstance(default, float):
            shown = f"{default:g}s"
        help_text = f"{f.metadata.get('help', '')} (default: {shown})"
        base, _ = base_type(field_type(cls, f.name))
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        kwargs["metavar"] = {int: "N", float: "X", str: "S"}.get(base, "LIST")
        if f.metadata.get("duration"):
            kwargs["metavar"] = "DURATION"
        if typing.get_origin(base) is tuple:
            kwargs["metavar"] = "N,N,..."
        group.add_argument(flag, **kwargs)


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given as flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def resolve_config(cls: type[C], args: argparse.Namespace, defaults: Mapping[str, Any]) -> C:
    """defaults < config file < flags, each value checked against the field's type."""
    values: dict[str, Any] = dict(defaults)
    config_path = getattr(args, "config", None)
    if config_path:
        from_file = load_config_file(config_path)
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in from_file.items():
            if key not in names:
                raise ConfigError(f"{config_path}: unknown field '{key}'")
            coerce(cls, key, value, config_path)
        values.update(from_file)
    values.update(given_fields(args, cls))
    return build_config(cls, values, source=str(config_path) if config_path else "flags")


def train_or_resume(task: Any, cls: type, args: argparse.Namespace) -> Any:
    """``train`` or ``--resume``, the same for every task module (``train``, ``resume``, ``DEFAULTS``).

    A fresh run takes defaults < ``--config`` file < flags; ``--resume RUN`` takes its config from the run
    folder, and the task's ``resume`` accepts only the stopping, device and thread flags among those given.
    """
    progress = not args.no_progress
    if args.resume:
        if args.config:
            raise ConfigError("field 'config': --resume takes its config from the run folder")
        return task.resume(args.resume, progress=progress, **given_fields(args, cls))
    cfg = resolve_config(cls, args, task.DEFAULTS)
    return task.train(cfg, overwrite=args.overwrite, progress=progress)


def add_load_flags(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--device`` and ``--threads`` for commands that load a trained run."""
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count from ``--threads`` (None: torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"field 'threads': must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def print_json(record: Mapping[str, Any]) -> None:
    """Print ``record`` as one line of valid JSON (RFC 8259: no NaN or Infinity).

    A non-finite number becomes ``null``, and a field ``<name>_note`` says what it was, e.g.
    ``"perplexity": null, "perplexity_note": "overflow: inf (loss 800 nats)"`` when ``loss`` is there.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            what = "not a number" if math.isnan(value) else f"overflow: {value}"
            loss = record.get("loss")
            if key != "loss" and isinstance(loss, float) and math.isfinite(loss):
                what += f" (loss {loss:g} nats)"
            out[key], out[f"{key}_note"] = None, what
        else:
            out[key] = value
    print(json.dumps(out, allow_nan=False))


def stdin_lines() -> list[str]:
    """Standard input as lines, with the checks :func:`rnnkit.data.files.read_lines` makes on files."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"<stdin>:{line}: binary input (NUL byte)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"<stdin>:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    if not text.strip():
        raise DataError("<stdin>: no input (give one sentence per line, or --input FILE)")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start an empty one
    return lines
