"""Zero-centred gradient penalties on D, usable with any loss.

R1 (Mescheder et al., 2018) penalises D's input gradient on real examples, R2 the same on fakes:

    R(D) = E_x ||grad_x D(x, y)||^2

and D's objective gains gamma/2 * R for each. With lazy regularisation (Karras et al., 2020, StyleGAN2)
the penalties are computed only every `reg_every` D steps, their weight multiplied by `reg_every` so
that their average strength is unchanged: `penalty_weight(gamma, reg_every)`.

Every loss takes them (`loss.r1_gamma`, `loss.r2_gamma`, `loss.reg_every`); the training step
(`gan_cli.step`) applies them inside D's update or as a phase of their own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Critic = Callable[..., torch.Tensor]  # D(x) or D(x, y) -> one output per example


def zero_centred_penalty(d: Critic, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E ||grad_x D(x, y)||^2 over the batch, as a differentiable function of D's weights.

    `x` is detached first, so no gradient reaches whatever produced it (G, for R2). The gradient is
    taken with create_graph=True, so backward through the result trains D (a double backward); its
    squared norm is computed in fp32 even under autocast."""
    x = x.detach().requires_grad_(True)
    out = d(x) if y is None else d(x, y)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    return grad.float().flatten(1).square().sum(1).mean()


def r1_penalty(d: Critic, real_x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """R1: the zero-centred penalty on real inputs."""
    return zero_centred_penalty(d, real_x, y)


def r2_penalty(d: Critic, fake_x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """R2: the zero-centred penalty on fake inputs."""
    return zero_centred_penalty(d, fake_x, y)


def penalty_weight(gamma: float, reg_every: int = 1) -> float:
    """The factor of a penalty in D's objective: gamma/2, times reg_every when it is applied only every
    reg_every steps (lazy regularisation)."""
    return gamma / 2 * reg_every
