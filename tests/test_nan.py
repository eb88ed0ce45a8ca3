"""Non-finite losses and weights: trainer.on_nan=stop ends the run, skip drops the step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_cli import faults
from gan_cli.faults import MAX_SKIPS_IN_A_ROW, Diverged
from gan_cli.step import TrainStep
from tests.conftest import run_cli
from tests.runs import GAUSS, load, make_cfg, records, train


def bad_at(
    steps: set[int], which: str = "loss/G", poison: bool = False
) -> tuple[Callable[[TrainStep], Callable[..., torch.Tensor]], list[Any]]:
    """Wraps the real step so that its stat `which` is NaN at the given steps; G's weights before
    each step are recorded. With poison, G's weights are made infinite instead, the stats left finite."""
    seen: list[Any] = []

    def wrap(train_step: TrainStep) -> Callable[..., torch.Tensor]:
        G = train_step.nets.G

        def step(batches: list[Any]) -> torch.Tensor:
            seen.append({k: v.clone() for k, v in G.state_dict().items()})
            stats = train_step(batches)
            if len(seen) in steps:
                if poison:
                    with torch.no_grad():
                        next(G.parameters()).fill_(float("inf"))
                else:
                    stats = stats.clone()
                    stats[(train_step.names or []).index(which)] = float("nan")
            return stats

        return step

    return wrap, seen


def test_stop_names_the_step_and_loss_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    step, _ = bad_at({7})
    cfg = make_cfg(tmp_path, "trainer.steps=20", "trainer.checkpoint_every=3", "logger.log_every=4")
    with pytest.raises(Diverged) as err:
        train(cfg, wrap_step=step)
    text = str(err.value)
    assert "loss/G stopped being finite at step 7" in text and "on_nan=skip" in text
    assert str(tmp_path / "checkpoints") in text
    state = load(tmp_path)
    assert state["step"] == 6, "the checkpoint due at step 9 was never written"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.pt",
        "step_000003.pt",
        "step_000006.pt",
    ]
    assert all(torch.isfinite(v).all() for v in state["G"].values())
    assert [r["step"] for r in records(tmp_path)] == [3, 4, 6], "nothing logged from the bad window"


def test_stop_names_the_discriminator_loss(tmp_path: Path) -> None:
    step, _ = bad_at({2}, which="loss/D")
    with pytest.raises(Diverged, match="loss/D stopped being finite at step 2"):
        train(make_cfg(tmp_path, "trainer.steps=4"), wrap_step=step)


def test_stop_on_weights_that_are_not_finite(tmp_path: Path) -> None:
    step, _ = bad_at({4}, poison=True)  # after step 4, just before its checkpoint
    with pytest.raises(Diverged, match="weights of G are not finite at step 4"):
        train(make_cfg(tmp_path, "trainer.steps=8", "trainer.checkpoint_every=2"), wrap_step=step)
    assert load(tmp_path)["step"] == 2


def test_skip_drops_the_update_and_counts_it(tmp_path: Path) -> None:
    step, seen = bad_at({3, 5}, poison=False)
    cfg = make_cfg(tmp_path, "trainer.steps=8", "trainer.on_nan=skip", "logger.log_every=2")
    result = train(cfg, wrap_step=step)
    assert result["step"] == 8
    for bad in (3, 5):  # seen[i] holds the weights before step i + 1
        assert all(torch.equal(seen[bad - 1][k], seen[bad][k]) for k in seen[bad]), f"step {bad} undone"
    assert not all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1]), "good steps do change G"
    assert [r["nan/skipped_steps"] for r in records(tmp_path)] == [0, 1, 2, 2]
    assert all(r["loss/G"] == r["loss/G"] for r in records(tmp_path)), "averages leave the bad steps out"
    assert load(tmp_path)["skipped_steps"] == 2
    from tests.runs import tb_scalars

    assert [v for _, v in tb_scalars(tmp_path, "nan/skipped_steps")] == [0, 1, 2, 2]


def test_skip_undoes_poisoned_weights_and_new_optimizer_state(tmp_path: Path) -> None:
    step, seen = bad_at({1, 4}, poison=True)
    train(
        make_cfg(
            tmp_path, "trainer.steps=6", "trainer.on_nan=skip", "optimizer=sgd", "optimizer.momentum=0.9"
        ),
        wrap_step=step,
    )
    assert all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0]), "the first step's update is gone"
    assert all(torch.isfinite(v).all() for v in load(tmp_path)["G"].values())


def test_skip_gives_up_after_too_many_bad_steps_in_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_SKIPS_IN_A_ROW == 100
    monkeypatch.setattr(faults, "MAX_SKIPS_IN_A_ROW", 5)
    step, _ = bad_at(set(range(3, 1000)))
    with pytest.raises(Diverged, match="5 steps in a row were not finite .the last at step 7"):
        train(make_cfg(tmp_path, "trainer.steps=1000", "trainer.on_nan=skip"), wrap_step=step)


def test_cli_exits_non_zero_on_divergence(tmp_path: Path) -> None:
    res = run_cli(
        *GAUSS, "trainer.steps=50", "optimizer=sgd", "optimizer.lr=1e30", "hydra.run.dir=run", cwd=tmp_path
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "stopped being finite at step" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_skip_also_undoes_the_moving_average(tmp_path: Path) -> None:
    seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    def step(train_step: TrainStep) -> Callable[..., torch.Tensor]:
        ema = train_step.nets.ema
        assert ema is not None, "the default model keeps a moving average of G"

        def inner(batches: list[Any]) -> torch.Tensor:
            seen.append((ema.num_updates.item(), {k: v.clone() for k, v in ema.model.state_dict().items()}))
            stats = train_step(batches)
            if len(seen) == 3:
                stats = stats.clone()
                stats[(train_step.names or []).index("loss/G")] = float("nan")
            return stats

        return inner

    train(make_cfg(tmp_path, "trainer.steps=5", "trainer.on_nan=skip"), wrap_step=step)
    assert [n for n, _ in seen] == [0, 1, 2, 2, 3], "the bad step's update count is taken back"
    before, after = seen[2][1], seen[3][1]
    assert all(torch.equal(before[k], after[k]) for k in before), "and so are the averaged weights"
    assert not all(torch.equal(seen[1][1][k], before[k]) for k in before), "good steps move the average"
