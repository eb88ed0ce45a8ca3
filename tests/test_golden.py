"""Seeded CPU runs whose every logged number and final weights are pinned: the training core may be
reshaped freely, but these runs must give exactly the recorded values.

Each run names every option its numbers depend on (widths, loss, optimizer and rate, precision,
threads), so a later change of a default leaves them alone. To record them anew after a change that
is meant to alter the numbers: GAN_CLI_RECORD_GOLDEN=1 pytest tests/test_golden.py.
CPU kernels round differently per instruction set and per vendor (MKL and oneDNN choose other kernels on
Intel's CPUs than on AMD's), so the numbers are kept per `torch.backends.cpu.get_cpu_capability()` (AVX2,
AVX512, ...) and vendor, in folders such as AVX512-AMD; on a CPU with none recorded the runs are skipped
until they are recorded there. A CPU with AVX512 can run (and record) the AVX2 numbers too, with torch's
and oneDNN's kernels held to AVX2: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 pytest ...
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import script
from tests.runs import records

pytestmark = pytest.mark.slow  # runs in make test; make test-fast leaves it out


def cpu_vendor() -> str:
    """AMD, Intel or other: the vendor named in /proc/cpuinfo (other where there is none)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "other"
    names = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}
    return next((short for full, short in names.items() if full in info), "other")


GOLDEN = Path(__file__).with_name("golden") / f"{torch.backends.cpu.get_cpu_capability()}-{cpu_vendor()}"
RECORD = os.environ.get("GAN_CLI_RECORD_GOLDEN") == "1"
STEPS = 200

PINNED = [
    "trainer.device=cpu",
    "trainer.threads=1",
    f"trainer.steps={STEPS}",
    "trainer.epochs=null",
    "trainer.max_minutes=null",
    "trainer.batch_size=16",
    "trainer.seed=3",
    "trainer.precision=32",
    "trainer.channels_last=false",
    "trainer.checkpoint_every=100",
    "trainer.compile=false",
    "optimizer=adam",
    "optimizer.lr=2e-4",
    "optimizer.betas=[0.5,0.999]",
    "optimizer.fused=true",
    "loss.r1_gamma=0",
    "loss.r2_gamma=0",
    "loss.reg_every=1",
    "data.download=false",
    "logger.log_every=10",
    "logger.sample_every=100",
    "logger.num_samples=16",
    "logger.progress=false",
    "logger.metrics=[]",
]
DCGAN = [
    "model=dcgan",
    "model.z_dim=16",
    "model.g_width=8",
    "model.d_width=8",
    "model.spectral_norm=false",
    "model.mbstd_group=0",
]
PLAIN = [*DCGAN, "model.conditional=false"]
CASES: dict[str, list[str]] = {
    "mlp": [
        "model=mlp",
        "model.z_dim=16",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
        "model.ema_decay=0",
        "model.conditional=false",
        "loss=nonsaturating",
        "loss.n_critic=1",
    ],
    "dcgan": [*PLAIN, "model.ema_decay=0", "loss=nonsaturating", "loss.n_critic=1"],
    "dcgan_hinge_ncritic2": [*PLAIN, "model.ema_decay=0", "loss=hinge", "loss.n_critic=2"],
    "wgan_gp": [*PLAIN, "model.ema_decay=0", "loss=wgan_gp", "loss.n_critic=2", "loss.gp_weight=10"],
    "conditional_ema": [
        *DCGAN,
        "model.conditional=true",
        "model.ema_decay=0.99",
        "loss=nonsaturating",
        "loss.n_critic=1",
    ],
}
RESUMED = "dcgan"  # the case that is also killed after its first checkpoint and resumed
SCALAR_SKIP = ("perf/",)  # timings differ from run to run


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out.pop("GAN_CLI_DATA", None)
    return out


def command(name: str, root: Path, run: str) -> list[str]:
    return [script("gan-train"), *PINNED, *CASES[name], f"data.root={root}", f"hydra.run.dir={run}"]


def digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for key, value in state.items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def observed(run: Path) -> dict:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    logged = [{k: v for k, v in r.items() if not k.startswith(SCALAR_SKIP)} for r in records(run)]
    weights = {net: digest(state[net]) for net in ("G", "D", "G_ema") if net in state}
    return {"step": state["step"], "records": logged, "weights": weights}


def require_recorded(name: str) -> None:
    """Skip before training when this CPU's instruction set has no numbers to compare with."""
    if not RECORD and not (GOLDEN / f"{name}.json").is_file():
        pytest.skip(f"no numbers recorded for {GOLDEN.name} CPUs: GAN_CLI_RECORD_GOLDEN=1 pytest {__file__}")


def check(name: str, got: dict) -> None:
    path = GOLDEN / f"{name}.json"
    if RECORD:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
        return
    want = json.loads(path.read_text(encoding="utf-8"))
    assert got["step"] == want["step"] == STEPS
    assert len(got["records"]) == len(want["records"]) == STEPS // 10
    for mine, theirs in zip(got["records"], want["records"], strict=True):
        assert mine == theirs, f"step {theirs['step']}: logged {mine}, recorded {theirs}"
    assert got["weights"] == want["weights"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_run_matches_its_recorded_numbers(name: str, tmp_path: Path, mnist_root: Path) -> None:
    require_recorded(name)
    res = subprocess.run(
        command(name, mnist_root, "run"), cwd=tmp_path, capture_output=True, text=True, env=env(), timeout=600
    )
    assert res.returncode == 0, res.stderr + res.stdout
    check(name, observed(tmp_path / "run"))


def test_killed_and_resumed_run_matches_the_recorded_numbers(tmp_path: Path, mnist_root: Path) -> None:
    """SIGKILL once the first checkpoint exists, resume: the same numbers as the uninterrupted run."""
    require_recorded(RESUMED)
    run = tmp_path / "run"
    first = run / "checkpoints" / "step_000100.pt"
    proc = subprocess.Popen(
        command(RESUMED, mnist_root, "run"),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    res = subprocess.run(
        [*command(RESUMED, mnist_root, "again"), f"trainer.resume={run}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "resumed from" in res.stdout + res.stderr
    if not RECORD:
        check(RESUMED, observed(run))
