"""Steps with many D updates: bounded, drawn one batch at a time, and stoppable by a signal."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from gan_cli.config import MAX_N_CRITIC, validate
from gan_cli.loop import draw
from gan_cli.run import build_run
from tests.conftest import run_cli
from tests.runs import load, make_cfg, records
from tests.test_signals import LONG, start, wait_for_training


def test_a_huge_n_critic_is_refused_through_the_cli(tmp_path: Path) -> None:
    res = run_cli(
        "debug=tiny",
        "data=gaussians",
        "model=mlp",
        "loss.n_critic=1000000000",
        "hydra.run.dir=run",
        cwd=tmp_path,
        timeout=60,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"loss.n_critic=1000000000 is not valid; it must be >= 1 and <= {MAX_N_CRITIC}" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_the_bound_itself_is_allowed(tmp_path: Path) -> None:
    validate(make_cfg(tmp_path, f"loss.n_critic={MAX_N_CRITIC}").cfg)


def test_batches_are_drawn_as_the_d_updates_take_them(tmp_path: Path) -> None:
    setup = make_cfg(tmp_path, "loss.n_critic=5", "trainer.steps=1")
    run = build_run(setup.cfg, validate(setup.cfg), setup.out)
    reals = draw(run)
    assert run.batches.index == 0, "nothing is drawn before the step asks"
    for drawn in range(1, 6):
        next(reals)
        assert run.batches.index == drawn
    assert next(reals, None) is None


@pytest.mark.slow
def test_sigterm_during_steps_of_the_most_d_updates_stops_promptly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(
        tmp_path, *LONG[:-1], "logger.log_every=1", f"loss.n_critic={MAX_N_CRITIC}", "hydra.run.dir=run"
    )
    wait_for_training(run, proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert time.monotonic() - t0 < 30, "one step of 1000 D updates, then the checkpoint"
    assert load(run)["step"] == records(run)[-1]["step"] >= 1
