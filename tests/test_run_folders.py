"""One process writes a run folder: a folder in use is refused (naming the process that holds it), a
default name in use becomes the next free one, and a killed run never leaves its folder locked."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_cli import folder_lock
from gan_cli.folder_lock import FolderInUse
from tests.conftest import run_cli
from tests.runs import GAUSS, load, records
from tests.test_distributed import torchrun
from tests.test_signals import start, wait_for_training

pytestmark = pytest.mark.slow  # real processes

SHORT = [*GAUSS, "trainer.steps=4", "trainer.checkpoint_every=2"]
EVERY_STEP = [*GAUSS, "trainer.checkpoint_every=2", "logger.log_every=1"]
RUNNING = [*EVERY_STEP, "trainer.steps=1000000"]  # until stopped


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    proc.send_signal(sig)
    return proc.communicate(timeout=120)[0]


def test_a_named_folder_in_use_is_refused_until_its_run_is_killed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(tmp_path, *RUNNING, "hydra.run.dir=run")
    wait_for_training(run, first)
    overrides = (run / ".hydra" / "overrides.yaml").read_text()

    second = run_cli(*SHORT, "trainer.seed=7", "hydra.run.dir=run", cwd=tmp_path)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"{run} is in use by another gan-train (process {first.pid} on " in second.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides, "Hydra's files are the first run's"
    assert "trainer.seed=7" not in (run / "train.log").read_text()

    wait_for(tmp_path, "run/checkpoints/last.pt", first)
    stop(first, signal.SIGKILL)  # the lock dies with the process
    stopped = load(run)["step"]
    third = run_cli(*EVERY_STEP, f"trainer.steps={stopped + 2}", f"trainer.resume={run}", cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert load(run)["step"] == stopped + 2


def test_resume_auto_refuses_a_run_still_training_and_takes_it_once_stopped(tmp_path: Path) -> None:
    first = start(tmp_path, *RUNNING)
    (run,) = wait_for(tmp_path / "outputs", "*/*/checkpoints/last.pt", first)

    again = run_cli(*EVERY_STEP, "trainer.steps=40", "trainer.resume=auto", cwd=tmp_path)
    assert again.returncode == 2, again.stdout + again.stderr
    assert f"{run} is in use by another gan-train (process {first.pid} on " in again.stdout + again.stderr
    assert list((tmp_path / "outputs").glob("*/*")) == [run], "the refused run's folder is gone"

    out = stop(first, signal.SIGTERM)
    assert first.returncode == 128 + signal.SIGTERM, out
    stopped = load(run)["step"]
    again = run_cli(*EVERY_STEP, f"trainer.steps={stopped + 2}", "trainer.resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from {run}/checkpoints/last.pt at step {stopped}" in again.stdout + again.stderr
    assert records(run)[-1]["step"] == stopped + 2
    assert list((tmp_path / "outputs").glob("*/*")) == [run], "the resume's own folder is folded in"


def wait_for(outputs: Path, checkpoint: str, proc: subprocess.Popen[str]) -> list[Path]:
    """The run folders under `outputs` once one holds a checkpoint."""
    deadline = time.monotonic() + 120
    while not list(outputs.glob(checkpoint)):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    return [p.parent.parent for p in outputs.glob(checkpoint)]


def taken(pattern: str, seconds: int = 120) -> list[Path]:
    """The default folders of every second from now on, made in advance: a run started now finds its
    name taken, as when another run started in the same second."""
    now = datetime.datetime.now()
    times = [now + datetime.timedelta(seconds=s) for s in range(seconds)]
    return [Path(t.strftime(pattern)) for t in times]


def test_a_default_name_in_use_becomes_the_next_free_one(tmp_path: Path) -> None:
    folders = taken(str(tmp_path / "outputs" / "%Y-%m-%d" / "%H-%M-%S_gaussians_mlp"))
    for folder in folders:
        (folder / "checkpoints").mkdir(parents=True)
    res = run_cli(*SHORT, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = (p.parent.parent for p in (tmp_path / "outputs").glob("*/*/checkpoints/last.pt"))
    assert run.name.endswith("_gaussians_mlp-2") and run.with_name(run.name[:-2]) in folders
    assert all(list(f.iterdir()) == [f / "checkpoints"] for f in folders), "the taken folders are untouched"
    assert f"outputs in {run}" in res.stderr


def test_a_sweep_with_its_default_folder_in_use_goes_to_the_next_free_one(tmp_path: Path) -> None:
    folders = taken(str(tmp_path / "outputs" / "multirun" / "%Y-%m-%d" / "%H-%M-%S"))
    for folder in folders:
        folder.mkdir(parents=True)
    res = run_cli("-m", *SHORT, "trainer.seed=1,2", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (sweep,) = (p.parent for p in (tmp_path / "outputs" / "multirun").glob("*/*/summary.md"))
    assert sweep.name.endswith("-2") and sweep.with_name(sweep.name[:-2]) in folders
    statuses = {p.parent.name[:2]: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    assert sorted(statuses) == ["0_", "1_"] and all(s["status"] == "ok" for s in statuses.values())


def test_a_sweep_folder_in_use_is_refused(tmp_path: Path) -> None:
    folder_lock.acquire(tmp_path / "sweep")  # as a running sweep holds it
    try:
        res = run_cli("-m", *SHORT, "trainer.seed=1,2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    finally:
        folder_lock.release(tmp_path / "sweep")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{tmp_path / 'sweep'} is in use by another gan-train (process " in res.stderr
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == [".lock"], "nothing written"


def test_the_lock_is_per_process_and_counted(tmp_path: Path) -> None:
    child = [sys.executable, "-c", "import pathlib, gan_cli.folder_lock as f; f.acquire(pathlib.Path('run'))"]
    with folder_lock.hold(tmp_path / "run"), folder_lock.hold(tmp_path / "run"):
        assert not folder_lock.held_elsewhere(tmp_path / "run"), "held here, by this process"
        res = subprocess.run(child, cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode != 0 and FolderInUse.__name__ in res.stderr
    res = subprocess.run(child, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_refused_config_leaves_no_folder_and_no_lock(tmp_path: Path) -> None:
    res = run_cli(*SHORT, "trainer.batch_size=0", "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2 and "trainer.batch_size=0 is not valid" in res.stderr
    assert not (tmp_path / "run").exists()


def test_only_rank_zero_of_torchrun_locks(tmp_path: Path) -> None:
    res = torchrun(*SHORT, "hydra.run.dir=ddp", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert load(tmp_path / "ddp")["step"] == 4 and "in use" not in res.stdout + res.stderr
