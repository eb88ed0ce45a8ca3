"""Ctrl-C and SIGTERM: a checkpoint at the next step boundary, a clean exit, and a working resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, script
from tests.runs import GAUSS, load, records, same_weights

LONG = [*GAUSS, "trainer.steps=1000000", "trainer.checkpoint_every=1000000", "logger.log_every=5"]


def start(cwd: Path, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GAN_CLI_DATA", None)
    return subprocess.Popen(
        [script("gan-train"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=new_session,  # its own process group, as a terminal gives it
    )


def wait_for_training(run: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)


def wait_for_file(path: Path, proc: subprocess.Popen[str], failure: str) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, failure
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_exits_with_a_resume_hint(tmp_path: Path, sig: signal.Signals) -> None:
    run = tmp_path / "run"
    proc = start(tmp_path, *LONG, "hydra.run.dir=run")
    wait_for_training(run, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out
    assert f"stopped by {sig.name} at step" in out and "Traceback" not in out
    hint = out.split("Resume with:")[1].split()
    assert hint[0] == "gan-train" and f"trainer.resume={run.absolute()}" in hint
    stopped = load(run)["step"]
    assert stopped > 0 and records(run)[-1]["step"] == stopped

    if sig == signal.SIGTERM:  # the resume continues the same run, step for step
        more = [
            *LONG[:-3],
            f"trainer.steps={stopped + 7}",
            "trainer.checkpoint_every=1000000",
            "logger.log_every=5",
        ]
        res = run_cli(*more, "hydra.run.dir=again", f"trainer.resume={run}", cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert load(run)["step"] == stopped + 7
        steps = [r["step"] for r in records(run)]
        assert steps == sorted(set(steps)), "no step logged twice or backwards"
        ref = run_cli(*more, "hydra.run.dir=ref", cwd=tmp_path)
        assert ref.returncode == 0, ref.stdout + ref.stderr
        assert same_weights(load(run), load(tmp_path / "ref"))


CHILD = textwrap.dedent(
    """
    import os, signal, time
    from gan_cli.signals import GracefulStop
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        print("first:", stop.name, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)
        print("still running", flush=True)
    """
)


def test_a_second_interrupt_exits_at_once() -> None:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130, res.stdout + res.stderr
    assert "first: SIGTERM" in res.stdout and "still running" not in res.stdout
    assert "second interrupt: exiting now" in res.stderr
    assert time.monotonic() - t0 < 9


def test_handlers_are_restored() -> None:
    from gan_cli.signals import GracefulStop

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with GracefulStop() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.name == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.slow
def test_ctrl_c_to_the_whole_process_group_with_loader_workers(tmp_path: Path, folder_root: Path) -> None:
    """A terminal's Ctrl-C reaches the data loader's workers too; they leave the stop to the main process."""
    args = [
        "data=image_folder",
        f"data.root={folder_root}",
        "data.image_size=8",
        "data.in_memory=false",
        "data.num_workers=2",
        "model=mlp",
        "trainer.device=cpu",
        "trainer.epochs=null",
        "trainer.steps=1000000",
        "trainer.batch_size=4",
        "trainer.checkpoint_every=1000000",
        "logger.log_every=2",
        "logger.sample_every=0",
        "logger.progress=false",
        "hydra.run.dir=run",
    ]
    proc = start(tmp_path, *args, new_session=True)
    wait_for_training(tmp_path / "run", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopped by SIGINT" in out and "Traceback" not in out
    assert load(tmp_path / "run")["step"] == records(tmp_path / "run")[-1]["step"]


@pytest.mark.slow
def test_sigterm_stops_every_process_of_a_distributed_run_at_the_same_step(tmp_path: Path) -> None:
    """torchrun passes SIGTERM on to each process; they stop together and rank 0 saves."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GAN_CLI_DATA", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "gan_cli", *LONG, "hydra.run.dir=run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    run = tmp_path / "run"
    wait_for_training(run, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert "stopped by SIGTERM at step" in out, out
    stopped = load(run)["step"]
    assert stopped % 5 == 0 and records(run)[-1]["step"] == stopped, "at a logged step (log_every=5)"
    assert "Traceback" not in out.split("stopped by SIGTERM")[0]


SLOW_START = """
import pathlib, time
pathlib.Path("starting").write_text("")
time.sleep(60)
"""


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path: Path) -> None:
    """A plugin that takes its time to import holds the run in its start-up, where Ctrl-C lands."""
    (tmp_path / "slow_start.py").write_text(SLOW_START)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path)}
    env.pop("GAN_CLI_DATA", None)
    cmd = [script("gan-train"), *GAUSS, "plugins=[slow_start]", "hydra.run.dir=run"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_file(tmp_path / "starting", proc, "the run did not reach its plugins")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and out.strip().splitlines()[-1] == "gan-train: interrupted (Ctrl-C)"
    assert not (tmp_path / "run").exists(), "a run stopped before it trained leaves no folder"


SLOW_TORCH_IMPORT = """
import pathlib, sys, time
class SlowTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            pathlib.Path("importing").write_text("")
            time.sleep(60)
        return None
sys.meta_path.insert(0, SlowTorch())
"""


@pytest.mark.parametrize("name", ["gan-train", "gan-sample"])
def test_ctrl_c_while_importing_is_one_line_and_130(tmp_path: Path, name: str) -> None:
    """A sitecustomize that holds the first import of torch, where the command's imports begin."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_TORCH_IMPORT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [script(name), "--help"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_file(tmp_path / "importing", proc, "the command did not reach its imports")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and err.strip() == f"{name}: interrupted (Ctrl-C)"
