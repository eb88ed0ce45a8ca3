"""End-to-end runs of the installed `gan-train` script on tiny data the tests write."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import QUICK, run_cli

SCALARS = {
    "loss/D",
    "loss/G",
    "D/real",
    "D/fake",
    "grad_norm/D",
    "grad_norm/G",
    "lr/G",
    "lr/D",
    "perf/images_per_s",
}


def read_events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def assert_complete_run(run: Path, steps: int = 4) -> list[dict]:
    events = read_events(run)
    tags = events.Tags()
    assert set(tags["scalars"]) >= SCALARS, tags["scalars"]
    assert {"samples/real", "samples/fake"} <= set(tags["images"])
    assert [e.step for e in events.Scalars("loss/D")] == list(range(2, steps + 1, 2))
    assert (run / "samples" / f"step_{steps:06d}.png").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == steps and {"G", "D", "opt_G", "opt_D"} <= set(state)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, steps + 1, 2))
    for r in records:
        assert math.isfinite(r["loss/D"]) and math.isfinite(r["loss/G"])
    return records


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_mnist_layout(tmp_path: Path, mnist_root: Path, model: str) -> None:
    res = run_cli(*QUICK, f"model={model}", f"data.root={mnist_root}", "data.download=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert_complete_run(tmp_path / "run")


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_image_folder(tmp_path: Path, folder_root: Path, model: str) -> None:
    args = [*QUICK, f"model={model}", "data=image_folder", f"data.root={folder_root}", "data.image_size=32"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert_complete_run(tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["data_shape"] == [3, 32, 32]


def test_gaussians_scatter(tmp_path: Path) -> None:
    res = run_cli(*QUICK, "experiment=gaussians_demo", "trainer.steps=4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert_complete_run(tmp_path / "run")
