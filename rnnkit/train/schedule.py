"""Learning-rate schedules as plain functions of the loop counters, so their state is a few numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Schedule:
    """The learning rate for a step: ``lr * factor(step, epoch) * scale`` where ``scale`` is plateau state.

    kinds:
        none: constant.
        step: Zaremba et al. 2014: multiply by ``decay`` after every epoch from ``decay_start`` on
            (epoch is 0-based here: epochs ``0 .. decay_start-1`` run at ``lr``).
        cosine: cosine from ``lr`` to 0 between ``warmup_steps`` and ``total_steps``.
        plateau: multiply ``scale`` by ``decay`` at each evaluation whose loss did not improve.

    Every kind ramps up linearly over the first ``warmup_steps`` steps.
    """

    kind: str
    lr: float
    decay: float = 0.5
    decay_start: int = 4
    warmup_steps: int = 0
    total_steps: int = 1
    scale: float = 1.0  # changed by plateau decays; saved in checkpoints

    def lr_at(self, step: int, epoch: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based) in epoch ``epoch`` (0-based)."""
        lr = self.lr * self.scale
        if self.kind == "step":
            lr *= self.decay ** max(0, epoch + 1 - self.decay_start)
        elif self.kind == "cosine" and step >= self.warmup_steps:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:  # linear warm-up, whatever the schedule
            lr *= (step + 1) / self.warmup_steps
        return lr

    def on_evaluation(self, improved: bool) -> None:
        """Plateau schedule: decay when a scheduled evaluation did not improve the best loss."""
        if self.kind == "plateau" and not improved:
            self.scale *= self.decay
