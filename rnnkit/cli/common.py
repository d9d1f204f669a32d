"""Flags from config dataclasses, config-file merging and output conventions shared by every task's CLI.

Conventions: a field ``batch_size`` is the flag ``--batch-size``; ``--config FILE`` (TOML or YAML) sets
the same fields and flags win over it; stdout carries only results, everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from rnnkit.errors import ConfigError, DataError
from rnnkit.train.config import base_type, build_config, coerce, field_type, load_config_file
from rnnkit.train.distributed import is_main_process

C = TypeVar("C")


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls``, its help ending with the field's default (once: a help text that
    already explains its default keeps its own words) and showing its choices; given flags only
    (argparse.SUPPRESS), so a config file can fill the rest."""
    group = parser.add_argument_group("run settings (also settable in --config)")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if "default" not in help_text:
            shown = (",".join(map(str, f.default)) or "none") if isinstance(f.default, tuple) else f.default
            if f.metadata.get("duration") and isinstance(f.default, float):
                shown = f"{f.default:g}s"
            help_text += f" (default: {shown})"
        base, _ = base_type(field_type(cls, f.name))
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        elif f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]  # argparse shows them as {a,b,c}
        elif f.metadata.get("duration"):
            kwargs["metavar"] = "DURATION"
        elif typing.get_origin(base) is tuple:
            kwargs["metavar"] = "N,N,..."
        else:
            kwargs["metavar"] = {int: "N", float: "X", str: "S"}.get(base, "LIST")
        group.add_argument(flag, **kwargs)


def add_task_parser(tasks: argparse._SubParsersAction, name: str, *, help: str,
                    description: str) -> argparse._SubParsersAction:
    """The ``rnnkit NAME ...`` command group of a task; returns the group's subparsers (``ACTION``), to
    which :func:`add_train_parser`, :func:`add_run_command`... add the commands."""
    parser = tasks.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def add_train_parser(sub: argparse._SubParsersAction, task: Any, report: Callable[[Any, argparse.Namespace], None],
                     *, help: str, description: str,
                     check: Callable[[argparse.Namespace], None] | None = None) -> argparse.ArgumentParser:
    """The ``train`` command of a task module (its ``DRIVER.spec.config_class`` gives the run flags), the
    same for every task: ``--config``, ``--overwrite``, ``--resume``, ``--no-progress`` and one flag per
    config field. It runs ``check(args)`` (the caller's own flags) before anything else, trains or resumes
    (:func:`train_or_resume`), then ``report(run, args)`` on the process that reports (rank 0 under
    torchrun). The caller adds its own flags."""
    p = sub.add_parser("train", help=help, description=description)
    p.set_defaults(func=functools.partial(_train_command, task, report, check))
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file setting the fields below; flags win")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint (only stopping, "
                   "saving, device and thread flags may be given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p, task.DRIVER.spec.config_class)
    return p


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given as flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def resolve_config(cls: type[C], args: argparse.Namespace) -> C:
    """field defaults < config file < flags, each value checked against the field's type."""
    values: dict[str, Any] = {}
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


def train_or_resume(task: Any, args: argparse.Namespace) -> Any:
    """``train`` or ``--resume``, the same for every task module (its ``DRIVER``).

    A fresh run takes field defaults < ``--config`` file < flags; ``--resume RUN`` takes its config from the
    run folder, and the driver's ``resume`` accepts only the stopping, saving, device and thread flags among those
    given.
    """
    driver = task.DRIVER
    cls = driver.spec.config_class
    progress = not args.no_progress
    if args.resume:
        if args.config:
            raise ConfigError("field 'config': --resume takes its config from the run folder")
        return driver.resume(args.resume, progress=progress, **given_fields(args, cls))
    return driver.train(resolve_config(cls, args), overwrite=args.overwrite, progress=progress)


def _train_command(task: Any, report: Callable[[Any, argparse.Namespace], None],
                   check: Callable[[argparse.Namespace], None] | None, args: argparse.Namespace) -> int:
    """The ``train`` command of :func:`add_train_parser`."""
    if check is not None:
        check(args)
    run = train_or_resume(task, args)
    if is_main_process():  # under torchrun only rank 0 reports
        report(run, args)
    return 0


def print_result(metrics: dict[str, Any], as_json: bool, text: str) -> int:
    """An evaluation result on stdout: one JSON line (``--json``, see :func:`print_json`) or ``text``; the
    command's exit status."""
    if as_json:
        print_json(metrics)
    else:
        print(text)
    return 0


def load_run(task: Any, args: argparse.Namespace) -> Any:
    """The run a ``RUN`` argument names, with ``--checkpoint``, ``--device`` and ``--threads`` applied."""
    apply_threads(args.threads)
    return task.DRIVER.load(Path(args.run), checkpoint=args.checkpoint, device=args.device)


def add_run_command(sub: argparse._SubParsersAction, func: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A command on a trained run (``generate``, ``evaluate``...): the ``RUN`` argument and the load flags;
    the caller adds its own flags."""
    p = sub.add_parser(name, **kwargs)
    p.add_argument("run", metavar="RUN", help="run folder")
    group = p.add_argument_group("loading the run")  # shown after the command's own flags
    group.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=func)
    return p


def add_evaluate_command(sub: argparse._SubParsersAction, func: Any, *, help: str, test: str,
                         json: str = "print one JSON line", **kwargs: Any) -> argparse.ArgumentParser:
    """The ``evaluate`` command of a task: ``RUN``, ``--test FILE`` (help ``test``), ``--json`` (help
    ``json``) and the load flags; the caller adds its own flags."""
    p = add_run_command(sub, func, "evaluate", help=help, **kwargs)
    p.add_argument("--test", metavar="FILE", help=test)
    p.add_argument("--json", action="store_true", help=json)
    return p


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
