"""One training step, as a list of phases: n_critic D updates, then one G update.

A phase names the network it updates, its optimizer, the objective it minimises and how many times in
a row it runs (stylegan2-ada's `phases`): a lazily applied regulariser or a second D update is one more
phase. The step returns its statistics as one device tensor (so a CUDA graph can hold it); their names
come from the objectives' own dicts, in `TrainStep.names`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gan_cli.augment import Augment, no_augmentation
from gan_cli.ema import EMA
from gan_cli.graphs import Batch
from gan_cli.losses import Loss
from gan_cli.losses.penalties import penalty_weight, r1_penalty, r2_penalty

Stats = dict[str, torch.Tensor]


@dataclass
class Nets:
    """The networks, their optimizers and the numerics of a step."""

    G: nn.Module  # what the step calls (maybe compiled or wrapped in DDP)
    D: nn.Module
    loss: Loss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for fp32
    z_dim: int
    shard: tuple[int, int] = (0, 1)  # (this process, processes): its rows of each global batch
    ema: EMA | None = None  # moving average of G's weights, updated after each G step
    num_classes: int = 0  # labels a conditional G takes (0: unconditional)
    augment: Augment = field(default_factory=no_augmentation)  # of every image D sees
    # several processes: D without its DDP wrapper (whose hooks cannot take the penalties' double
    # backward) and what averages a network's gradients over the processes after such an update
    bare_D: nn.Module | None = None
    average_grads: Callable[[nn.Module], None] | None = None
    # trainer.compile: D as it was before compiling, for the gradient penalties (a compiled module
    # cannot take their double backward); it shares the compiled D's parameters
    uncompiled_D: nn.Module | None = None

    def noise(self, n: int) -> torch.Tensor:
        """Noise for this process's `n` examples: its rows of one draw for the global batch, so several
        processes see the same noise as one process would."""
        rank, world = self.shard
        z = torch.randn(n * world, self.z_dim, device=self.device)
        return z[rank * n : (rank + 1) * n] if world > 1 else z

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def D_eager(self) -> nn.Module:
        """D for the gradient penalties: not compiled."""
        return self.D if self.uncompiled_D is None else self.uncompiled_D

    def G_eval(self) -> nn.Module:
        """The generator samples and metrics use: the moving average, with batch-norm statistics of
        its own, when there is one; else G."""
        if self.ema is None:
            return self.G
        return self.ema.eval_model(self.z_dim, self.device, self.num_classes)


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def optimizer_step(
    scaler: torch.amp.GradScaler,
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    net: nn.Module,
    sync: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Backward (scaled under fp16 AMP), `sync` and one step of `opt`; returns `net`'s unscaled
    gradient norm."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if sync is not None:
        sync()
    scaler.unscale_(opt)
    norm = grad_norm(net)
    scaler.step(opt)
    scaler.update()
    return norm


@contextlib.contextmanager
def frozen(net: nn.Module | None) -> Iterator[None]:
    """`net` gets no gradients inside the block (G's update goes through D without training it)."""
    if net is None:
        yield
        return
    net.requires_grad_(False)
    try:
        yield
    finally:
        net.requires_grad_(True)


# An objective takes the batch of its update (None for phases that draw none) and whether this is the
# phase's last repeat; it returns the loss to minimise and the statistics to log.
Objective = Callable[[Batch | None, bool], tuple[torch.Tensor, Stats]]


@dataclass
class Phase:
    """One kind of update: which network, with which optimizer, on which objective, how often."""

    name: str  # the network updated, "D" or "G": its gradient norm is logged as grad_norm/<name>
    net: nn.Module
    opt: torch.optim.Optimizer
    objective: Objective
    repeats: int = 1  # updates in a row, each on its own real batch when `takes_batch`
    every: int = 1  # runs on every `every`-th step only (lazy regularisation)
    takes_batch: bool = True
    frozen: nn.Module | None = None  # a network the objective runs through but must not train
    after: list[Callable[[], None]] = field(default_factory=list)  # run after each update
    sync: Callable[[], None] | None = None  # between backward and the optimizer step


LAZY_EVERY = 16  # loss.reg_every=auto where the step runs eagerly (StyleGAN2's interval)


def reg_interval(setting: Any, graphed: bool) -> int:
    """loss.reg_every as a number of D steps: auto is every step where the step is one CUDA graph
    (which replays one fixed step), else lazily every LAZY_EVERY-th step."""
    if setting == "auto":
        return 1 if graphed else LAZY_EVERY
    return int(setting)


@dataclass(frozen=True)
class Penalties:
    """The zero-centred gradient penalties on D: gamma of R1 (real inputs) and R2 (fakes), applied in
    every D update (`every` 1) or lazily, every `every` steps with the weight scaled to match."""

    r1_gamma: float = 0.0
    r2_gamma: float = 0.0
    every: int = 1

    @property
    def active(self) -> bool:
        return self.r1_gamma > 0 or self.r2_gamma > 0


def penalty_summary(pen: Penalties, setting: Any) -> str:
    """One log line: which penalties, how strong, how often, and why when loss.reg_every=auto chose."""
    terms = [f"{name} gamma {g:g}" for name, g in (("R1", pen.r1_gamma), ("R2", pen.r2_gamma)) if g > 0]
    if pen.every == 1:
        when = "in every D update"
    else:
        when = f"lazily, every {pen.every} D steps with weight x{pen.every}"
    if setting == "auto":
        why = "the step is one CUDA graph" if pen.every == 1 else "the step runs eagerly"
        when += f" (loss.reg_every=auto: {why})"
    return f"{' and '.join(terms)}, {when}"


class TrainStep:
    """n_critic D updates, each on a real batch and fresh fakes, then one G update on the last fakes;
    with lazy R1/R2, a D regularisation update every `penalties.every` steps between them."""

    def __init__(self, nets: Nets, n_critic: int, penalties: Penalties = Penalties()) -> None:
        self.nets, self.penalties = nets, penalties
        self.names: list[str] | None = None  # the statistics' names, known after the first call
        self.calls = 0
        self._held: dict[str, Stats] = {}  # the last statistics of phases that skip steps
        self._fake: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._real: torch.Tensor | None = None
        loss = nets.loss
        g_after = [nets.ema.update] if nets.ema is not None else []
        self.phases = [
            Phase(
                "D", nets.D, nets.opt_d, self.d_objective, n_critic, after=[lambda: loss.after_d_step(nets.D)]
            )
        ]
        if penalties.active and penalties.every > 1:
            average = nets.average_grads
            self.phases.append(
                Phase(
                    "Dreg",
                    nets.D,
                    nets.opt_d,
                    self.reg_objective,
                    takes_batch=False,
                    every=penalties.every,
                    sync=(lambda: average(nets.D)) if average is not None else None,
                )
            )
        self.phases.append(
            Phase("G", nets.G, nets.opt_g, self.g_objective, takes_batch=False, frozen=nets.D, after=g_after)
        )

    def critic(self, bare: bool = False) -> Callable[..., torch.Tensor]:
        """D as the penalties see it: on augmented inputs when augmenting (gradients w.r.t. the
        un-augmented image); `bare`: without its DDP wrapper, for an update of its own."""
        n = self.nets
        d = n.bare_D if bare and n.bare_D is not None else n.D_eager
        if not n.augment.enabled:
            return d
        return lambda x, y=None: d(n.augment(x), y)

    def penalty_terms(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor, every: int) -> Stats:
        """gamma/2 * E||grad D||^2 on real (R1) and fake (R2) inputs, weighted for `every`."""
        pen, terms = self.penalties, {}
        d = self.critic(bare=every > 1)  # a lazy update of its own averages its gradients itself
        if pen.r1_gamma > 0:
            terms["r1"] = penalty_weight(pen.r1_gamma, every) * r1_penalty(d, real, y)
        if pen.r2_gamma > 0:
            terms["r2"] = penalty_weight(pen.r2_gamma, every) * r2_penalty(d, fake, y)
        return terms

    @property
    def batches_per_step(self) -> int:
        return sum(p.repeats for p in self.phases if p.takes_batch)

    def d_objective(self, batch: Batch | None, last: bool) -> tuple[torch.Tensor, Stats]:
        """D's loss on a real batch and fakes for its labels (with G's graph kept on the last repeat,
        for G's update), plus the loss's penalties."""
        n = self.nets
        assert batch is not None
        real, y = batch
        z = n.noise(real.shape[0])
        with n.autocast():
            with torch.set_grad_enabled(last):
                fake = n.G(z, y)
            out_real, out_fake = n.D(n.augment(real), y), n.D(n.augment(fake.detach()), y)
            n.augment.observe(out_real)
            loss_d = n.loss.d_loss(out_real.float(), out_fake.float())
            penalties = n.loss.penalty(n.D_eager, real, fake.detach())
            if self.penalties.active and self.penalties.every == 1:
                penalties.update(self.penalty_terms(real, fake.detach(), y, 1))
            total = loss_d + sum(penalties.values()) if penalties else loss_d
        self._fake, self._y, self._real = fake, y, real
        stats = {
            "loss/D": loss_d.detach().float(),
            "D/real": n.loss.score(out_real.detach().float()).mean(),
            "D/fake": n.loss.score(out_fake.detach().float()).mean(),
            **{f"loss/{k}": v.detach().float() for k, v in penalties.items()},
        }
        return total, stats

    def g_objective(self, batch: Batch | None, last: bool) -> tuple[torch.Tensor, Stats]:
        """G's loss through the just-updated D on the last D update's fakes (and, for a relativistic
        loss, D's outputs on that update's real batch)."""
        n = self.nets
        assert self._fake is not None and self._real is not None
        with n.autocast():
            out_real = None
            if n.loss.g_needs_real:  # relativistic losses compare with D's view of the same real batch
                with torch.no_grad():
                    out_real = n.D(n.augment(self._real), self._y).float()
            loss_g = n.loss.g_loss(n.D(n.augment(self._fake), self._y).float(), out_real)
        self._fake = self._real = None
        return loss_g, {"loss/G": loss_g.detach().float()}

    def reg_objective(self, batch: Batch | None, last: bool) -> tuple[torch.Tensor, Stats]:
        """Lazy R1/R2 on the last D update's real batch and fakes, weighted by the interval."""
        assert self._real is not None and self._fake is not None and self._y is not None
        with self.nets.autocast():
            terms = self.penalty_terms(self._real, self._fake.detach(), self._y, self.penalties.every)
        return sum(terms.values()), {f"loss/{k}": v.detach().float() for k, v in terms.items()}  # type: ignore[return-value]

    def __call__(self, batches: Iterable[Batch]) -> torch.Tensor:
        """Run every phase on `batches` (one per D repeat, taken as each update starts); the last
        repeat's statistics are kept."""
        stats: Stats = {}
        todo = iter(batches)
        for phase in self.phases:
            if self.calls % phase.every and phase.name in self._held:  # not due: its last statistics stand
                stats.update(self._held[phase.name])
                continue
            for i in range(phase.repeats):
                batch = next(todo) if phase.takes_batch else None
                with frozen(phase.frozen):
                    loss, phase_stats = phase.objective(batch, i == phase.repeats - 1)
                    norm = optimizer_step(self.nets.scaler, loss, phase.opt, phase.net, phase.sync)
                for hook in phase.after:
                    hook()
                stats.update(phase_stats)
                stats[f"grad_norm/{phase.name}"] = norm
            if phase.every > 1:
                self._held[phase.name] = {**phase_stats, f"grad_norm/{phase.name}": norm}
        self.calls += 1
        if self.names is None:
            self.names = list(stats)
        return torch.stack([stats[name] for name in self.names])

    def held_values(self) -> dict[str, dict[str, float]] | None:
        """The last statistics of the phases that skip steps, as numbers (kept in checkpoints)."""
        if not self._held:
            return None
        return {phase: {k: float(v) for k, v in stats.items()} for phase, stats in self._held.items()}

    def resume(self, step: int, held: dict[str, dict[str, float]] | None) -> None:
        """Go on after `step` steps: lazy phases stay on their schedule and log their saved statistics
        until they run again (a checkpoint without them: the phase runs on the first step)."""
        self.calls = step
        device = self.nets.device
        self._held = {
            phase: {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in stats.items()}
            for phase, stats in (held or {}).items()
        }

    def named(self, values: torch.Tensor | list[float]) -> dict[str, Any]:
        """The step's statistics (a tensor or a list of numbers like it) by name."""
        assert self.names is not None, "named() before the first step"
        return dict(zip(self.names, values, strict=True))
