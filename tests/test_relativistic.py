"""The relativistic pairing loss against its formula, and the generator signature every loss shares."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from gan_cli.losses import LOSSES, Loss, build_loss

REAL = torch.tensor([2.0, -1.0, 0.25])  # D's outputs on real examples
FAKE = torch.tensor([0.5, -3.0, 0.25])  # and on the fakes they are paired with


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def rpgan() -> Loss:
    return build_loss(OmegaConf.create({"name": "rpgan", "n_critic": 1}))


def test_rpgan_by_hand() -> None:
    # differences D(x) - D(G(z)) per pair: 1.5, 2.0, 0.0
    l_d = (softplus(-1.5) + softplus(-2.0) + softplus(0.0)) / 3
    l_g = (softplus(1.5) + softplus(2.0) + softplus(0.0)) / 3
    loss = rpgan()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(l_d, rel=1e-6)
    assert loss.g_loss(FAKE, REAL).item() == pytest.approx(l_g, rel=1e-6)
    assert loss.critic and loss.g_needs_real
    assert loss.score(torch.tensor([-4.0])).item() == -4.0  # logged raw


def test_rpgan_pairs_elementwise() -> None:
    # swapping two fakes changes the pairs, so the loss, although the sets of outputs are unchanged
    loss = rpgan()
    swapped = FAKE[[1, 0, 2]]
    assert loss.d_loss(REAL, swapped).item() != pytest.approx(loss.d_loss(REAL, FAKE).item())


def test_rpgan_generator_gradient_is_through_the_fakes_only() -> None:
    fake = FAKE.clone().requires_grad_(True)
    real = REAL.clone().requires_grad_(True)
    rpgan().g_loss(fake, real).backward()
    assert fake.grad is not None
    # dL_G/dfake_i = -sigmoid(real_i - fake_i) / n
    expected = [-1 / (1 + math.exp(-d)) / 3 for d in (1.5, 2.0, 0.0)]
    assert fake.grad.tolist() == pytest.approx(expected, rel=1e-6)


def test_rpgan_refuses_a_missing_or_unpaired_real_batch() -> None:
    with pytest.raises(ValueError, match=r"call g_loss\(fake, real\)"):
        rpgan().g_loss(FAKE)
    with pytest.raises(ValueError, match="must have one shape"):
        rpgan().d_loss(REAL, FAKE[:2])


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n != "rpgan"])
def test_other_losses_ignore_the_real_batch(name: str) -> None:
    loss = build_loss(OmegaConf.create({"name": name, "n_critic": 1, "clip": 0.01, "gp_weight": 10.0}))
    assert not loss.g_needs_real
    assert loss.g_loss(FAKE, REAL).item() == loss.g_loss(FAKE).item()
