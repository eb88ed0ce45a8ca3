"""Resuming the jobs of a sweep: the printed command works when pasted into a shell, and resume=auto in a
sweep continues only the job's own folder."""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from gan_cli.resume import hydra_value, resume_command, shell_word
from tests.conftest import run_cli
from tests.runs import GAUSS, load, records
from tests.test_signals import start

AWKWARD = [
    "/runs/sweep/0_loss.n_critic=1,optimizer.lr=0.0001",
    "/runs/a|b/c d",
    "/runs/it's/here",
    "/runs/back\\slash'/end\\",
    "/runs/plain-name_1.5",
]


@pytest.mark.parametrize("path", AWKWARD)
def test_the_resume_value_reads_back_through_the_shell_and_hydra(path: str) -> None:
    word = f"trainer.resume={hydra_value(path)}"
    (again,) = shlex.split(shell_word(word))
    assert OverridesParser.create().parse_overrides([again])[0].value() == path


def test_the_resume_command_reads_well() -> None:
    command = resume_command(
        Path(AWKWARD[0]), ["loss.n_critic=1", "optimizer.lr=0.0001", "trainer.resume=auto"]
    )
    assert command == (
        "gan-train loss.n_critic=1 optimizer.lr=0.0001 "
        "\"trainer.resume='/runs/sweep/0_loss.n_critic=1,optimizer.lr=0.0001'\""
    )
    assert resume_command(Path(AWKWARD[-1]), []) == f"gan-train trainer.resume={AWKWARD[-1]}"


def wait_for_step(run: Path, proc, after: int) -> None:
    """Until `run` has logged a step beyond `after`."""
    deadline = time.monotonic() + 120
    while not ((run / "metrics.jsonl").is_file() and records(run) and records(run)[-1]["step"] > after):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)


@pytest.mark.slow
def test_a_stopped_sweep_job_resumes_with_the_printed_command(tmp_path: Path) -> None:
    long = [*GAUSS, "trainer.steps=1000000", "trainer.checkpoint_every=1000000", "logger.log_every=1"]
    sweep = start(tmp_path, "-m", *long, "loss.n_critic=1,2", "optimizer.lr=1e-4", "hydra.sweep.dir=sweep")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "sweep").glob("0_*/metrics.jsonl")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.02)
    (job,) = (tmp_path / "sweep").glob("0_*")
    assert "=" in job.name and "," in job.name, "a folder name the shell and Hydra both need quoted"
    wait_for_step(job, sweep, 0)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, out
    stopped = load(job)["step"]

    printed = out.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    words = shlex.split(printed)
    assert words[0] == "gan-train", printed
    resumed = start(tmp_path, *words[1:])
    wait_for_step(job, resumed, stopped)
    resumed.send_signal(signal.SIGTERM)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 128 + signal.SIGTERM, out
    assert f"resumed from {job}/checkpoints/last.pt at step {stopped}" in out
    assert load(job)["step"] > stopped and records(job)[-1]["step"] == load(job)["step"]


@pytest.mark.slow
def test_resume_auto_in_a_sweep_keeps_each_job_in_its_own_folder(tmp_path: Path) -> None:
    args = ["-m", *GAUSS, "trainer.steps=4,6", "trainer.resume=auto", "hydra.sweep.dir=sweep"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {
        p.parent.parent.name: load(p.parent.parent)["step"] for p in (tmp_path / "sweep").glob("*/*/last.pt")
    }
    assert sorted((name[:2], step) for name, step in jobs.items()) == [("0_", 4), ("1_", 6)], "two runs"
    assert "resumed from" not in res.stdout + res.stderr

    again = run_cli(*args, cwd=tmp_path)  # the same sweep again (a requeue): each job finds its own run
    assert again.returncode == 0, again.stdout + again.stderr
    for job, step in jobs.items():
        assert f"resumed from {tmp_path / 'sweep' / job}/checkpoints/last.pt at step {step}" in again.stderr
        assert json.loads((tmp_path / "sweep" / job / "status.json").read_text())["status"] == "ok"
