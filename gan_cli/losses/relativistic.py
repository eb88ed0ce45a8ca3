"""The relativistic pairing loss of R3GAN (Huang et al., 2024, "The GAN is dead; long live the GAN!").

D is trained to score each real example above the fake it is paired with, G to score its fake above
the real one; pair i is real[i] with fake[i] of the same batch. R3GAN trains it with the zero-centred
R1 and R2 penalties (gan_cli.losses.penalties), which make it converge locally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_cli.losses import LOSSES, Loss


def _paired(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape:
        raise ValueError(
            f"rpgan pairs real[i] with fake[i]: D's outputs must have one shape, got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}"
        )


@LOSSES.register("rpgan")
class RelativisticPairing(Loss):
    critic = True  # D's outputs only matter relative to each other: log them raw
    g_needs_real = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """L_D = E[softplus(-(D(x) - D(G(z))))]."""
        _paired(real, fake)
        return F.softplus(fake - real).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """L_G = E[softplus(-(D(G(z)) - D(x)))]: D's outputs on the real batch enter, but no gradient
        reaches G through them."""
        if real is None:
            raise ValueError("rpgan's generator loss compares fakes with reals: call g_loss(fake, real)")
        _paired(real, fake)
        return F.softplus(real - fake).mean()
