"""Each loss against values computed by hand from its formula."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gan_cli.errors import ConfigError
from gan_cli.losses import LOSSES, build_loss
from gan_cli.losses.wasserstein import gradient_penalty

REAL = torch.tensor([2.0, -1.0])  # D's logits on real examples
FAKE = torch.tensor([0.5, -3.0])  # and on fake ones


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def loss(name: str, **extra: float):  # type: ignore[no-untyped-def]
    return build_loss(OmegaConf.create({"name": name, "n_critic": 1, **extra}))


def test_minimax() -> None:
    l_d = -mean([math.log(sig(2.0)), math.log(sig(-1.0))]) - mean(
        [math.log(1 - sig(0.5)), math.log(1 - sig(-3.0))]
    )
    l_g = mean([math.log(1 - sig(0.5)), math.log(1 - sig(-3.0))])
    assert loss("minimax").d_loss(REAL, FAKE).item() == pytest.approx(l_d, rel=1e-6)
    assert loss("minimax").g_loss(FAKE).item() == pytest.approx(l_g, rel=1e-6)


def test_nonsaturating() -> None:
    l_g = -mean([math.log(sig(0.5)), math.log(sig(-3.0))])
    assert loss("nonsaturating").g_loss(FAKE).item() == pytest.approx(l_g, rel=1e-6)
    assert loss("nonsaturating").d_loss(REAL, FAKE).item() == pytest.approx(
        loss("minimax").d_loss(REAL, FAKE).item()
    )


def test_hinge() -> None:
    # D: mean(max(0, 1 - [2, -1])) + mean(max(0, 1 + [0.5, -3])) = mean(0, 2) + mean(1.5, 0) = 1 + 0.75
    assert loss("hinge").d_loss(REAL, FAKE).item() == pytest.approx(1.75)
    assert loss("hinge").g_loss(FAKE).item() == pytest.approx(1.25)


def test_lsgan() -> None:
    # D: 0.5 * mean((2-1)^2, (-1-1)^2) + 0.5 * mean(0.25, 9) = 0.5 * 2.5 + 0.5 * 4.625
    assert loss("lsgan").d_loss(REAL, FAKE).item() == pytest.approx(3.5625)
    assert loss("lsgan").g_loss(FAKE).item() == pytest.approx(0.5 * mean([0.25, 16.0]))


def test_wgan_and_clipping() -> None:
    wgan = loss("wgan", clip=0.01)
    assert wgan.d_loss(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)
    assert wgan.g_loss(FAKE).item() == pytest.approx(1.25)
    d = nn.Linear(3, 1)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[0.5, -0.5, 0.001]]))
    wgan.after_d_step(d)
    assert d.weight.flatten().tolist() == pytest.approx([0.01, -0.01, 0.001])


def test_gradient_penalty_by_hand() -> None:
    # D(x) = w . x has gradient w everywhere: penalty = (|w| - 1)^2, times lambda
    d = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    assert gradient_penalty(d, real, fake).item() == pytest.approx(16.0)
    terms = loss("wgan_gp", gp_weight=10.0).penalty(d, real, fake)
    assert terms["gp"].item() == pytest.approx(160.0)


def test_scores() -> None:
    assert loss("nonsaturating").score(torch.tensor([0.0])).item() == 0.5
    assert loss("wgan").score(torch.tensor([-7.0])).item() == -7.0


def test_unknown_loss_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown loss 'hing'; choose one of: hinge, lsgan, minimax"):
        LOSSES.get("hing")
