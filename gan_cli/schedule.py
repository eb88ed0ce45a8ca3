"""Learning-rate decay over a run: both networks' rates held, then ramped linearly to zero by its end.

The end of a run is the first of its limits reached (trainer.steps, trainer.epochs, trainer.max_minutes),
so the progress is the largest fraction done of any of them. Step limits give the same rates on every
machine; a wall-clock limit counts this invocation's time, as trainer.max_minutes does.
"""

from __future__ import annotations

import torch

from gan_cli.config import LrDecay


class LinearDecay:
    """Rates at their configured values until `start` of the run, then linearly down to 0 at its end."""

    def __init__(
        self,
        rates: list[tuple[torch.optim.Optimizer, float]],
        start: float,
        total_steps: int | None,
        max_seconds: float | None,
    ) -> None:
        self.rates = rates  # each optimizer with its configured rate (a checkpoint holds decayed ones)
        self.start = start
        self.total_steps = total_steps
        self.max_seconds = max_seconds

    def progress(self, step: int, elapsed_s: float) -> float:
        done = 0.0
        if self.total_steps:
            done = step / self.total_steps
        if self.max_seconds:
            done = max(done, elapsed_s / self.max_seconds)
        return min(done, 1.0)

    def factor(self, step: int, elapsed_s: float) -> float:
        done = self.progress(step, elapsed_s)
        if done <= self.start:
            return 1.0
        return max(0.0, 1.0 - (done - self.start) / (1.0 - self.start))

    def apply(self, step: int, elapsed_s: float) -> None:
        """Set every optimizer's rates for the step about to run (`step` steps done so far)."""
        f = self.factor(step, elapsed_s)
        for opt, lr in self.rates:
            for group in opt.param_groups:
                group["lr"] = lr * f


def build_schedule(
    kind: LrDecay,
    start: float,
    rates: list[tuple[torch.optim.Optimizer, float]],
    total_steps: int | None,
    max_minutes: float | None,
) -> LinearDecay | None:
    """The decay `optimizer.lr_decay` names, or None for constant rates."""
    if kind is LrDecay.none:
        return None
    return LinearDecay(rates, start, total_steps, 60.0 * max_minutes if max_minutes is not None else None)
