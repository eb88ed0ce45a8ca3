"""Adversarial objectives by name.

A loss is a pair of small functions on D's raw outputs (logits or critic values): `d_loss` for the
discriminator and `g_loss` for the generator. Some add a regulariser (`penalty`, e.g. the gradient
penalty) or act on D after its update (`after_d_step`, e.g. weight clipping). A loss whose generator
objective compares fakes with reals (`g_needs_real`, e.g. the relativistic pairing loss) also takes
D's outputs on the real batch: `g_loss(fake, real)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from gan_cli.registry import Registry, import_submodules


@dataclass
class LossOptions:
    """Keys every loss has (its own schema extends this): D steps per G step and the zero-centred
    gradient penalties (R1 on real, R2 on fake inputs), applied every `reg_every` D steps."""

    n_critic: int = MISSING  # D updates per G update
    r1_gamma: Any = MISSING  # auto | gamma of R1, gamma/2 * E||grad D(x)||^2 on real inputs (0: off)
    r2_gamma: float = MISSING  # gamma of R2, the same on generated inputs (0: off)
    reg_every: Any = MISSING  # auto | k: D steps between penalty updates (1: in every D update; k: lazily)


class Loss:
    critic = False  # True: D's outputs are critic values, logged as they are (else as sigmoid scores)
    g_needs_real = False  # True: g_loss needs D's outputs on the real batch as `real`

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """G's objective from D's outputs on fakes; `real` (D's outputs on the real batch, paired
        row by row with `fake`) is given when `g_needs_real`, and ignored otherwise."""
        raise NotImplementedError

    def penalty(self, d: nn.Module, real_x: torch.Tensor, fake_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra terms of D's objective, by name (logged as loss/<name>); none by default."""
        return {}

    def after_d_step(self, d: nn.Module) -> None:
        """Called after each D update."""

    def score(self, out: torch.Tensor) -> torch.Tensor:
        """What D/real and D/fake report: the mean sigmoid score, or the critic value."""
        return out if self.critic else torch.sigmoid(out)

    @property
    def penalty_names(self) -> list[str]:
        return []


LOSSES: Registry[Callable[[DictConfig], Loss]] = Registry("loss")


def build_loss(cfg: DictConfig) -> Loss:
    return LOSSES.get(cfg.name)(cfg)


import_submodules(__name__)
