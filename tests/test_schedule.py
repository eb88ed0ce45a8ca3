"""Learning-rate decay: the rates it sets, through the real console script and on a resumed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_cli.config import LrDecay
from gan_cli.graphs import graph_blocker
from gan_cli.schedule import LinearDecay, build_schedule
from tests.conftest import QUICK, run_cli
from tests.runs import Crash, crash_after, load, make_cfg, records, train


def sgd(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_decay_by_steps() -> None:
    g, d = sgd(1.0), sgd(1.0)
    decay = LinearDecay([(g, 2e-4), (d, 4e-4)], start=0.5, total_steps=100, max_seconds=None)
    rates = {}
    for step in (0, 50, 75, 90, 100):
        decay.apply(step, elapsed_s=1e6)  # no time limit: elapsed time is ignored
        rates[step] = (g.param_groups[0]["lr"], d.param_groups[0]["lr"])
    assert rates[0] == rates[50] == (2e-4, 4e-4)
    assert rates[75] == pytest.approx((1e-4, 2e-4))
    assert rates[90] == pytest.approx((4e-5, 8e-5))
    assert rates[100] == (0.0, 0.0)


def test_linear_decay_follows_the_first_limit_reached() -> None:
    g = sgd(5.0)  # a rate restored from a checkpoint is replaced by the configured one
    decay = LinearDecay([(g, 1e-3)], start=0.0, total_steps=1000, max_seconds=60.0)
    decay.apply(100, elapsed_s=30.0)  # half the minutes, a tenth of the steps
    assert g.param_groups[0]["lr"] == pytest.approx(5e-4)
    decay.apply(900, elapsed_s=30.0)
    assert g.param_groups[0]["lr"] == pytest.approx(1e-4)
    only_time = LinearDecay([(g, 1e-3)], start=0.5, total_steps=None, max_seconds=60.0)
    only_time.apply(10**6, elapsed_s=45.0)
    assert g.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_no_decay_keeps_the_rates_and_decay_blocks_graph_capture() -> None:
    assert build_schedule(LrDecay.none, 0.5, [(sgd(1.0), 1.0)], 100, None) is None
    decay = build_schedule(LrDecay.linear, 0.5, [(sgd(1.0), 1.0)], None, 2.0)
    assert isinstance(decay, LinearDecay) and decay.max_seconds == 120.0
    assert "optimizer.lr_decay" in str(
        graph_blocker(torch.device("cuda"), 1, lr_decay=True, grad_scaler=False)
    )


def lr_log(run: Path) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["lr/G"], r["lr/D"]) for r in records(run) if "lr/G" in r}


def test_cli_linear_decay_logs_the_rates(tmp_path: Path) -> None:
    args = [a for a in QUICK if not a.startswith("trainer.steps")]
    res = run_cli(
        *args,
        "data=gaussians",
        "model=mlp",
        "trainer.steps=8",
        "optimizer.lr_decay=linear",
        "optimizer.lr_decay_start=0.5",
        "optimizer.lr=2e-4",
        "optimizer.d.lr=4e-4",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    rates = lr_log(tmp_path / "run")
    # each log holds the rates of the step just run: step 6 ran with 5 of 8 done (factor 0.75)
    assert rates[2] == pytest.approx((2e-4, 4e-4))
    assert rates[4] == pytest.approx((2e-4, 4e-4))
    assert rates[6] == pytest.approx((1.5e-4, 3e-4))
    assert rates[8] == pytest.approx((5e-5, 1e-4))


def test_resumed_run_decays_from_the_configured_rates(tmp_path: Path) -> None:
    over = [
        "trainer.steps=20",
        "optimizer.lr_decay=linear",
        "optimizer.lr_decay_start=0.25",
        "trainer.checkpoint_every=10",
    ]
    whole = train(make_cfg(tmp_path / "whole", *over))
    with pytest.raises(Crash):
        train(make_cfg(tmp_path / "cut", *over), wrap_step=crash_after(14))
    assert load(tmp_path / "cut")["step"] == 10
    resumed = train(make_cfg(tmp_path / "cut", *over, "trainer.resume=auto"))
    assert lr_log(tmp_path / "cut")[20] == pytest.approx(lr_log(tmp_path / "whole")[20])
    assert resumed["loss/D"] == pytest.approx(whole["loss/D"], abs=1e-6)
