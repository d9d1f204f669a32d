"""The training loop shared by every task.

The engine knows no task. A task object supplies batches, a loss and an evaluation (the :class:`Task`
protocol); the engine runs one explicit loop, read top to bottom:

    for each batch: forward + loss -> backward -> clip -> optimiser step -> (log) -> (evaluate, save)

and owns everything around it: optimiser and schedule, gradient clipping, early stopping, the time and
step budgets, Ctrl-C and SIGTERM (stop after the current step, save, and let the driver say how to
resume), non-finite losses, the progress bar and ``metrics.jsonl``, and checkpoints that resume exactly
(model, optimiser, schedule, early-stopping state, RNG state, data position and the carried recurrent
state). ``last`` is saved at every evaluation, every ``save_every`` steps or seconds and when training
stops, so that a run killed outright loses at most that much work. What differs with several processes
(torchrun) sits behind one small interface, :class:`~rnnkit.train.distributed.SingleProcess` /
:class:`~rnnkit.train.distributed.Processes`: the model is wrapped in DistributedDataParallel, only rank 0
prints, logs and writes checkpoints, and every stopping decision is taken by all ranks together.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from rnnkit.errors import RnnkitError
from rnnkit.train import checkpoint as ck
from rnnkit.train.config import TrainConfig, parse_every
from rnnkit.train.distributed import DistInfo, processes
from rnnkit.train.schedule import Schedule


class TrainingStopped(RnnkitError):
    """Training could not go on (non-finite training or validation loss); the last good checkpoint is kept."""


# where an end-of-run evaluation that claimed 'best' keeps the 'best' it replaced, for a resumed run to
# restore (a hidden file of the run folder: RUN/.scheduled-best.safetensors)
SCHEDULED_BEST = ".scheduled-best"


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that failed (CPU or GPU), not another error."""
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        "out of memory" in str(e) or "can't allocate memory" in str(e)))


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
    """What the engine needs from a task. A task class subclasses it (``class LMTask(Task)``), so that the
    members with a default (:meth:`param_groups`) need not be written out."""

    name: str
    has_valid: bool
    # the validation metric that picks the 'best' checkpoint and drives early stopping and the plateau
    # schedule, and whether it is better low or high: e.g. ("loss", "min"), ("f1", "max")
    selects_on: tuple[str, str]
    # DistributedDataParallel's find_unused_parameters: True when a batch may leave parameters unused
    ddp_find_unused_parameters: bool

    def batches_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """The batches of ``epoch`` from index ``start`` on; a pure function of (seed, epoch)."""

    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> StepResult: ...

    def evaluate_stats(self, model: nn.Module) -> dict[str, float]:
        """Additive statistics (sums, counts) on this rank's share of the validation split."""

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        """Metrics from statistics summed over ranks; must include ``loss`` (mean per token)."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """The optimiser's parameter groups (torch's format; a group's ``lr_scale`` multiplies the scheduled
        learning rate, e.g. lower rates for pre-trained layers), or None (the default): one group of every
        trainable parameter."""
        return None


@dataclass
class TrainState(ck.LoopCounters):
    """Every mutable value of the loop that a resumed run needs (besides model/optimiser tensors): the
    checkpointed counters and the carried recurrent state."""

    carry: Any = field(default=None, repr=False)


def detach_carry(carry: Any) -> Any:
    """Cut the graph between BPTT windows: the one place the carried state is detached."""
    if carry is None:
        return None
    if torch.is_tensor(carry):
        return carry.detach()
    return tuple(detach_carry(c) for c in carry)


def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters (in ``groups``, torch's parameter groups, when
    given: a group's ``lr_scale`` multiplies the scheduled learning rate; see the :class:`Task` protocol).

    It uses torch's fused kernels (one pass over all parameters instead of a Python loop of small ops)
    when every parameter is on the CPU or every one on a GPU: for the benchmark tagger's parameters an
    Adam step took 13 ms with the default implementation and 5 ms fused (one CPU thread; its training
    step takes about 150 ms on two).
    """
    if groups is None:
        groups = [{"params": list(model.parameters())}]
    params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    flat = [p for g in params for p in g["params"]]
    one_device = {p.device.type for p in flat} in ({"cpu"}, {"cuda"})
    fused = True if one_device and all(p.is_floating_point() for p in flat) else None  # None: torch's choice
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)


class _StopFlag:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a request to stop after the current step (the loop
    then saves); a second one interrupts at once. ``signum`` is the first signal received (None: none)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _StopFlag:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

class _StepModule(nn.Module):
    """The task's training loss as a module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch: Any, carry: Any) -> tuple[torch.Tensor, Any, int, float]:
        out = self.task.train_loss(self.model, batch, carry)
        return out.loss_sum, out.carry, out.tokens, out.lr_scale


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
        dist_info: this process's rank under torchrun (the task shards its data with the same info).
        publish: called (main process) right after the first checkpoint is written; it moves the run
            into its final folder and returns that folder, which becomes ``run_dir`` (the driver writes a
            run that replaces another into a temporary folder until then).

    A carried state (LM hidden state) is a tensor or nested tuple of tensors in torch's
    ``(layers * directions, batch, hidden)`` layout: under torchrun, checkpoints gather it along dim 1.
    """

    def __init__(self, model: nn.Module, task: Task, cfg: TrainConfig, run_dir: Path, meta: dict[str, Any],
                 device: torch.device, progress: bool = True, dist_info: DistInfo | None = None,
                 publish: Callable[[], Path] | None = None) -> None:
        self.model, self.task, self.cfg, self.run_dir = model, task, cfg, Path(run_dir)
        self.publish = publish
        self.meta, self.device = meta, device
        self.dist = dist_info or DistInfo()
        self.procs = processes(self.dist, device)
        self.progress = progress and self.dist.is_main
        self.step_module = self.procs.wrap(_StepModule(model, task),
                                           find_unused_parameters=task.ddp_find_unused_parameters)
        groups = task.param_groups(model)
        self.optimizer = make_optimizer(model, cfg, groups)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        planned = cfg.epochs * task.batches_per_epoch()
        if cfg.max_steps is not None:
            planned = min(planned, cfg.max_steps)
        self.schedule = Schedule(cfg.scheduler, cfg.lr, cfg.lr_decay, cfg.decay_start, cfg.warmup_steps,
                                 total_steps=max(1, planned))
        self.save_kind, self.save_every = parse_every(cfg.save_every)
        self.state = TrainState()
        self.steps_this_run = 0
        self.stop_reason = ""
        self.stop_signal: int | None = None  # the signal that interrupted training (stop_reason 'interrupted')
        self._last_save = (-1, time.perf_counter())  # (step, time) of the latest 'last' checkpoint

    # --- checkpoints -------------------------------------------------------------------------------

    def save(self, name: str, eval_loss: float | None = None, also_as: str | None = None) -> None:
        """Write checkpoint ``name`` ('best' or 'last') atomically. Every process calls it; the main one writes.

        ``also_as`` names a second checkpoint that becomes the same file (a hard link, not a second write).
        """
        carry = self.state.carry
        if carry is not None:
            carry = _map_tensors(carry, lambda t: self.procs.gather(t, 1))  # (L*D, B_global, H)
        rng = {k: self.procs.gather(v[None], 0) for k, v in ck.rng_to_flat().items()}  # (world_size, n)
        if name == "last":
            self._last_save = (self.state.step, time.perf_counter())
        if not self.procs.is_main:
            return
        path = ck.checkpoint_path(self.run_dir, name)
        ck.save_training_checkpoint(
            path, model=self.model, optimizer=self.optimizer, counters=self.state,
            schedule_scale=self.schedule.scale, scaler=self.scaler.state_dict(), carry=carry, rng=rng,
            meta={**self.meta, "name": name, "eval_loss": eval_loss, "world_size": self.dist.world_size})
        if also_as is not None:
            ck.link_checkpoint(path, ck.checkpoint_path(self.run_dir, also_as))
        if self.publish is not None:
            self.run_dir, self.publish = self.publish(), None

    def restore(self, ckpt: ck.Checkpoint) -> None:
        """Load everything the next step depends on from a checkpoint written by :meth:`save`."""
        ck.load_model_state(self.model, ckpt)
        saved_world = ckpt.meta.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise ck.CheckpointError(f"{ckpt.path}: written by {saved_world} process(es); resume it with the "
                                     f"same number (now {self.dist.world_size})")
        saved = ck.read_training_state(ckpt, self.optimizer, self.device, self.dist.rank)
        carry = saved.carry
        if carry is not None:
            carry = _map_tensors(carry, lambda t: self.procs.own_rows(t, 1))
        self.state = TrainState(**saved.counters, carry=carry)
        self.schedule.scale = saved.schedule_scale
        if saved.scaler:
            self.scaler.load_state_dict(saved.scaler)
        ck.rng_from_flat(saved.rng)
        self._take_back_final_best()

    def _take_back_final_best(self) -> None:
        """Undo a 'best' claimed by an evaluation made only because the run stopped: an uninterrupted run
        made no evaluation at that step, so the resumed run goes on from the 'best' the schedule chose."""
        s = self.state
        if s.best_before_final is None:
            return
        if self.procs.is_main and math.isfinite(s.best_before_final):
            kept = ck.checkpoint_path(self.run_dir, SCHEDULED_BEST)
            if kept.is_file():
                os.replace(kept, ck.checkpoint_path(self.run_dir, "best"))
        # with no scheduled 'best' before it, the claimed file stays until the next evaluation replaces it
        s.best_saved_score, s.best_before_final = s.best_before_final, None

    # --- logging -----------------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if not self.procs.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # --- evaluation --------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Validation metrics, reduced over ranks; leaves training mode and the RNG exactly as they were."""
        rng = torch.get_rng_state()
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                stats = self.task.evaluate_stats(self.model)
        finally:
            self.model.train()
            torch.set_rng_state(rng)
        metrics = self.task.summarize(self.procs.sum_stats(stats))
        name, _ = self.task.selects_on
        bad = next((k for k in ("loss", name) if not math.isfinite(metrics[k])), None)
        if bad is not None:  # the same numbers on every rank: all of them stop here
            raise TrainingStopped(f"non-finite validation {bad} ({metrics[bad]}) at step {self.state.step}; "
                                  f"training stopped and {self._kept()}, not this model")
        return metrics

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def score(self, metrics: dict[str, float]) -> float:
        """The task's selection metric (``Task.selects_on``) as a lower-is-better number."""
        name, mode = self.task.selects_on
        return metrics[name] if mode == "min" else -metrics[name]

    def scheduled_evaluation(self) -> bool:
        """Evaluate, update schedule, early stopping and the best checkpoint; True when patience ran out."""
        s = self.state
        metrics = self.evaluate()
        score = self.score(metrics)
        improved = score < s.best_score
        if improved:
            s.best_score, s.bad_evals = score, 0
        else:
            s.bad_evals += 1
        self.schedule.on_evaluation(improved)
        self.log({"step": s.step, "epoch": s.epoch, "split": "valid", **metrics,
                  "lr": self.schedule.lr_at(s.step, s.epoch), "elapsed_s": round(s.elapsed_s, 3)})
        if score < s.best_saved_score:
            s.best_saved_score = score
            self.save("best", eval_loss=metrics["loss"])
        self.save("last")
        self._last_eval_step = s.step
        return self.cfg.patience > 0 and s.bad_evals >= self.cfg.patience

    def final_evaluation(self) -> None:
        """An evaluation made only because training stopped: it may refresh 'best', nothing else.

        Its claim on 'best' is provisional: the 'best' it replaces is kept (``SCHEDULED_BEST``) and
        :meth:`restore` takes the claim back, so that a run stopped and resumed ends with the 'best' of
        the same run made without stopping.
        """
        s = self.state
        metrics = self.evaluate()
        self.log({"step": s.step, "epoch": s.epoch, "split": "valid", **metrics, "final": True,
                  "elapsed_s": round(s.elapsed_s, 3)})
        score = self.score(metrics)
        if score < s.best_saved_score:
            if self.procs.is_main and math.isfinite(s.best_saved_score):  # a 'best' chosen on schedule
                ck.link_checkpoint(ck.checkpoint_path(self.run_dir, "best"),
                                   ck.checkpoint_path(self.run_dir, SCHEDULED_BEST))
            s.best_before_final, s.best_saved_score = s.best_saved_score, score
            self.save("best", eval_loss=metrics["loss"])

    # --- the loop ----------------------------------------------------------------------------------

    def _should_stop(self, start: float, interrupt: _StopFlag) -> tuple[str, bool]:
        """Why to stop before the next step ('' to go on), and whether ``save_every`` seconds have passed
        since the latest 'last' checkpoint. Under torchrun all ranks take these decisions together."""
        cfg, s = self.cfg, self.state
        if cfg.max_steps is not None and s.step >= cfg.max_steps:
            return "max_steps", False  # the same on every rank
        now = time.perf_counter()
        out_of_time, interrupted, save_due = self.procs.any([
            cfg.time_budget is not None and now - start >= cfg.time_budget, interrupt.requested,
            self.save_kind == "seconds" and now - self._last_save[1] >= self.save_every])
        if interrupted:
            self.stop_signal = interrupt.signum or signal.SIGTERM  # a rank told by the others: torchrun's
        stop = "time_budget" if out_of_time else "interrupted" if interrupted else ""
        return stop, save_due and self._last_save[0] != s.step

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
        window_start = start
        paused = 0.0  # seconds of evaluating and saving inside the current log window: not training

        def off_the_clock(work: Callable[[], Any]) -> Any:
            """Run ``work`` (an evaluation or a save) outside the tokens/s of the log window."""
            nonlocal paused
            began = time.perf_counter()
            try:
                return work()
            finally:
                paused += time.perf_counter() - began

        acc = torch.zeros(2, dtype=torch.float64, device=self.device)  # (summed loss, tokens) since the last log
        grad_norm = torch.zeros((), device=self.device)
        stop = ""
        self.step_module.train()
        with _StopFlag() as interrupt, self._out_of_memory_stops():
            while not stop and s.epoch < cfg.epochs:
                for batch in task.train_batches(s.epoch, s.batch_in_epoch):
                    stop, save_due = self._should_stop(start, interrupt)
                    if stop:
                        break
                    if save_due:  # save_every seconds passed
                        s.elapsed_s = elapsed_before + time.perf_counter() - start
                        off_the_clock(lambda: self.save("last"))
                    # forward + loss: the mean over real tokens of all ranks (DDP averages gradients)
                    with self._autocast():
                        loss_sum, carry, tokens, lr_scale = self.step_module(batch, detach_carry(s.carry))
                    loss = self.procs.mean_loss(loss_sum, tokens)
                    # backward, clip, step
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.optimizer)
                    if cfg.clip > 0:
                        grad_norm = nn.utils.clip_grad_norm_(params, cfg.clip)
                    elif (s.step + 1) % cfg.log_every == 0:
                        grad_norm = nn.utils.clip_grad_norm_(params, math.inf)
                    acc[0] += loss_sum.detach().double()
                    acc[1] += tokens
                    if (s.step + 1) % check_every == 0:
                        bad = ~torch.isfinite(acc[0])
                        if not self.scaler.is_enabled():  # fp16: the scaler skips steps with inf gradients
                            bad |= ~torch.isfinite(grad_norm)
                        if self.procs.any([bool(bad)])[0]:
                            bar.close()
                            self._diverged()
                    lr = self.schedule.lr_at(s.step, s.epoch) * lr_scale
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    s.carry = carry
                    s.step += 1
                    s.batch_in_epoch += 1
                    self.steps_this_run += 1
                    bar.update(1)
                    if s.step % cfg.log_every == 0:
                        now = time.perf_counter()
                        s.elapsed_s = elapsed_before + now - start
                        summed = self.procs.all_sum(acc.clone()).tolist()
                        mean = summed[0] / max(1.0, summed[1])
                        tps = summed[1] / max(1e-9, now - window_start - paused)
                        self.log({"step": s.step, "epoch": s.epoch, "split": "train", "loss": round(mean, 6),
                                  "lr": lr, "grad_norm": round(float(grad_norm), 6),
                                  "tokens_per_s": round(tps, 1), "elapsed_s": round(s.elapsed_s, 3)})
                        bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
                        acc.zero_()
                        window_start, paused = now, 0.0
                    if cfg.eval_every and s.step % cfg.eval_every == 0:
                        s.elapsed_s = elapsed_before + time.perf_counter() - start
                        if task.has_valid and off_the_clock(self.scheduled_evaluation):
                            stop = "early_stopping"
                            break
                    if self.save_kind == "steps" and self.save_every and s.step % self.save_every == 0 \
                            and self._last_save[0] != s.step:
                        s.elapsed_s = elapsed_before + time.perf_counter() - start
                        off_the_clock(lambda: self.save("last"))
                else:  # the epoch ran to its end
                    s.epoch += 1
                    s.batch_in_epoch = 0
                    s.carry = None  # streams restart at the beginning of the data
                    s.elapsed_s = elapsed_before + time.perf_counter() - start
                    if not cfg.eval_every and task.has_valid and off_the_clock(self.scheduled_evaluation):
                        stop = "early_stopping"
                    continue
                break
        bar.close()
        s.elapsed_s = elapsed_before + time.perf_counter() - start
        self.stop_reason = stop or "epochs"
        if task.has_valid and self._last_eval_step != s.step:
            self.final_evaluation()
        # without validation the latest model is the best one we know
        self.save("last", also_as=None if task.has_valid else "best")
        self.procs.barrier()  # no rank reads the run folder before rank 0 has written it
        return s

    @contextmanager
    def _out_of_memory_stops(self) -> Iterator[None]:
        """Running out of memory during training is a TrainingStopped, the last good checkpoint kept."""
        try:
            yield
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            raise TrainingStopped(f"out of memory at step {self.state.step + 1} on {self.device.type}; training "
                                  f"stopped and {self._kept()} (lower --batch-size or the model's size)") from None

    def _kept(self) -> str:
        last = ck.checkpoint_path(self.run_dir, "last")
        return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"

    def _diverged(self) -> None:
        raise TrainingStopped(f"non-finite loss or gradient at step {self.state.step + 1}; training stopped "
                              f"and {self._kept()} (try a lower --lr or --clip)")


def _map_tensors(x: Any, fn: Any) -> Any:
    if torch.is_tensor(x):
        return fn(x)
    return tuple(_map_tensors(v, fn) for v in x)
