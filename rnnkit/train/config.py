"""Typed run configuration: one frozen dataclass per task, built from a config file and flags.

A task's config is a frozen dataclass that inherits the training fields of :class:`TrainConfig`. The CLI
derives its flags from the fields (``help`` and ``choices`` live in field metadata), a config file
(TOML or YAML) may set the same fields, and flags win over the file. Unknown keys, ill-typed values and
values outside ``choices`` or outside a declared range (``low``, ``fraction``) raise
:class:`~rnnkit.errors.ConfigError` naming the field (and the file).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rnnkit.data.files import decode_text
from rnnkit.data.tokenize import LEVELS
from rnnkit.errors import ConfigError

C = TypeVar("C")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(value: str | float | int) -> float:
    """Parse ``N[s|m|h]`` (seconds when no unit) into seconds; numbers pass through."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0 or not math.isfinite(value):
            raise ValueError(f"duration must be positive, got {value!r}")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration (expected N[s|m|h], e.g. 90s, 10m, 1.5h): {value!r}")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_every(value: str | int) -> tuple[str, float]:
    """Parse a ``--save-every`` value: ``N`` optimiser steps -> ("steps", N), ``N[s|m|h]`` -> ("seconds", x);
    ``0`` -> ("steps", 0), off."""
    if isinstance(value, bool):
        raise ValueError(f"not a step count or duration: {value!r}")
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return "steps", int(text)
    if not re.fullmatch(r"\d+(?:\.\d+)?\s*[smh]", text):
        raise ValueError(f"expected N steps or a duration N[s|m|h] (e.g. 500 or 10m), got {value!r}")
    return "seconds", parse_duration(text)


def option(default: Any, help: str, *, choices: tuple | None = None, duration: bool = False,
           flag: str | None = None, check: Callable[[Any], Any] | None = None, low: int | None = None,
           fraction: bool = False, data_file: bool = False, metavar: str | None = None) -> Any:
    """A config field: default plus the CLI help text and, optionally, its allowed values or a ``check``
    that raises ValueError for a bad value (the message follows ``field 'name':``), and the flag's
    ``metavar`` in ``--help`` when the type's (N, X, S...) says too little.

    Ranges are declared here and enforced by :meth:`TrainConfig.__post_init__` for every task config:
    ``low=N`` (the value must be >= N; None passes, for optional fields) and ``fraction=True`` (a rate
    such as dropout: in [0, 1)).

    ``data_file``: the field names an input file (training data, word vectors...). A run stores such paths
    absolute and the sha256 of each file's content, and ``--resume`` refuses a file that changed
    (:mod:`rnnkit.train.driver`); every field naming an input file must say so.
    """
    meta = {"help": help, "choices": choices, "duration": duration, "flag": flag, "check": check, "low": low,
            "fraction": fraction, "data_file": data_file, "metavar": metavar}
    return field(default=default, metadata=meta)


def data_file_fields(cfg: Any) -> list[str]:
    """The names of ``cfg``'s fields declared with ``option(..., data_file=True)``."""
    return [f.name for f in dataclasses.fields(cfg) if f.metadata.get("data_file")]


def train_option(what: str, bundled: str) -> Any:
    """The ``train`` field of a task whose default is its bundled data: ``what`` the files are, and which
    bundled data stand in when none is given."""
    return option(None, f"{what} (default: {bundled})", data_file=True)


def valid_option(what: str, bundled: str) -> Any:
    """The ``valid`` field beside :func:`train_option`: ``bundled`` is the validation data used with the
    bundled training data; with training files and no ``valid``, no validation runs."""
    return option(None, f"{what} (default with bundled data: {bundled}; otherwise none, and no validation runs)",
                  data_file=True)


@dataclass(frozen=True)
class TrainConfig:
    """Training-loop settings shared by every task (the engine reads only these)."""

    optimizer: str = option("adam", "optimiser", choices=("adam", "adamw", "sgd"))
    lr: float = option(2e-3, "learning rate")
    weight_decay: float = option(0.0, "weight decay (L2 for adam/sgd, decoupled for adamw)", low=0)
    momentum: float = option(0.0, "SGD momentum", low=0)
    scheduler: str = option("none", "learning-rate schedule: plateau = divide by --lr-decay when the "
                            "validation metric the task selects on stops improving; cosine = linear warm-up then "
                            "cosine to 0; step = Zaremba "
                            "et al.: multiply by --lr-decay every epoch from --decay-start on",
                            choices=("none", "plateau", "cosine", "step"))
    lr_decay: float = option(0.5, "multiplier for plateau and step schedules")
    decay_start: int = option(4, "first epoch (1-based) that the step schedule decays after")
    warmup_steps: int = option(0, "linear warm-up steps (cosine schedule)")
    patience: int = option(3, "early stopping: evaluations without improvement before stopping (0 = off)")
    clip: float = option(5.0, "clip gradients to this global norm (0 = off)")
    epochs: int = option(10, "maximum number of epochs", low=1)
    max_steps: int | None = option(None, "stop after this many optimiser steps in total", low=0)
    time_budget: float | None = option(None, "stop training after this wall time, N[s|m|h]", duration=True)
    eval_every: int = option(0, "evaluate on --valid every N steps (0 = at the end of each epoch)", low=0)
    save_every: str = option("10m", "also save the 'last' checkpoint (for --resume) every N optimiser steps, or "
                             "every DURATION of training, N[s|m|h] (e.g. 500 or 10m), with or without "
                             "validation; 0 = only at evaluations and when training stops", check=parse_every,
                             metavar="N|DURATION")
    log_every: int = option(50, "write a metrics line every N steps", low=1)
    seed: int = option(1, "random seed (model init, dropout, shuffling, sampling)")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under torchrun: each rank's own GPU)")
    precision: str = option("fp32", "autocast precision (fp16 adds a gradient scaler)",
                            choices=("fp32", "bf16", "fp16"))

    def __post_init__(self) -> None:
        """The ranges every field declares (``low``, ``fraction``: see :func:`option`), in field order, the
        learning rate, then the task config's own cross-field checks (:meth:`validate`)."""
        for f in dataclasses.fields(self):
            if f.metadata.get("low") is not None and getattr(self, f.name) is not None:
                self.check_at_least(f.metadata["low"], f.name)
            if f.metadata.get("fraction"):
                self.check_fraction(f.name)
        if self.lr <= 0:
            raise ValueError(f"field 'lr': must be > 0, got {self.lr}")
        self.validate()

    def validate(self) -> None:
        """Checks across fields, which a task config overrides (ValueError naming the field); ranges of single
        fields are declared in :func:`option` instead."""

    def check_at_least(self, low: int, *names: str) -> None:
        """ValueError naming the first of ``names`` whose value is below ``low``."""
        for name in names:
            if getattr(self, name) < low:
                raise ValueError(f"field '{name}': must be >= {low}, got {getattr(self, name)}")

    def check_fraction(self, *names: str) -> None:
        """ValueError naming the first of ``names`` (dropout rates...) outside [0, 1)."""
        for name in names:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"field '{name}': must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class TokenizerFields:
    """Settings of the tokenizer(s) a task trains on its data (:func:`rnnkit.data.tokenize.build_tokenizer`),
    shared by the configs of the tasks that have one: ``class LMConfig(TokenizerFields, TrainConfig)``. A task
    changes a default with :func:`task_default` (the LM's ``level`` is ``char``)."""

    level: str = option("word", "tokens: characters, whitespace words or BPE subwords", choices=LEVELS)
    min_count: int = option(1, "char/word level: rarer symbols become <unk>", low=1)
    max_vocab: int | None = option(None, "char/word level: keep at most this many symbols", low=1)
    subword_vocab: int = option(8000, "subword level: BPE vocabulary size", low=1)


def positive(value: float) -> None:
    """An ``option`` check: the value must be > 0."""
    if not value > 0:
        raise ValueError(f"must be > 0, got {value}")


def task_default(name: str, default: Any) -> Any:
    """A :class:`TrainConfig` or :class:`TokenizerFields` field re-declared by a task config with the task's own
    default (same help and checks)::

        time_budget: float | None = task_default("time_budget", 180.0)
    """
    shared = {**TrainConfig.__dataclass_fields__, **TokenizerFields.__dataclass_fields__}
    return field(default=default, metadata=shared[name].metadata)


def field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def base_type(tp: Any) -> tuple[type, bool]:
    """(underlying type, optional?) of ``int``, ``int | None``, ``Optional[int]``..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config type {tp}")
        return args[0], True
    return tp, False


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """Check and convert one value for field ``name`` of ``cls``; raise ConfigError naming it."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    base, optional = base_type(field_type(cls, name))
    where = f"{source}: field '{name}'"
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    if f.metadata.get("duration"):
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    try:
        if base is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                out = value.lower() in ("true", "yes", "1", "on")
            else:
                raise ValueError
        elif base is int:
            out = _to_int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        elif base is str:
            if f.metadata.get("check") is parse_every and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # a step count from a config file
            if not isinstance(value, str):
                raise ValueError
            out = value
        elif typing.get_origin(base) is tuple:
            if isinstance(value, str):
                value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            out = tuple(_to_int(v) for v in value)
        else:
            raise TypeError(f"unsupported config type {base}")
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: expected {_type_name(base)}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices and out not in choices:
        raise ConfigError(f"{where}: {out!r} is not one of {', '.join(map(str, choices))}")
    check = f.metadata.get("check")
    if check is not None:
        try:
            check(out)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def _to_int(value: Any) -> int:
    """``int(value)`` for integers, integral floats and numeric strings; ValueError for anything else
    (a bool, 1.5, inf, nan)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list of integers"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a flat dict of fields."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e.__class__.__name__})") from None
    # UTF-16, binary and non-UTF-8 files get data/files' one-line messages; an empty file sets nothing
    text = decode_text(data, path, what="config file") if data.strip() else ""
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - exercised on Python 3.10 only
                import tomli as tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            if data is None:
                data = {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as e:  # parser errors carry the line in their message
        msg = " ".join(str(e).split())
        raise ConfigError(f"{path}: ill-formed config: {msg}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the config must be a table of field = value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build ``cls`` from ``values`` (field -> raw value), checking names and types."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown field '{unknown[0]}'")
    kwargs = {k: coerce(cls, k, v, source) for k, v in values.items()}
    try:
        cfg = cls(**kwargs)
    except ValueError as e:  # __post_init__ cross-field checks
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out
