"""The training loop shared by every task.

The engine knows no task. A task object supplies batches, a loss and an evaluation (the :class:`Task`
protocol); the engine runs one explicit loop, read top to bottom:

    for each batch: forward + loss -> backward -> clip -> optimiser step -> (log) -> (evaluate, save)

and owns everything around it: optimiser and schedule, gradient clipping, early stopping, the time and
step budgets, Ctrl-C, non-finite losses, the progress bar and ``metrics.jsonl``, and checkpoints that
resume exactly (model, optimiser, schedule, early-stopping state, RNG state, data position and the
carried recurrent state).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from rnnkit.errors import RnnkitError
from rnnkit.train import checkpoint as ck
from rnnkit.train.config import TrainConfig
from rnnkit.train.schedule import Schedule


class TrainingStopped(RnnkitError):
    """Training could not go on (non-finite loss); the last good checkpoint is kept."""


@dataclass
class StepResult:
    """What a task's training loss returns for one batch.

    ``loss_sum`` is the summed loss over ``tokens`` real (non-padding) tokens; the engine optimises
    ``loss_sum / tokens``. ``carry`` is the recurrent state to carry into the next batch (or None),
    and ``lr_scale`` scales this step's learning rate (variable-length BPTT).
    """

    loss_sum: torch.Tensor
    tokens: int
    carry: Any = None
    lr_scale: float = 1.0


class Task(Protocol):
    """What the engine needs from a task."""

    name: str
    has_valid: bool

    def batches_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """The batches of ``epoch`` from index ``start`` on; a pure function of (seed, epoch)."""

    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> StepResult: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation split; must include ``loss`` (mean per token)."""


@dataclass
class TrainState:
    """Every mutable value of the loop that a resumed run needs (besides model/optimiser tensors)."""

    step: int = 0  # optimiser steps taken in total
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    best_loss: float = math.inf  # best scheduled valid loss (early stopping and plateau schedule)
    bad_evals: int = 0  # scheduled evaluations since the best one
    best_saved_loss: float = math.inf  # valid loss of the checkpoint saved as 'best'
    elapsed_s: float = 0.0  # training wall time over all invocations
    carry: Any = field(default=None, repr=False)


def detach_carry(carry: Any) -> Any:
    """Cut the graph between BPTT windows: the one place the carried state is detached."""
    if carry is None:
        return None
    if torch.is_tensor(carry):
        return carry.detach()
    return tuple(detach_carry(c) for c in carry)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RnnkitError(f"field 'device': unknown device {name!r} (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnkitError("field 'device': CUDA was asked for but torch sees no GPU")
    return device


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop after the current step; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """Runs :class:`Task` training for a model, writing into a run folder.

    Args:
        model: the model, already on ``device``.
        task: batches, loss and evaluation.
        cfg: training settings (any config dataclass with the :class:`TrainConfig` fields).
        run_dir: where ``metrics.jsonl`` and the ``best``/``last`` checkpoints go.
        meta: JSON-ready values stored in every checkpoint (task name, model config...).
        device: where the model lives.
        progress: show a progress bar on stderr.
    """

    def __init__(self, model: nn.Module, task: Task, cfg: TrainConfig, run_dir: Path, meta: dict[str, Any],
                 device: torch.device, progress: bool = True) -> None:
        self.model, self.task, self.cfg, self.run_dir = model, task, cfg, Path(run_dir)
        self.meta, self.device, self.progress = meta, device, progress
        self.optimizer = make_optimizer(model, cfg)
        planned = cfg.epochs * task.batches_per_epoch()
        if cfg.max_steps is not None:
            planned = min(planned, cfg.max_steps)
        self.schedule = Schedule(cfg.scheduler, cfg.lr, cfg.lr_decay, cfg.decay_start, cfg.warmup_steps,
                                 total_steps=max(1, planned))
        self.state = TrainState()
        self.steps_this_run = 0
        self.stop_reason = ""

    # --- checkpoints -------------------------------------------------------------------------------

    def save(self, name: str, eval_loss: float | None = None) -> None:
        """Write checkpoint ``name`` ('best' or 'last') atomically."""
        opt_tensors, opt_meta = ck.optimizer_to_flat(self.optimizer)
        carry_tensors, carry_structure = ck.carry_to_flat(self.state.carry)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
        tensors.update({f"carry.{k}": v for k, v in carry_tensors.items()})
        tensors.update({f"rng.{k}": v for k, v in ck.rng_to_flat().items()})
        s = self.state
        meta = {
            **self.meta,
            "name": name,
            "eval_loss": eval_loss,
            "state": {"step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch,
                      "best_loss": s.best_loss, "bad_evals": s.bad_evals,
                      "best_saved_loss": s.best_saved_loss, "elapsed_s": s.elapsed_s},
            "schedule_scale": self.schedule.scale,
            "optimizer": opt_meta,
            "carry": carry_structure,
        }
        ck.save_checkpoint(ck.checkpoint_path(self.run_dir, name), tensors, meta)

    def restore(self, ckpt: ck.Checkpoint) -> None:
        """Load everything the next step depends on from a checkpoint written by :meth:`save`."""
        ck.load_model_state(self.model, ckpt)
        try:
            ck.optimizer_from_flat(self.optimizer, ckpt.group("optim"), ckpt.meta["optimizer"])
            st = ckpt.meta["state"]
            self.state = TrainState(step=st["step"], epoch=st["epoch"], batch_in_epoch=st["batch_in_epoch"],
                                    best_loss=st["best_loss"], bad_evals=st["bad_evals"],
                                    best_saved_loss=st["best_saved_loss"], elapsed_s=st["elapsed_s"])
            self.state.carry = ck.carry_from_flat(ckpt.group("carry"), ckpt.meta["carry"], self.device)
            self.schedule.scale = ckpt.meta["schedule_scale"]
            ck.rng_from_flat(ckpt.group("rng"))
        except (KeyError, ValueError, RuntimeError) as e:
            raise ck.CheckpointError(f"{ckpt.path}: cannot resume from this checkpoint ({e})") from None

    # --- logging -----------------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # --- evaluation --------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; leaves training mode and the random generators exactly as they were."""
        rng = torch.get_rng_state()
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.task.evaluate(self.model)
        finally:
            self.model.train()
            torch.set_rng_state(rng)
        return metrics

    def scheduled_evaluation(self) -> bool:
        """Evaluate, update schedule, early stopping and the best checkpoint; True when patience ran out."""
        s = self.state
        metrics = self.evaluate()
        loss = metrics["loss"]
        improved = loss < s.best_loss
        if improved:
            s.best_loss, s.bad_evals = loss, 0
        else:
            s.bad_evals += 1
        self.schedule.on_evaluation(improved)
        self.log({"step": s.step, "epoch": s.epoch, "split": "valid", **metrics,
                  "lr": self.schedule.lr_at(s.step, s.epoch), "elapsed_s": round(s.elapsed_s, 3)})
        if loss < s.best_saved_loss:
            s.best_saved_loss = loss
            self.save("best", eval_loss=loss)
        self.save("last")
        self._last_eval_step = s.step
        return self.cfg.patience > 0 and s.bad_evals >= self.cfg.patience

    def final_evaluation(self) -> None:
        """An evaluation made only because training stopped: it may refresh 'best', nothing else."""
        s = self.state
        metrics = self.evaluate()
        self.log({"step": s.step, "epoch": s.epoch, "split": "valid", **metrics, "final": True,
                  "elapsed_s": round(s.elapsed_s, 3)})
        if metrics["loss"] < s.best_saved_loss:
            s.best_saved_loss = metrics["loss"]
            self.save("best", eval_loss=metrics["loss"])

    # --- the loop ----------------------------------------------------------------------------------

    def fit(self) -> TrainState:
        """Train until epochs, steps, time budget, early stopping or Ctrl-C end it; return the state."""
        cfg, s, model, task = self.cfg, self.state, self.model, self.task
        params = [p for p in model.parameters() if p.requires_grad]
        check_every = 1 if self.device.type == "cpu" else max(1, cfg.log_every)
        self._last_eval_step = -1
        n_batches = task.batches_per_epoch()
        total = cfg.epochs * n_batches if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * n_batches)
        bar = tqdm(total=total, initial=min(s.step, total), disable=not self.progress, file=sys.stderr,
                   unit="step", dynamic_ncols=True, leave=False)
        start = time.perf_counter()
        elapsed_before = s.elapsed_s
        window_start, window_tokens = start, 0
        loss_acc = torch.zeros((), device=self.device)
        tokens_acc = 0
        grad_norm = torch.zeros((), device=self.device)
        stop = ""
        model.train()
        with _StopFlag() as interrupt:
            while not stop and s.epoch < cfg.epochs:
                for batch in task.train_batches(s.epoch, s.batch_in_epoch):
                    if cfg.max_steps is not None and s.step >= cfg.max_steps:
                        stop = "max_steps"
                        break
                    if cfg.time_budget is not None and time.perf_counter() - start >= cfg.time_budget:
                        stop = "time_budget"
                        break
                    if interrupt.requested:
                        stop = "interrupted"
                        break
                    # forward + loss
                    out = task.train_loss(model, batch, detach_carry(s.carry))
                    loss = out.loss_sum / max(1, out.tokens)
                    # backward, clip, step
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.clip > 0:
                        grad_norm = nn.utils.clip_grad_norm_(params, cfg.clip)
                    elif (s.step + 1) % cfg.log_every == 0:
                        grad_norm = nn.utils.clip_grad_norm_(params, math.inf)
                    loss_acc += out.loss_sum.detach()
                    tokens_acc += out.tokens
                    if (s.step + 1) % check_every == 0 and not (
                            torch.isfinite(loss_acc) and torch.isfinite(grad_norm)):
                        bar.close()
                        self._diverged()
                    lr = self.schedule.lr_at(s.step, s.epoch) * out.lr_scale
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    self.optimizer.step()
                    s.carry = out.carry
                    s.step += 1
                    s.batch_in_epoch += 1
                    self.steps_this_run += 1
                    window_tokens += out.tokens
                    bar.update(1)
                    if s.step % cfg.log_every == 0:
                        now = time.perf_counter()
                        s.elapsed_s = elapsed_before + now - start
                        mean = loss_acc.item() / max(1, tokens_acc)
                        tps = window_tokens / max(1e-9, now - window_start)
                        self.log({"step": s.step, "epoch": s.epoch, "split": "train", "loss": round(mean, 6),
                                  "lr": lr, "grad_norm": round(float(grad_norm), 6),
                                  "tokens_per_s": round(tps, 1), "elapsed_s": round(s.elapsed_s, 3)})
                        bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
                        loss_acc.zero_()
                        tokens_acc, window_start, window_tokens = 0, now, 0
                    if cfg.eval_every and s.step % cfg.eval_every == 0:
                        s.elapsed_s = elapsed_before + time.perf_counter() - start
                        if task.has_valid and self.scheduled_evaluation():
                            stop = "early_stopping"
                            break
                else:  # the epoch ran to its end
                    s.epoch += 1
                    s.batch_in_epoch = 0
                    s.carry = None  # streams restart at the beginning of the data
                    s.elapsed_s = elapsed_before + time.perf_counter() - start
                    if not cfg.eval_every and task.has_valid and self.scheduled_evaluation():
                        stop = "early_stopping"
                    continue
                break
        bar.close()
        s.elapsed_s = elapsed_before + time.perf_counter() - start
        self.stop_reason = stop or "epochs"
        if task.has_valid and self._last_eval_step != s.step:
            self.final_evaluation()
        if not task.has_valid:  # without validation the latest model is the best one we know
            self.save("best")
        self.save("last")
        return s

    def _diverged(self) -> None:
        last = ck.checkpoint_path(self.run_dir, "last")
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"
        raise TrainingStopped(f"non-finite loss or gradient at step {self.state.step + 1}; training stopped "
                              f"and {kept} (try a lower --lr or --clip)")
