"""Run folders: creating, refusing to clobber, resuming and loading them. Shared by every task.

A run folder holds::

    config.json          the resolved config (every field)
    tokenizer.json       vocabularies / tokenizers (task-specific content)
    metrics.jsonl        one JSON object per logged step and per evaluation
    best.safetensors     the checkpoint with the lowest validation loss (or the latest, with no --valid)
    last.safetensors     the latest checkpoint, for --resume
    curves.png           written by ``rnnkit plot``
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.train import checkpoint as ck
from rnnkit.train import distributed as dist
from rnnkit.train.config import build_config, config_to_dict
from rnnkit.train.distributed import DistInfo
from rnnkit.train.engine import Trainer

C = TypeVar("C")
T = TypeVar("T")

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
RUN_FILES = (CONFIG, TOKENIZER, METRICS, "best.safetensors", "last.safetensors", "curves.png")

# the only fields a resumed run may change: when and where it stops and what it runs on
RESUME_FIELDS = ("max_steps", "time_budget", "epochs", "device", "threads")


def is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that already holds a run, unless ``overwrite``; touches nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"field 'out': {out} exists and is not a folder")
    if out.is_dir() and is_run(out) and not overwrite:
        raise ConfigError(f"field 'out': {out} already holds a run; pass --overwrite to replace it or "
                          f"--resume {out} to continue it")


def create_run_dir(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run (after all inputs were validated): removes only run files."""
    check_out_dir(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def write_json(path: Path, obj: Any) -> None:
    ck.atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what}); is {path.parent} an rnnkit run folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged {what} ({e})") from None


def load_run_config(run_dir: Path, cls: type[C], task: str) -> C:
    """The saved config of a run; a run of another task is a CheckpointError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    data = read_json(run_dir / CONFIG, "run config")
    if not isinstance(data, dict) or data.get("task") != task:
        other = data.get("task") if isinstance(data, dict) else None
        raise CheckpointError(f"{run_dir / CONFIG}: this is a run of task '{other}', not '{task}'")
    try:
        return build_config(cls, {k: v for k, v in data.items() if k != "task"}, source=str(run_dir / CONFIG))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def save_run_config(run_dir: Path, cfg: Any, task: str) -> None:
    write_json(Path(run_dir) / CONFIG, {"task": task, **config_to_dict(cfg)})


def resume_config(saved: C, overrides: dict[str, Any]) -> C:
    """The saved config with only the stopping, device and thread fields replaced."""
    bad = sorted(set(overrides) - set(RESUME_FIELDS))
    if bad:
        raise ConfigError(f"field '{bad[0]}': --resume takes only {', '.join(RESUME_FIELDS)}; everything "
                          f"else comes from the run's saved config")
    return dataclasses.replace(saved, **overrides)


def load_checkpoint(run_dir: Path, name: str, task: str) -> ck.Checkpoint:
    """``best`` or ``last`` of a run, with a clear error when the run has none."""
    path = ck.checkpoint_path(run_dir, name)
    if not path.is_file():
        raise CheckpointError(f"{Path(run_dir)}: no '{name}' checkpoint ({path.name} is missing)")
    return ck.load_checkpoint(path, task=task)


def setup_torch(seed: int, threads: int | None) -> None:
    """Seed torch's generators (before any model is built), set the CPU thread count and flush denormal
    floats to zero on CPU (for the rest of the process)."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"field 'threads': must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # Denormal floats (|x| < 1.2e-38 in float32) cost x86 CPUs a microcode assist per operation, so a run
    # that starts making them can slow down many-fold (issue 17: the EWT XPOS tagger fell from ~7,000 to
    # 200-400 tokens/s after 40-60 steps, and flushing them removed the slow stretches). Treating them as
    # zero changes results only below 1e-38 (tests/test_denormals.py); benchmarks/phases.py watches for
    # slow phases. A no-op where the CPU lacks the mode (torch then returns False).
    torch.set_flush_denormal(True)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (a run killed after its last checkpoint), before resuming."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    ck.atomic_write_text(path, "".join(x + "\n" for x in keep))


def make_config(cls: type[C], defaults: dict[str, Any], config: C | None = None, **overrides: Any) -> C:
    """A task config from keyword arguments (checked like flags), on top of ``config`` or the task defaults."""
    if config is not None and not overrides:
        return config
    base = dataclasses.asdict(config) if config is not None else dict(defaults)
    return build_config(cls, {**base, **overrides}, source="keyword arguments")


def start(cfg: Any, *, overwrite: bool | None) -> tuple[DistInfo, torch.device]:
    """Checks before a run (output folder unless resuming, device), joins torchrun's process group if
    there is one, then seeds and sets threads; writes nothing."""
    if overwrite is not None:
        check_out_dir(Path(cfg.out), overwrite=overwrite)
    info, device = dist.setup(cfg.device)
    if getattr(cfg, "precision", "fp32") != "fp32" and device.type != "cuda":
        raise ConfigError(f"field 'precision': {cfg.precision} autocast needs a CUDA device (this run is on "
                          f"{device.type}); use fp32")
    setup_torch(cfg.seed, cfg.threads)
    return info, device


def create_run(out: Path, cfg: Any, task: str, tokenizer: dict[str, Any], *, overwrite: bool,
               info: DistInfo) -> None:
    """Write a new run's folder, config and vocabularies (rank 0 only; the others wait for it)."""
    if info.is_main:
        create_run_dir(out, overwrite=overwrite)
        save_run_config(out, cfg, task)
        write_json(out / TOKENIZER, tokenizer)
    dist.barrier()


def after_model_init(cfg: Any, info: DistInfo) -> None:
    """Give each rank its own dropout randomness once the (identical) model is built."""
    if info.enabled:
        torch.manual_seed(cfg.seed + 1000 * info.rank)


def resume_settings(run_dir: Path, cls: type[C], task: str, overrides: dict[str, Any]) -> C:
    """The saved config of ``run_dir`` with the allowed resume overrides applied (and checked)."""
    saved = load_run_config(run_dir, cls, task)
    checked = build_config(cls, {**dataclasses.asdict(saved), **overrides}, source="flags")
    return resume_config(saved, {k: getattr(checked, k) for k in overrides})


def report_stop(trainer: Trainer, out: Path, task: str) -> None:
    """One line on stderr saying why and where training stopped (and how to resume after Ctrl-C)."""
    if not trainer.dist.is_main:
        return
    s = trainer.state
    why = {"max_steps": "reached --max-steps", "time_budget": "time budget used up", "epochs": "all epochs done",
           "early_stopping": "early stopping (validation loss stopped improving)",
           "interrupted": "interrupted"}[trainer.stop_reason]
    print(f"rnnkit: stopped after step {s.step} ({why}); {trainer.steps_this_run} steps in this run, "
          f"{s.elapsed_s:.0f}s of training in all; run folder {out}", file=sys.stderr)
    if trainer.stop_reason == "interrupted":
        print(f"rnnkit: resume with: rnnkit {task} train --resume {out}", file=sys.stderr)


def read_vocabularies(run_dir: Path, what: str, from_dict: Callable[[Any], T]) -> T:
    """A run's ``tokenizer.json`` rebuilt with ``from_dict``; damage is a CheckpointError naming the file."""
    path = Path(run_dir) / TOKENIZER
    data = read_json(path, what)
    try:
        return from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged {what} ({e})") from None


def check_model_config(ckpt: ck.Checkpoint, model_config: Any) -> None:
    """The checkpoint's model must be the one the run's config describes (``model_config.to_dict()``)."""
    expected = model_config.to_dict()
    saved = ckpt.meta.get("model_config")
    if saved == expected:
        return
    diff = next((k for k, v in expected.items() if not isinstance(saved, dict) or saved.get(k) != v), "model_config")
    got = saved.get(diff) if isinstance(saved, dict) else None
    raise CheckpointError(f"{ckpt.path}: checkpoint is for another model ({diff} = {got!r}, the run's config "
                          f"says {expected.get(diff)!r})")


def restore_for_resume(trainer: Trainer, ckpt: ck.Checkpoint, out: Path, cfg: Any, task: str) -> None:
    """Load the loop's state from ``ckpt`` and drop metric lines logged after it (rank 0 writes)."""
    trainer.restore(ckpt)
    if trainer.dist.is_main:
        truncate_metrics(out, trainer.state.step)
        save_run_config(out, cfg, task)
