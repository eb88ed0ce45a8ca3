"""R1/R2 zero-centred penalties against hand-computed values, their gradients w.r.t. D's weights
(double backward), and their precision under bf16 autocast."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_cli.config import validate
from gan_cli.errors import ConfigError
from gan_cli.losses import build_loss
from gan_cli.losses.penalties import penalty_weight, r1_penalty, r2_penalty, zero_centred_penalty
from gan_cli.step import LAZY_EVERY, Nets, Penalties, TrainStep, penalty_summary, reg_interval
from tests.conftest import run_cli
from tests.runs import records
from tests.test_config import compose_train


def linear(w: list[float]) -> nn.Linear:
    d = nn.Linear(len(w), 1, bias=False)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([w]))
    return d


class Quadratic(nn.Module):
    """D(x) = sum_i a_i x_i^2, whose input gradient is 2 a x."""

    def __init__(self, a: list[float]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = (self.a * x**2).sum(1)
        return out if y is None else out + y.float()  # a label term that does not depend on x


def test_linear_critic_penalty_is_the_squared_weight_norm() -> None:
    d = linear([3.0, 4.0])
    x = torch.randn(5, 2)
    assert r1_penalty(d, x).item() == pytest.approx(25.0)
    assert r2_penalty(d, x).item() == pytest.approx(25.0)


def test_linear_critic_penalty_gradient_is_twice_the_weight() -> None:
    # d/dw ||w||^2 = 2w: only reachable through the graph of the input gradient (create_graph=True)
    d = linear([3.0, -1.0, 0.5])
    zero_centred_penalty(d, torch.randn(4, 3)).backward()
    assert d.weight.grad is not None
    assert d.weight.grad.flatten().tolist() == pytest.approx([6.0, -2.0, 1.0])


def test_quadratic_critic_by_hand() -> None:
    a = [0.5, -2.0]
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    # grad = 2 a x: [[1, -8], [-3, -2]]; squared norms 65 and 13; mean 39
    d = Quadratic(a)
    penalty = zero_centred_penalty(d, x, torch.tensor([1, 2]))
    assert penalty.item() == pytest.approx(39.0)
    penalty.backward()
    # penalty = mean_b sum_i 4 a_i^2 x_bi^2, so d/da_i = mean_b 8 a_i x_bi^2
    expected = [8 * a[i] * (x[0, i] ** 2 + x[1, i] ** 2).item() / 2 for i in range(2)]
    assert d.a.grad is not None
    assert d.a.grad.tolist() == pytest.approx(expected)


def test_images_are_flattened_per_example() -> None:
    d = nn.Sequential(nn.Flatten(), linear([1.0] * 12))
    x = torch.randn(3, 3, 2, 2)
    assert zero_centred_penalty(d, x).item() == pytest.approx(12.0)


def test_no_gradient_reaches_the_generator() -> None:
    g = nn.Linear(2, 2)
    fake = g(torch.randn(4, 2))
    r2_penalty(linear([1.0, 2.0]), fake).backward()
    assert g.weight.grad is None


def test_bf16_autocast_gives_an_fp32_value_close_to_fp32() -> None:
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1), nn.Flatten(0))
    x = torch.randn(8, 16)
    exact = zero_centred_penalty(d, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = zero_centred_penalty(d, x)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(exact.item(), rel=0.05)
    low.backward()
    # every weight gets a finite gradient (the last bias shifts D's output, not its input gradient)
    for w in (d[0].weight, d[0].bias, d[2].weight):
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    assert d[2].bias.grad is None
    # a bf16 input (a fake made under autocast) has a bf16 gradient: still squared and summed in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_bf16 = zero_centred_penalty(d, x.bfloat16())
    assert from_bf16.dtype == torch.float32
    assert from_bf16.item() == pytest.approx(exact.item(), rel=0.05)


def test_penalty_weight_and_lazy_scaling() -> None:
    assert penalty_weight(10.0) == 5.0
    assert penalty_weight(10.0, 16) == 80.0


class LabelledD(nn.Module):
    """A linear D that takes (and ignores) labels, as the step calls D."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.net = linear(w)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def step_with(d: nn.Module, penalties: Penalties) -> TrainStep:
    """The training step around a given D (G is never called here)."""
    g = nn.Linear(2, 2)
    nets = Nets(
        G=g,
        D=d,
        loss=build_loss(compose_train().loss),
        opt_g=torch.optim.SGD(g.parameters(), lr=0.1),
        opt_d=torch.optim.SGD(d.parameters(), lr=0.1),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        device=torch.device("cpu"),
        amp_dtype=None,
        z_dim=2,
    )
    return TrainStep(nets, 1, penalties)


def test_the_step_weights_each_penalty_by_gamma_and_interval() -> None:
    d = LabelledD([3.0, 4.0])  # ||grad D|| = 5 everywhere
    real, fake, y = torch.randn(4, 2), torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    lazy = step_with(d, Penalties(r1_gamma=2.0, every=4))
    assert [p.name for p in lazy.phases] == ["D", "Dreg", "G"]
    terms = lazy.penalty_terms(real, fake, y, 4)
    assert set(terms) == {"r1"} and terms["r1"].item() == pytest.approx(2.0 / 2 * 4 * 25.0)
    both = step_with(d, Penalties(r1_gamma=1.0, r2_gamma=3.0)).penalty_terms(real, fake, y, 1)
    assert both["r1"].item() == pytest.approx(0.5 * 25.0) and both["r2"].item() == pytest.approx(1.5 * 25.0)
    assert step_with(d, Penalties()).penalty_terms(real, fake, y, 1) == {}


@pytest.mark.parametrize(
    "override,message",
    [
        ("loss.r1_gamma=-1", "loss.r1_gamma=-1.0 is not valid; it must be >= 0"),
        ("loss.r1_gamma=often", "loss.r1_gamma='often' is not valid; give auto or a number >= 0"),
        ("loss.r2_gamma=-0.5", "loss.r2_gamma=-0.5 is not valid; it must be >= 0"),
        ("loss.reg_every=0", "loss.reg_every=0 is not valid; give auto or a number of D steps >= 1"),
        ("loss.reg_every=often", "loss.reg_every='often' is not valid; give auto"),
    ],
)
def test_bad_penalty_settings_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(override))
    validate(compose_train("loss.r1_gamma=0.1", "loss.r2_gamma=0.1", "loss.reg_every=16"))


def test_auto_interval_is_every_step_only_inside_a_cuda_graph() -> None:
    assert reg_interval("auto", graphed=False) == LAZY_EVERY == 16
    assert reg_interval("auto", graphed=True) == 1
    assert reg_interval(16, graphed=True) == 16 and reg_interval(1, graphed=False) == 1
    eager = penalty_summary(Penalties(r1_gamma=1.0, every=4), "auto")
    assert eager == (
        "R1 gamma 1, lazily, every 4 D steps with weight x4 (loss.reg_every=auto: the step runs eagerly)"
    )
    graphed = penalty_summary(Penalties(r1_gamma=0.5, r2_gamma=2.0, every=1), "auto")
    assert graphed == (
        "R1 gamma 0.5 and R2 gamma 2, in every D update (loss.reg_every=auto: the step is one CUDA graph)"
    )
    assert penalty_summary(Penalties(r1_gamma=1.0, every=1), 1) == "R1 gamma 1, in every D update"


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,term",
    [
        (["loss.r1_gamma=0.3", "loss.reg_every=2"], "loss/r1"),  # a lazy update of its own
        (["loss.r1_gamma=0.3", "loss.r2_gamma=0.3", "loss.reg_every=1"], "loss/r2"),  # inside D's update
        (["loss=wgan_gp"], "loss/gp"),  # the loss's own penalty
    ],
)
def test_compiled_networks_take_the_gradient_penalties(
    tmp_path: Path, mnist_root: Path, overrides: list[str], term: str
) -> None:
    """A compiled D cannot take a double backward: the penalties go through D as it was before compiling."""
    digits = ["debug=tiny", "data.download=false", f"data.root={mnist_root}", "trainer.compile=true"]
    res = run_cli(*digits, *overrides, "hydra.run.dir=run", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    values = [row[term] for row in records(tmp_path / "run") if term in row]
    assert values and all(math.isfinite(v) and v > 0 for v in values)
