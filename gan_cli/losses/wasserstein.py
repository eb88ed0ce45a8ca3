"""Wasserstein objectives: weight clipping (Arjovsky et al., 2017) and gradient penalty
(Gulrajani et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from gan_cli.config import store_schema
from gan_cli.losses import LOSSES, Loss, LossOptions


@dataclass
class WGANConfig(LossOptions):
    name: str = MISSING
    clip: float = MISSING  # weights of D are clipped to [-clip, clip] after each update


@dataclass
class WGANGPConfig(LossOptions):
    name: str = MISSING
    gp_weight: float = MISSING  # lambda of the gradient penalty


store_schema("loss", "wgan", WGANConfig)
store_schema("loss", "wgan_gp", WGANGPConfig)


@LOSSES.register("wgan")
class WGAN(Loss):
    critic = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = E[D(G(z))] - E[D(x)]: the negated estimate of the Wasserstein-1 distance."""
        return fake.mean() - real.mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = -E[D(G(z))]."""
        return -fake.mean()

    @torch.no_grad()
    def after_d_step(self, d: nn.Module) -> None:
        """Clip every weight of D to [-c, c] to keep it (roughly) Lipschitz."""
        params: list[torch.Tensor] = list(d.parameters())
        torch._foreach_clamp_min_(params, -self.cfg.clip)
        torch._foreach_clamp_max_(params, self.cfg.clip)


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = d(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@LOSSES.register("wgan_gp")
class WGANGP(WGAN):
    def penalty(self, d: nn.Module, real_x: torch.Tensor, fake_x: torch.Tensor) -> dict[str, torch.Tensor]:
        """lambda * E[(||grad D(x_hat)||_2 - 1)^2]."""
        return {"gp": self.cfg.gp_weight * gradient_penalty(d, real_x, fake_x)}

    def after_d_step(self, d: nn.Module) -> None:
        """No clipping: the penalty keeps D Lipschitz."""

    @property
    def penalty_names(self) -> list[str]:
        return ["gp"]
