"""The training engine on its own, with a tiny fake task: stopping rules, best-checkpoint selection,
non-finite losses and exact resume."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from rnnkit.train import checkpoint as ck
from rnnkit.train.config import TrainConfig
from rnnkit.train.engine import StepResult, Task, Trainer, TrainingStopped


@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    pass


class ToyTask(Task):
    """8 batches of 4 random regression examples per epoch (a function of the epoch); the loss uses
    dropout, so a resume must restore the RNG. ``scores`` scripts the validation metric 'acc'."""

    name = "toy"
    selects_on = ("acc", "max")
    ddp_find_unused_parameters = False

    def __init__(self, scores: list[float] | None = None, nan_at: int | None = None, sleep: float = 0.0) -> None:
        self.scores, self.nan_at, self.sleep = scores, nan_at, sleep
        self.has_valid = scores is not None
        self.evals = 0
        self.calls = 0

    def batches_per_epoch(self) -> int:
        return 8

    def train_batches(self, epoch: int, start: int):
        g = torch.Generator().manual_seed(epoch)
        data = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(8)]
        yield from data[start:]

    def train_loss(self, model: nn.Module, batch, carry) -> StepResult:
        self.calls += 1
        time.sleep(self.sleep)
        x, y = batch
        loss = (nn.functional.dropout(model(x), 0.3, training=model.training) - y).pow(2).sum()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return StepResult(loss, x.size(0))

    def evaluate_stats(self, model: nn.Module) -> dict[str, float]:
        score = self.scores[min(self.evals, len(self.scores) - 1)]
        self.evals += 1
        return {"loss_sum": 1.0, "n": 1.0, "acc": score}

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        return {"loss": stats["loss_sum"] / stats["n"], "acc": stats["acc"]}


def trainer(tmp_path, task: ToyTask, **fields) -> Trainer:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    cfg = ToyConfig(**{"log_every": 1, "epochs": 5, **fields})
    return Trainer(model, task, cfg, tmp_path, {"task": "toy"}, torch.device("cpu"), progress=False)


def test_max_steps_stops_exactly(tmp_path):
    t = trainer(tmp_path, ToyTask(), max_steps=5)
    state = t.fit()
    assert (state.step, t.stop_reason) == (5, "max_steps")
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    # without validation 'best' is the last model, written once and linked
    assert ck.load_checkpoint(tmp_path / "best.safetensors").meta["state"]["step"] == 5


def test_time_budget_stops_training(tmp_path):
    t = trainer(tmp_path, ToyTask(sleep=0.05), time_budget=0.2)
    state = t.fit()
    assert t.stop_reason == "time_budget"
    assert 1 <= state.step < 40


def test_early_stopping_and_best_checkpoint_follow_selects_on_max(tmp_path):
    # evaluations every 2 steps: acc 0.5, 0.9 (best), 0.7, 0.8 -> patience 2 runs out at the 4th
    t = trainer(tmp_path, ToyTask(scores=[0.5, 0.9, 0.7, 0.8]), eval_every=2, patience=2)
    state = t.fit()
    assert (t.stop_reason, state.step) == ("early_stopping", 8)
    best = ck.load_checkpoint(tmp_path / "best.safetensors")
    assert best.meta["state"]["step"] == 4
    assert best.meta["state"]["best_saved_score"] == -0.9  # higher is better: stored negated
    assert ck.load_checkpoint(tmp_path / "last.safetensors").meta["state"]["step"] == 8


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    t = trainer(tmp_path, ToyTask(scores=[0.5], nan_at=6), eval_every=2, patience=0)
    last = tmp_path / "last.safetensors"
    with pytest.raises(TrainingStopped, match=rf"non-finite loss or gradient at step 6; .* {last} "):
        t.fit()
    assert ck.load_checkpoint(last).meta["state"]["step"] == 4


def test_resume_equals_training_straight_through(tmp_path):
    straight = trainer(tmp_path / "a", ToyTask(scores=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), eval_every=3,
                       max_steps=12)
    straight.fit()
    first = trainer(tmp_path / "b", ToyTask(scores=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), eval_every=3, max_steps=6)
    first.fit()
    task = ToyTask(scores=[0.3, 0.4, 0.5, 0.6])  # evaluations 3 and 4 come next
    second = trainer(tmp_path / "b", task, eval_every=3, max_steps=12)
    torch.manual_seed(123)  # whatever the process did before: the checkpoint's RNG state wins
    second.restore(ck.load_checkpoint(tmp_path / "b" / "last.safetensors"))
    second.fit()
    assert second.state.step == straight.state.step == 12
    assert torch.equal(second.model.weight, straight.model.weight)
    assert torch.equal(second.model.bias, straight.model.bias)
    a = ck.load_checkpoint(tmp_path / "a" / "last.safetensors")
    b = ck.load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert a.meta["state"] == {**b.meta["state"], "elapsed_s": a.meta["state"]["elapsed_s"]}
    for k, v in a.group("optim").items():
        assert torch.equal(v, b.group("optim")[k])


def test_logged_tokens_per_s_leaves_out_evaluation_and_saving(tmp_path, monkeypatch):
    """A fake clock: each training step takes 1 s (4 examples), each evaluation 100 s. Every logged window
    reads 4 tokens/s, the windows right after an evaluation too."""
    from rnnkit.train import engine

    class Clock:
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            return cls.now

    class TimedToy(ToyTask):
        def train_loss(self, model, batch, carry):
            Clock.now += 1.0
            return super().train_loss(model, batch, carry)

        def evaluate_stats(self, model):
            Clock.now += 100.0
            return super().evaluate_stats(model)

    monkeypatch.setattr(engine, "time", Clock)
    t = trainer(tmp_path, TimedToy(scores=[0.1, 0.2, 0.3]), epochs=3, log_every=2, time_budget=None)
    t.fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "valid" for r in lines) == 3
    assert [r["tokens_per_s"] for r in lines if r["split"] == "train"] == [4.0] * 12  # 2 steps, 8 examples, 2 s
