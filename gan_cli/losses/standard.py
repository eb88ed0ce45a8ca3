"""Logit-based objectives: minimax, non-saturating, least squares and hinge."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from gan_cli.config import store_schema
from gan_cli.losses import LOSSES, Loss, LossOptions


@dataclass
class LossConfig(LossOptions):
    name: str = MISSING  # minimax | nonsaturating | hinge | lsgan | rpgan | wgan | wgan_gp


store_schema("loss", "base", LossConfig)


def _bce_real_fake(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # -log sigmoid(r) = softplus(-r);  -log(1 - sigmoid(f)) = softplus(f)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


@LOSSES.register("minimax")
class Minimax(Loss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = -E[log D(x)] - E[log(1 - D(G(z)))], D = sigmoid(logit) (Goodfellow et al., 2014)."""
        return _bce_real_fake(real, fake)

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = E[log(1 - D(G(z)))]: the saturating objective, G minimises what D maximises."""
        return -F.softplus(fake).mean()


@LOSSES.register("nonsaturating")
class NonSaturating(Loss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = -E[log D(x)] - E[log(1 - D(G(z)))]."""
        return _bce_real_fake(real, fake)

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = -E[log D(G(z))] = E[softplus(-logit)]."""
        return F.softplus(-fake).mean()


@LOSSES.register("lsgan")
class LeastSquares(Loss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2] (Mao et al., 2017, a=0, b=c=1)."""
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = 1/2 E[(D(G(z)) - 1)^2]."""
        return 0.5 * ((fake - 1) ** 2).mean()

    def score(self, out: torch.Tensor) -> torch.Tensor:
        return out


@LOSSES.register("hinge")
class Hinge(Loss):
    critic = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye, 2017; Miyato et al., 2018)."""
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = -E[D(G(z))]."""
        return -fake.mean()
