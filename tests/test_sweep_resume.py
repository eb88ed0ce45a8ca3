"""Resuming the jobs of a sweep: the printed command works when pasted into a shell, and resume=auto in a
sweep continues only the job's own folder."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import signal
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from gan_cli.resume import hydra_value, resume_command, shell_word
from tests.conftest import run_cli
from tests.kill_at import run_killed
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

    again = run_cli(*args, cwd=tmp_path)  # the same sweep again: each job finds its own finished run
    assert again.returncode == 0, again.stdout + again.stderr
    for job in jobs:
        assert f"finished earlier: skipped, {tmp_path / 'sweep' / job} left as it is" in again.stdout
        assert json.loads((tmp_path / "sweep" / job / "status.json").read_text())["status"] == "ok"
    assert "resumed from" not in again.stdout + again.stderr

    # a sweeper that launches every job (Hydra's own basic one): each finished job still does nothing
    ckpts = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/checkpoints/*.pt")}
    plain = run_cli(
        *args, "hydra.sweeper._target_=hydra._internal.core_plugins.basic_sweeper.BasicSweeper", cwd=tmp_path
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert (plain.stdout + plain.stderr).count("this job finished earlier") == 2
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts


# four jobs of 30 steps, a checkpoint every 10; the sweep is SIGKILLed at step 25 of the third job
FOUR = [
    "-m",
    *GAUSS,
    "logger.log_every=1",
    "trainer.steps=30",
    "trainer.epochs=null",
    "trainer.checkpoint_every=10",
    "hydra.sweep.dir=sweep",
]


def killed_sweep(cwd: Path, *args: str, job: int = 2, step: int = 25) -> None:
    """Run `gan-train *args` in a process that SIGKILLs itself after logging `step` of sweep job #`job`."""
    run_killed(cwd, *args, KILL_AT=f"log:{step}", KILL_JOB=str(job))


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its SHA-256 and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def job_folder(sweep: Path, number: int) -> Path:
    (folder,) = [p for p in sweep.iterdir() if p.is_dir() and p.name.split("_")[0] == str(number)]
    return folder


def trial_values(folder: Path) -> list[str]:
    saved = (folder / ".hydra" / "overrides.yaml").read_text().splitlines()
    return sorted(line for line in saved if "trainer.resume" not in line)


def status(folder: Path) -> str | None:
    path = folder / "status.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None


@pytest.mark.slow
def test_a_killed_sweep_run_again_skips_finished_jobs_and_continues_the_rest(tmp_path: Path) -> None:
    args = [*FOUR, "trainer.seed=1,2,3,4"]
    killed_sweep(tmp_path, *args)
    sweep = tmp_path / "sweep"
    first, second, third = (job_folder(sweep, n) for n in range(3))
    assert [status(first), status(second), status(third)] == ["ok", "ok", None]
    assert not [p for p in sweep.iterdir() if p.name.startswith("3_")], "job 4 never started"
    assert load(third)["step"] == 20
    before = {f: snapshot(f) for f in (first, second)}

    res = run_cli(*args, "trainer.resume=auto", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for folder in (first, second):
        assert snapshot(folder) == before[folder], f"{folder.name} was touched"
        assert f"finished earlier: skipped, {folder} left as it is" in out
    assert f"resumed from {third}/checkpoints/last.pt at step 20" in out
    fourth = job_folder(sweep, 3)
    assert "resumed from" not in (fourth / "train.log").read_text()
    for folder in (third, fourth):
        assert status(folder) == "ok" and load(folder)["step"] == 30
        assert [r["step"] for r in records(folder) if "loss/D" in r] == list(range(1, 31))
    summary = (sweep / "summary.md").read_text()
    jobs = [
        line.split("|")[1].strip()
        for line in summary.splitlines()
        if line[:3] in {f"| {n}" for n in range(9)}
    ]
    assert sorted(jobs) == ["0", "1", "2", "3"], summary
    assert "trainer.resume" not in summary, "how a job continues is not what it explored"
    report = run_cli("sweep", "--format", "csv", cwd=tmp_path, name="gan-sweep-report")
    assert report.returncode == 0, report.stderr
    assert len(report.stdout.strip().splitlines()) == 1 + 4 and "failed" not in report.stdout

    again = run_cli(*args, "trainer.resume=auto", cwd=tmp_path)  # nothing left to do: nothing runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("finished earlier: skipped") == 4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # Optuna 2 on SQLAlchemy 1.4
def test_a_killed_optuna_study_goes_on_with_its_trials(tmp_path: Path) -> None:
    args = [
        *FOUR,
        "hparams_search=gan_optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.n_startup_trials=4",
    ]
    killed_sweep(tmp_path, *args)
    sweep = tmp_path / "sweep"
    assert (sweep / "optuna.db").is_file()
    first, second, third = (sweep / str(n) for n in range(3))
    assert [status(first), status(second), status(third)] == ["ok", "ok", None]
    assert load(third)["step"] == 20
    values_of_third = trial_values(third)
    before = {f: snapshot(f) for f in (first, second)}

    res = run_cli(*args, "trainer.resume=auto", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "2 trials finished, 1 to run again (2)" in out
    for folder in (first, second):
        assert snapshot(folder) == before[folder], f"trial {folder.name} was touched"
    assert f"resumed from {third}/checkpoints/last.pt at step 20" in out
    assert trial_values(third) == values_of_third, "the same trial, with the same values"
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert all(status(sweep / str(n)) == "ok" for n in range(4))

    import optuna

    study = optuna.load_study(study_name="gan_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == ["COMPLETE"] * 4, states


@pytest.mark.slow
def test_a_job_killed_before_its_first_checkpoint_starts_again(tmp_path: Path) -> None:
    args = [*FOUR, "trainer.seed=1,2"]
    killed_sweep(tmp_path, *args, job=1, step=5)
    job = job_folder(tmp_path / "sweep", 1)
    assert [r["step"] for r in records(job)] == [1, 2, 3, 4, 5] and not (job / "checkpoints").exists()

    res = run_cli(*args, "trainer.resume=auto", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "held no checkpoint to continue: the job starts again" in out
    (aside,) = (job / "interrupted").iterdir()
    assert [json.loads(line)["step"] for line in (aside / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert status(job) == "ok" and [r["step"] for r in records(job) if "loss/D" in r] == list(range(1, 31))


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]],
    ids=["parallel", "submitit"],
)
def test_a_sweep_run_again_launches_only_the_missing_job(tmp_path: Path, launcher: list[str]) -> None:
    args = [*FOUR, "trainer.seed=1,2,3", *launcher, "trainer.resume=auto"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    sweep = tmp_path / "sweep"
    kept = [job_folder(sweep, n) for n in (0, 2)]
    before = {f: snapshot(f) for f in kept}
    shutil.rmtree(job_folder(sweep, 1))  # as if the sweep had stopped before job 2 started

    again = run_cli(*args, cwd=tmp_path)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    for folder in kept:
        assert snapshot(folder) == before[folder]
        assert f"finished earlier: skipped, {folder} left as it is" in out
    assert status(job_folder(sweep, 1)) == "ok" and load(job_folder(sweep, 1))["step"] == 30
    assert "resumed from" not in (job_folder(sweep, 1) / "train.log").read_text()
