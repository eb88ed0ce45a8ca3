"""Non-finite losses and weights: stop the run (`trainer.on_nan=stop`) or drop the step (`skip`).

In stop mode the check stays on the device: the first bad step and which losses went bad are kept in
two small tensors and read only when the loop reads its logged scalars anyway (every
`logger.log_every` steps and before every checkpoint), so a bad step never reaches a checkpoint and
costs no extra host sync. Skip mode must decide after every step whether to undo it, so it reads one
flag per step and keeps a copy of the weights and optimizer state to put back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from gan_cli.errors import GanCliError

log = logging.getLogger("gan_cli")

MAX_SKIPS_IN_A_ROW = 100  # skip mode gives up after this many bad steps in a row


class Diverged(GanCliError):
    """A loss or a weight stopped being finite."""


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One device bool: every element of every tensor is finite (a norm is inf or nan otherwise)."""
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    norms = torch._foreach_norm([t.detach().float() for t in tensors])
    return torch.isfinite(torch.stack(norms)).all()


class StepUndo:
    """A copy of every tensor a training step changes, to put back when the step went bad."""

    def __init__(
        self,
        modules: list[nn.Module],
        optimizers: list[torch.optim.Optimizer],
        scaler: object,
        extra: Sequence[torch.Tensor] = (),
    ):
        self.modules, self.optimizers, self.scaler = modules, optimizers, scaler
        self.extra = list(extra)  # other tensors a step changes (the EMA's update count)
        self._live: list[torch.Tensor] = []
        self._copies: list[torch.Tensor] = []
        self._had_state: list[set[int]] = []
        self._scaler_state: dict[str, object] | None = None

    def _tensors(self) -> list[torch.Tensor]:
        live = [t for m in self.modules for t in (*m.parameters(), *m.buffers())] + self.extra
        for opt in self.optimizers:
            for state in opt.state.values():
                live.extend(v for v in state.values() if isinstance(v, torch.Tensor))
        return live

    def save(self) -> None:
        live = self._tensors()
        same = len(live) == len(self._live) and all(a is b for a, b in zip(live, self._live, strict=True))
        if same:
            with torch.no_grad():
                torch._foreach_copy_(self._copies, live)
        else:
            self._live = live
            self._copies = [t.detach().clone() for t in live]
        self._had_state = [{id(p) for p in opt.state} for opt in self.optimizers]
        enabled = getattr(self.scaler, "is_enabled", lambda: False)()
        self._scaler_state = self.scaler.state_dict() if enabled else None  # type: ignore[attr-defined]

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._live, self._copies)
        for opt, had in zip(self.optimizers, self._had_state, strict=True):
            for param in [p for p in opt.state if id(p) not in had]:
                del opt.state[param]  # state the bad step created from nothing
        if self._scaler_state is not None:
            self.scaler.load_state_dict(self._scaler_state)  # type: ignore[attr-defined]


class NanGuard:
    """Watches each step's stats (and, in skip mode, the weights) for values that are not finite."""

    def __init__(
        self,
        mode: str,
        device: torch.device,
        modules: list[nn.Module],
        undo: StepUndo | None,
        checkpoints: Path,
        reduce_max: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    ) -> None:
        self.mode, self.modules, self.undo, self.checkpoints = mode, modules, undo, checkpoints
        self.device = device
        self.reduce_max = reduce_max  # over the run's processes, so that they all decide alike
        self.loss_names: list[str] = []  # set from the step's statistics on the first step
        self._loss_idx = torch.zeros(0, dtype=torch.long)
        self._bits = torch.zeros(0, dtype=torch.long)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.bad_losses = torch.zeros((), device=device, dtype=torch.long)
        self.skipped = 0
        self._in_a_row = 0

    def before_step(self) -> None:
        if self.undo is not None:
            self.undo.save()

    def _bad_bits(self, stats: torch.Tensor) -> torch.Tensor:
        return ((~torch.isfinite(stats[self._loss_idx])).long() * self._bits).sum()

    def _watch(self, names: list[str]) -> None:
        self.loss_names = [n for n in names if n.startswith("loss/")]
        self._loss_idx = torch.tensor([names.index(n) for n in self.loss_names], device=self.device)
        self._bits = 2 ** torch.arange(len(self.loss_names), device=self.device)

    def after_step(self, stats: torch.Tensor, names: list[str], step: int) -> bool:
        """Record step `step`'s stats (named `names`); returns whether they count (False: undone)."""
        if not self.loss_names:
            self._watch(names)
        bits = self._bad_bits(stats)
        if self.mode == "stop":  # stays on the device; read in check()
            new = (self.first_bad < 0) & (bits > 0)
            self.first_bad = torch.where(new, step, self.first_bad)
            self.bad_losses = torch.where(new, bits, self.bad_losses)
            return True
        weights_ok = all_finite([p for m in self.modules for p in m.parameters()])
        flags = self.reduce_max(torch.stack([bits, (~weights_ok).long()]))
        bits = flags[0]
        if not bool(flags.any()):  # the per-step host sync of skip mode
            self._in_a_row = 0
            return True
        assert self.undo is not None
        self.undo.restore()
        self.skipped += 1
        self._in_a_row += 1
        what = self._names(int(bits)) or "the weights"
        log.warning("step %d: %s not finite; its update was dropped (%d so far)", step, what, self.skipped)
        if self._in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise Diverged(
                f"{self._in_a_row} steps in a row were not finite (the last at step {step}); the run cannot "
                f"recover by skipping. The last good checkpoint in {self.checkpoints} is kept. "
                "Lower the learning rates, or try another loss or trainer.precision=32"
            )
        return False

    def _names(self, bits: int) -> str:
        return ", ".join(n for i, n in enumerate(self.loss_names) if bits >> i & 1)

    def check(self, at: int) -> None:
        """Raise if a step up to `at` went bad (stop mode); one host read, done with the logged scalars."""
        if self.mode != "stop":
            return
        bad, bits = self.reduce_max(torch.stack([self.first_bad, self.bad_losses])).tolist()
        if bad >= 0:
            names = self._names(int(bits))
            raise Diverged(
                f"{names} stopped being finite at step {bad} (trainer.on_nan=stop, noticed at step {at}); "
                f"training stopped and the last good checkpoint in {self.checkpoints} is kept untouched. "
                "Lower the learning rates, try another loss or trainer.precision=32, or resume with "
                "trainer.on_nan=skip to drop such steps"
            )

    def check_weights(self, at: int) -> None:
        """Refuse to checkpoint weights that are not finite (one host read per checkpoint)."""
        for module, name in zip(self.modules, ("G", "D"), strict=False):
            if not bool(all_finite(list(module.parameters()))):
                raise Diverged(
                    f"the weights of {name} are not finite at step {at}; training stopped and the last good "
                    f"checkpoint in {self.checkpoints} is kept untouched. Lower the learning rates, or try "
                    "another loss or trainer.precision=32"
                )
