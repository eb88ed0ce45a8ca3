"""`trainer.threads`: how many CPU threads torch computes with, and what `auto` picks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.types import RunMode
from omegaconf import open_dict

from gan_cli import device
from gan_cli.cli import jobs_at_once
from tests.conftest import QUICK, run_cli, script
from tests.runs import make_cfg, train

GAUSS = [*QUICK, "experiment=gaussians_demo", "trainer.steps=2", "logger.sample_every=0"]


def run_without_omp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GAN_CLI_DATA")}
    cmd = [script("gan-train"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_auto_shares_the_usable_cores_among_parallel_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "usable_cores", lambda: 8)
    assert device.cpu_threads("auto")[0] == 8
    assert device.cpu_threads("auto", jobs_at_once=4) == (2, "auto: 8 usable cores / 4 jobs at once")
    assert device.cpu_threads("auto", jobs_at_once=16)[0] == 1
    assert device.cpu_threads(3, jobs_at_once=4) == (3, "trainer.threads=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert device.cpu_threads("auto", jobs_at_once=4) == (5, "auto: OMP_NUM_THREADS=5")


def test_usable_cores_follow_the_affinity_mask() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this system")
    assert device.usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("n_jobs", "expected"), [(3, 3), (-1, "cores"), (1, 1)])
def test_a_joblib_sweep_counts_its_jobs_at_once(
    n_jobs: int, expected: int | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gan_cli.cli.usable_cores", lambda: 6)
    with initialize_config_module(config_module="gan_cli.configs", version_base="1.3"):
        overrides = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
        hc = compose("train", overrides=overrides, return_hydra_config=True).hydra
        basic = compose("train", return_hydra_config=True).hydra
    with open_dict(hc), open_dict(basic):
        hc.mode = basic.mode = RunMode.MULTIRUN
    assert jobs_at_once(hc) == (6 if expected == "cores" else expected)
    assert jobs_at_once(basic) == 1


def test_the_chosen_threads_are_logged_and_used(tmp_path: Path) -> None:
    # New processes: OpenMP reads OMP_NUM_THREADS when torch loads it, which a forked child cannot redo.
    res = run_cli(*GAUSS, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, fresh=True)
    assert res.returncode == 0, res.stderr
    assert "CPU threads: 1 (auto: OMP_NUM_THREADS=1)" in res.stderr
    res = run_without_omp(*GAUSS, "hydra.run.dir=again", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"CPU threads: {device.usable_cores()} (auto: {device.usable_cores()} usable cores)" in res.stderr
    before = torch.get_num_threads()
    try:
        train(make_cfg(tmp_path / "inproc", "trainer.steps=2", "trainer.threads=1"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_invalid_threads_are_refused(tmp_path: Path, value: str) -> None:
    res = run_cli(*GAUSS, f"trainer.threads={value}", cwd=tmp_path)
    assert res.returncode == 2
    assert f"trainer.threads={value!r}" in res.stderr or f"trainer.threads={value}" in res.stderr
    assert "give auto or a number of threads" in res.stderr and "Traceback" not in res.stderr


def test_a_resume_may_change_the_threads(tmp_path: Path) -> None:
    first = make_cfg(tmp_path / "run", "trainer.steps=2", "trainer.threads=1")
    train(first)
    before = torch.get_num_threads()
    try:
        again = make_cfg(
            tmp_path / "x", "trainer.steps=4", "trainer.threads=2", f"trainer.resume={first.out}"
        )
        assert train(again)["step"] == 4
    finally:
        torch.set_num_threads(before)
