"""A run folder that already holds a run is never written over, and resume=auto never starts afresh
beside a run whose last checkpoint is damaged: through the installed gan-train."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gan_cli import resume
from gan_cli.errors import ConfigError
from tests.conftest import run_cli
from tests.runs import GAUSS, load, records

pytestmark = pytest.mark.slow  # runs in make test; make test-fast leaves it out

ARGS = [*GAUSS, "trainer.checkpoint_every=2", "hydra.run.dir=run"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    """A finished four-step run in tmp_path/run."""
    res = run_cli(*ARGS, "trainer.steps=4", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp_path / "run"


def assert_refused(res: subprocess.CompletedProcess[str], run: Path) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert f"{run} already holds a run" in out and f"trainer.resume={run}" in out, out
    assert "hydra.run.dir=" in out and "Traceback" not in out


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused(earlier: Path, tmp_path: Path) -> None:
    before = snapshot(earlier)
    res = run_cli(*ARGS, "trainer.steps=2", "trainer.seed=5", cwd=tmp_path)
    assert_refused(res, earlier)
    assert snapshot(earlier) == before, "nothing in the folder was changed or removed"

    again = run_cli(*ARGS, "trainer.steps=6", f"trainer.resume={earlier}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert load(earlier)["step"] == 6 and [r["step"] for r in records(earlier)][-1] == 6


def test_a_folder_with_only_metrics_is_kept_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 2, "loss/D": 1.0}\n')
    before = snapshot(run)
    res = run_cli(*ARGS, "trainer.steps=2", cwd=tmp_path)
    assert_refused(res, run)
    assert snapshot(run) == before


def test_auto_or_another_run_into_a_folder_holding_a_run_is_refused(earlier: Path, tmp_path: Path) -> None:
    before = snapshot(earlier)
    other = run_cli(*GAUSS, "trainer.steps=2", "hydra.run.dir=other", cwd=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    other_before = snapshot(tmp_path / "other")
    for extra in (
        ["trainer.seed=5", "trainer.resume=auto"],  # no run with this config: auto would start afresh here
        [f"trainer.resume={tmp_path / 'other'}"],  # continues another run: this folder is not its own
    ):
        res = run_cli(*ARGS, "trainer.steps=6", *extra, cwd=tmp_path)
        assert_refused(res, earlier)
    assert snapshot(earlier) == before
    assert snapshot(tmp_path / "other") == other_before


def test_auto_falls_back_to_a_numbered_checkpoint_when_last_is_damaged(earlier: Path, tmp_path: Path) -> None:
    last = earlier / "checkpoints" / "last.pt"
    last.unlink()  # step_000004.pt, a hard link to the same bytes, stays whole
    last.write_bytes(b"broken")
    res = run_cli(*ARGS, "trainer.steps=6", "trainer.resume=auto", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"resumed from {earlier / 'checkpoints' / 'step_000004.pt'} at step 4" in out, out
    assert "starting afresh" not in out
    assert load(earlier)["step"] == 6
    assert [r["step"] for r in records(earlier)] == [2, 4, 6], "one run, continued"


def test_a_refused_run_removes_nothing_an_earlier_one_left(tmp_path: Path) -> None:
    """An earlier invocation's log and Hydra files (a run that crashed at once) stay when this one fails."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("earlier: 1\n")
    (run / "earlier.log").write_text("what happened before\n")
    res = run_cli(*ARGS, "trainer.steps=2", "optimizer.lr=-1", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert (run / "earlier.log").read_text() == "what happened before\n"


def test_refuse_earlier_run(tmp_path: Path) -> None:
    resume.refuse_earlier_run(tmp_path, None)  # nothing there
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_000010.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds a run"):
        resume.refuse_earlier_run(tmp_path, None)
    with pytest.raises(ConfigError, match="already holds a run"):
        resume.refuse_earlier_run(tmp_path, tmp_path / "elsewhere")
    resume.refuse_earlier_run(tmp_path, tmp_path)  # a resume of the run in it
