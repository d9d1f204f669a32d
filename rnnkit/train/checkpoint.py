"""Checkpoint files: one safetensors file per checkpoint, written atomically, never a pickle.

The layout of ``RUN/<name>.safetensors`` (``best`` or ``last``), as :func:`save_training_checkpoint`
writes it. Tensors, under prefixed keys:

    model.<name>        the model's state dict (the unwrapped model, never a pickled module)
    optim.<i>.<key>     the optimiser's per-parameter tensors (Adam's moments...)
    carry.<i>           the carried recurrent state, flattened (see :func:`carry_to_flat`)
    rng.torch           torch's CPU generator state, one row per process: (world_size, n)
    rng.cuda.<d>        each CUDA device's generator state, likewise (when CUDA was in use)

and, in the safetensors header's metadata under the key ``rnnkit``, one JSON document:

    format_version      1
    rnnkit_version      the version that wrote the file
    task, model_config  what the driver stores: the task's name and its model's config
                        (plus task-specific values, e.g. the tagger's ``constraints``)
    name                "best" or "last"
    eval_loss           validation loss of a 'best' checkpoint (None otherwise)
    world_size          processes that wrote it (a run resumes with as many)
    state               the loop counters: the fields of :class:`LoopCounters`
    schedule_scale      the learning-rate schedule's multiplier (plateau and step schedules)
    optimizer           the optimiser's param_groups and its plain (non-tensor) per-parameter values
    scaler              the fp16 gradient scaler's state dict ({} when off)
    carry               the structure that rebuilds the carried state from ``carry.<i>`` (None: no carry)
    tensor_sha256       sha256 over every tensor (see :func:`tensor_digest`), verified on load; files
                        written before it existed have none and load unchecked

Loading reads the file once with :func:`safetensors.safe_open`, which cannot run code. Every file of a
run is written through :func:`atomic_write`: a temporary file in the same folder, fsync, rename; when
writing fails (a full disk...) the temporary file is removed, the previous file is left as it was, and
the failure is a :class:`~rnnkit.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rnnkit import __version__
from rnnkit.errors import CheckpointError

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


@dataclass
class LoopCounters:
    """The training loop's counters, saved as a checkpoint's ``state`` and restored from it."""

    step: int = 0  # optimiser steps taken in total
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    # scores: the task's selection metric (Task.selects_on), negated where higher is better; lower is better
    best_score: float = math.inf  # best scheduled evaluation (early stopping and plateau schedule)
    bad_evals: int = 0  # scheduled evaluations since the best one
    best_saved_score: float = math.inf  # score of the checkpoint saved as 'best'
    elapsed_s: float = 0.0  # training wall time over all invocations
    # the best_saved_score before an end-of-run evaluation claimed 'best' (None: 'best' was claimed on
    # schedule); a resumed run takes that claim back (see Trainer.restore), so that stopping and resuming
    # picks the same 'best' as an uninterrupted run
    best_before_final: float | None = None

    def counters(self) -> dict[str, Any]:
        """The counter fields as a JSON-ready dict (a subclass's other fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LoopCounters)}

    @staticmethod
    def saved(meta: dict[str, Any]) -> dict[str, Any]:
        """The counters a checkpoint's metadata holds, by field (KeyError when one is missing; fields added
        since format 1 was first written take their :data:`ADDED_COUNTERS` value)."""
        state = {**ADDED_COUNTERS, **meta["state"]}
        return {f.name: state[f.name] for f in dataclasses.fields(LoopCounters)}


# counters added after checkpoints of format 1 were first written, with the value every older one had
ADDED_COUNTERS: dict[str, Any] = {"best_before_final": None}


@dataclass
class TrainingState:
    """Everything besides the model that :func:`read_training_state` gives back to resume a run."""

    counters: dict[str, Any]
    schedule_scale: float
    scaler: dict[str, Any]
    carry: Any
    rng: dict[str, torch.Tensor]  # this process's generator states (see :func:`rng_from_flat`)


@dataclass
class Checkpoint:
    """A loaded checkpoint: its JSON metadata and its tensors by prefix."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors whose key starts with ``prefix + '.'``, with the prefix removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


def checkpoint_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / f"{name}{SUFFIX}"


def temporary_path(path: Path) -> Path:
    """The temporary file :func:`atomic_write` writes ``path`` through (hidden, same folder)."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, fsync it, then rename it to ``path``,
    so that readers (and a process killed half-way) never see half a file.

    Raises:
        CheckpointError: writing failed (no space left, no permission...): the temporary file is removed
            and ``path`` is as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise CheckpointError(f"{path}: cannot write ({why}); the previous version is kept") from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) over every tensor in key order: its name, dtype, shape and raw bytes (CPU, contiguous)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write one checkpoint with :func:`atomic_write`, its tensors' checksum in the metadata."""
    # clone: safetensors refuses tensors that share memory (tied weights) and non-contiguous views
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"format_version": FORMAT_VERSION, "rnnkit_version": __version__, **meta,
            "tensor_sha256": tensor_digest(flat)}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata={"rnnkit": json.dumps(meta)}))


def link_checkpoint(src: Path, dst: Path) -> None:
    """Make ``dst`` the same checkpoint as ``src`` without writing it twice (hard link, else a copy),
    replacing ``dst`` atomically."""
    tmp = temporary_path(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(path: Path, *, task: str | None = None) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; errors name the file.

    Raises:
        CheckpointError: the file is missing, damaged (its tensors' checksum included), not an rnnkit
            checkpoint, or of another task.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(header["rnnkit"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:120]
        raise CheckpointError(f"{path}: damaged or not an rnnkit checkpoint ({msg})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format_version')!r}")
    if task is not None and meta.get("task") != task:
        raise CheckpointError(f"{path}: checkpoint is for task '{meta.get('task')}', not '{task}'")
    digest = meta.get("tensor_sha256")
    if digest is not None and digest != tensor_digest(tensors):
        raise CheckpointError(f"{path}: damaged checkpoint (its tensor data does not match the checksum "
                              f"saved with it)")
    return Checkpoint(path, meta, tensors)


def save_training_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             counters: LoopCounters, schedule_scale: float, scaler: dict[str, Any], carry: Any,
                             rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the checkpoint laid out in this module's docstring; ``meta`` adds task, name, world size..."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    carry_tensors, carry_structure = carry_to_flat(carry)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for prefix, group in (("optim", opt_tensors), ("carry", carry_tensors), ("rng", rng)):
        tensors.update({f"{prefix}.{k}": v for k, v in group.items()})
    save_checkpoint(path, tensors, {**meta, "state": counters.counters(), "schedule_scale": schedule_scale,
                                    "optimizer": opt_meta, "scaler": scaler, "carry": carry_structure})


def read_training_state(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, device: torch.device,
                        rank: int) -> TrainingState:
    """Load the optimiser's state from ``ckpt`` and return the rest of what resuming needs; the RNG
    states are process ``rank``'s. A checkpoint missing any of it is a CheckpointError naming the file."""
    try:
        optimizer_from_flat(optimizer, ckpt.group("optim"), ckpt.meta["optimizer"])
        return TrainingState(counters=LoopCounters.saved(ckpt.meta), schedule_scale=ckpt.meta["schedule_scale"],
                             scaler=ckpt.meta.get("scaler") or {},
                             carry=carry_from_flat(ckpt.group("carry"), ckpt.meta["carry"], device),
                             rng={k: v[rank].clone() for k, v in ckpt.group("rng").items()})
    except (KeyError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot resume from this checkpoint ({e})") from None


def load_model_state(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load ``model.*`` tensors into ``model``; a shape or name mismatch is a CheckpointError."""
    state = ckpt.group("model")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing parameter '{missing[0]}'" if missing else f"unexpected parameter '{unexpected[0]}'"
        raise CheckpointError(f"{ckpt.path}: checkpoint does not fit this model ({what})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{ckpt.path}: parameter '{k}' has shape {tuple(v.shape)} in the "
                                  f"checkpoint, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state)


# --- optimiser state <-> (tensors, json) -----------------------------------------------------------

def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (``<param>.<key>``) and JSON-ready values."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["plain"].items():
        state.setdefault(int(idx), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --- carried recurrent state (None, a tensor, or a tuple of tensors, nested) -------------------------

def carry_to_flat(carry: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Flatten a nested tuple of tensors into ``{i: tensor}`` and a JSON structure to rebuild it."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if x is None:
            return None
        if torch.is_tensor(x):
            key = str(len(tensors))
            tensors[key] = x
            return key
        if isinstance(x, (tuple, list)):
            return [walk(v) for v in x]
        raise TypeError(f"cannot checkpoint a carry of type {type(x).__name__}")

    return tensors, walk(carry)


def carry_from_flat(tensors: dict[str, torch.Tensor], structure: Any, device: torch.device) -> Any:
    if structure is None:
        return None
    if isinstance(structure, str):
        return tensors[structure].to(device)
    return tuple(carry_from_flat(tensors, s, device) for s in structure)


# --- random-generator states ------------------------------------------------------------------------

def rng_to_flat() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def rng_from_flat(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][: torch.cuda.device_count()])
