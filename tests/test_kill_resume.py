"""Killed processes: SIGKILL at any moment, then a resume, gives the uninterrupted run bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, script
from tests.kill_at import run_killed
from tests.runs import GAUSS, load, logged, records, same_weights, tb_scalars

pytestmark = pytest.mark.slow

N, EVERY = 24, 8
ARGS = [*GAUSS, f"trainer.steps={N}", f"trainer.checkpoint_every={EVERY}", "logger.log_every=1"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("whole")
    res = run_cli(*ARGS, "hydra.run.dir=run", cwd=cwd)
    assert res.returncode == 0, res.stderr + res.stdout
    return cwd / "run"


def killed_run(cwd: Path, kill_at: str) -> Path:
    run_killed(cwd, *ARGS, "hydra.run.dir=run", KILL_AT=kill_at)
    return cwd / "run"


def resume_and_compare(cwd: Path, run: Path, whole: Path, from_step: int) -> None:
    assert load(run)["step"] == from_step
    res = run_cli(*ARGS, "hydra.run.dir=again", f"trainer.resume={run}", cwd=cwd)
    assert res.returncode == 0, res.stderr + res.stdout
    assert f"resumed from {run}/checkpoints/last.pt at step {from_step}" in res.stdout + res.stderr
    assert not (cwd / "again").exists()
    assert same_weights(load(run), load(whole))
    assert logged(run) == logged(whole)
    steps = [s for s, _ in tb_scalars(run)]
    assert steps == list(range(1, N + 1))
    assert tb_scalars(run) == tb_scalars(whole)


@pytest.mark.parametrize(("k", "ckpt"), [(13, 8), (17, 16)], ids=["between-checkpoints", "right-after-one"])
def test_sigkill_after_step_k(tmp_path: Path, whole: Path, k: int, ckpt: int) -> None:
    run = killed_run(tmp_path, f"log:{k}")
    assert records(run)[-1]["step"] == k
    resume_and_compare(tmp_path, run, whole, ckpt)


@pytest.mark.parametrize("moment", ["write", "replace"])
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, whole: Path, moment: str
) -> None:
    run = killed_run(tmp_path, f"{moment}:2")  # the checkpoint of step 16
    assert list((run / "checkpoints").glob(".*.tmp*")), "the half-written file is left behind"
    resume_and_compare(tmp_path, run, whole, EVERY)
    assert not list((run / "checkpoints").glob(".*.tmp*")), "and removed by the resumed run"


def test_sigkill_from_outside(tmp_path: Path, whole: Path) -> None:
    """The installed gan-train, killed by another process at whatever step it has reached."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GAN_CLI_DATA", None)
    slow = [*ARGS[:-1], "logger.log_every=1", "logger.sample_every=1", "hydra.run.dir=run"]
    proc = subprocess.Popen(
        [script("gan-train"), *slow],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "run"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "checkpoints" / f"step_{EVERY:06d}.pt").exists():
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=60)
    last = load(run)["step"]
    assert proc.returncode == -signal.SIGKILL and EVERY <= last < N, "killed mid-run"
    res = run_cli(*slow[:-1], "hydra.run.dir=again", f"trainer.resume={run}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert same_weights(load(run), load(whole))
    assert logged(run) == logged(whole)
