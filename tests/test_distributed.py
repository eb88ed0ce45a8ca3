"""One run on two CPU processes (torchrun, gloo): the same numbers as one process with the same global
batch, one set of outputs, and a checkpoint that resumes on another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from gan_cli import distributed
from gan_cli.datasets import Batches, Data
from gan_cli.errors import ConfigError
from tests.conftest import run_cli

ARGS = [
    "model=mlp",
    "trainer.device=cpu",
    "trainer.epochs=null",
    "trainer.batch_size=8",
    "logger.log_every=1",
    "logger.sample_every=2",
    "logger.num_samples=16",
    "data.download=false",
]


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GAN_CLI_DATA", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*cmd, "-m", "gan_cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, mnist_root: Path) -> None:
    data = f"data.root={mnist_root}"
    res = torchrun(*ARGS, data, "trainer.steps=4", "hydra.run.dir=ddp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    single = run_cli(*ARGS, data, "trainer.steps=6", "hydra.run.dir=one", cwd=tmp_path)
    assert single.returncode == 0, single.stderr + single.stdout

    # one set of outputs, written by rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]
    ddp = tmp_path / "ddp"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(
        [".hydra", ".lock", "checkpoints", "metrics.jsonl", "samples", "status.json", "tb", "train.log"]
    )
    assert len(list((ddp / "tb").iterdir())) == 1
    assert "process 0 of 2" in (ddp / "train.log").read_text()
    assert "process 1 of 2" not in (ddp / "train.log").read_text()

    # the same losses, scores and gradient norms as one process with the same global batch of 8
    keys = ["loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"]
    two, one = records(ddp), records(tmp_path / "one")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(two, one[:4], strict=True):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-4, abs=1e-5)

    # a checkpoint of two processes resumes on one and continues the same run, in its folder
    state = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and not any(k.startswith("module.") for k in state["G"])
    res = run_cli(*ARGS, data, "trainer.steps=6", "trainer.resume=ddp", "hydra.run.dir=resumed", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert not (tmp_path / "resumed").exists()
    assert [r["step"] for r in records(ddp)] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(records(ddp)[4:], one[4:], strict=True):
        assert a["step"] == b["step"] and [a[k] for k in keys] == pytest.approx(
            [b[k] for k in keys], rel=1e-4
        )


@pytest.mark.slow
@pytest.mark.parametrize("every", ["1", "3"])
def test_r1_in_two_processes_matches_one(tmp_path: Path, mnist_root: Path, every: str) -> None:
    """R1 inside D's update (through DDP) and as a lazy update of its own (its gradients averaged by
    hand) give one process's numbers."""
    over = [f"data.root={mnist_root}", "trainer.steps=4", "loss.r1_gamma=1", f"loss.reg_every={every}"]
    res = torchrun(*ARGS, *over, "hydra.run.dir=ddp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    single = run_cli(*ARGS, *over, "hydra.run.dir=one", cwd=tmp_path)
    assert single.returncode == 0, single.stderr + single.stdout
    keys = ["loss/D", "loss/r1", "grad_norm/D", "loss/G", "grad_norm/G"]
    two, one = records(tmp_path / "ddp"), records(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for a, b in zip(two, one, strict=True):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-4, abs=1e-6)
    assert ("grad_norm/Dreg" in two[0]) == (every != "1")


@pytest.mark.parametrize("in_memory", [True, False])
def test_shards_are_disjoint_slices_of_the_global_batch(in_memory: bool) -> None:
    points = torch.arange(40.0).unsqueeze(1)
    if in_memory:
        data = Data(kind="points", shape=(1,), num_classes=0, tensor=points)
    else:  # streamed by a DataLoader, as large image folders are
        dataset = TensorDataset(points, torch.zeros(40, dtype=torch.long))
        data = Data(kind="points", shape=(1,), num_classes=0, dataset=dataset)
    cpu = torch.device("cpu")
    whole = Batches(data, 8, cpu, seed=3, num_workers=0)
    parts = [Batches(data, 8, cpu, seed=3, num_workers=0, shard=(r, 2)) for r in range(2)]
    for _ in range(7):  # across an epoch boundary (5 batches an epoch)
        x = whole.next()[0]
        assert torch.equal(torch.cat([p.next()[0] for p in parts]), x)
    assert parts[0].position == whole.position
    for p in parts:  # a resume in the middle of an epoch continues the same shards
        p.seek(1, 3)
    whole.seek(1, 3)
    assert torch.equal(torch.cat([p.next()[0] for p in parts]), whole.next()[0])


def test_batch_must_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="trainer.batch_size=8 .* cannot be split evenly over 3 processes"):
        distributed.setup(torch.device("cpu"), 8)
    assert distributed.worker_overrides(["a=1"]) == ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def test_single_process_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = distributed.setup(torch.device("cpu"), 7)
    module = torch.nn.Linear(2, 2)
    assert not dist.enabled and dist.is_main and dist.wrap(module) is module
    assert distributed.worker_overrides([]) == []


@pytest.mark.slow
def test_time_driven_lr_decay_runs_on_rank_zeros_clock(tmp_path: Path, mnist_root: Path) -> None:
    over = [
        "trainer.steps=40",
        "trainer.max_minutes=0.05",
        "optimizer.lr_decay=linear",
        "optimizer.lr_decay_start=0",
        "optimizer.lr=2e-4",
    ]
    res = torchrun(*ARGS, f"data.root={mnist_root}", *over, "hydra.run.dir=ddp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    rates = [r["lr/G"] for r in records(tmp_path / "ddp")]
    assert rates[0] < 2e-4 and rates == sorted(rates, reverse=True)  # decayed, never rising
