"""trainer.resume=auto and PATH through the installed gan-train, with Hydra's own run directories."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.runs import GAUSS, load, records

pytestmark = pytest.mark.slow  # real processes

ARGS = [*GAUSS, "trainer.checkpoint_every=3"]


def next_second() -> None:
    """Waits for the clock's next second. Hydra names a run's folder after the second the run starts
    in (outputs/DATE/HH-MM-SS_...) and gan-train refuses a folder that holds a run; a command can
    start within the second the one before it started in (run_cli forks it, no interpreter start-up)."""
    time.sleep(1.01 - time.time() % 1)


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent.parent for p in (cwd / "outputs").glob("*/*/checkpoints/last.pt"))


def test_auto_continues_the_run_with_the_same_config(tmp_path: Path) -> None:
    first = run_cli(*ARGS, "trainer.steps=4", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (run,) = run_dirs(tmp_path)
    next_second()
    other = run_cli(*ARGS, "trainer.steps=4", "trainer.seed=7", cwd=tmp_path)  # another config
    assert other.returncode == 0, other.stdout + other.stderr
    assert len(run_dirs(tmp_path)) == 2

    next_second()
    again = run_cli(*ARGS, "trainer.steps=8", "logger.log_every=4", "trainer.resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from {run}/checkpoints/last.pt at step 4" in again.stdout + again.stderr
    assert len(run_dirs(tmp_path)) == 2 and len(list((tmp_path / "outputs").glob("*/*"))) == 2, (
        "no new folder"
    )
    assert load(run)["step"] == 8
    assert [r["step"] for r in records(run)] == [2, 3, 4, 6, 8]
    assert len(list((run / ".hydra" / "resumes").iterdir())) == 1
    log = (run / "train.log").read_text()
    assert "done: 4 steps" in log and "done: 8 steps" in log, "one log for the whole run"


def test_auto_with_nothing_to_resume_starts_afresh(tmp_path: Path) -> None:
    res = run_cli(*ARGS, "trainer.steps=2", "trainer.resume=auto", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starting afresh" in res.stdout + res.stderr
    (run,) = run_dirs(tmp_path)
    assert load(run)["step"] == 2


def test_changed_config_is_refused_by_the_cli(tmp_path: Path) -> None:
    first = run_cli(*ARGS, "trainer.steps=2", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    res = run_cli(
        *ARGS,
        "trainer.steps=4",
        "loss=hinge",
        "hydra.run.dir=new",
        f"trainer.resume={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "refusing to resume" in out and "loss.name: 'nonsaturating' in the checkpoint, 'hinge' now" in out
    assert "trainer.resume_force=true" in out and "Traceback" not in out
    assert not (tmp_path / "new").exists()
    assert load(tmp_path / "run")["step"] == 2
