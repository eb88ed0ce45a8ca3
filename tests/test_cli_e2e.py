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
    """Through the installed script file in a new process, as a user runs it (fresh=True)."""
    res = run_cli(*QUICK, "experiment=gaussians_demo", "trainer.steps=4", cwd=tmp_path, fresh=True)
    assert res.returncode == 0, res.stderr + res.stdout
    assert_complete_run(tmp_path / "run")


def test_seeded_runs_are_identical(tmp_path: Path, mnist_root: Path) -> None:
    args = [*QUICK, "model=dcgan", "model.g_width=8", "model.d_width=8", f"data.root={mnist_root}"]
    runs = []
    for name in ("a", "b"):
        res = run_cli(*args, f"hydra.run.dir={name}", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        runs.append(
            [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        )
    keys = ["loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"]
    assert [[r[k] for k in keys] for r in runs[0]] == [[r[k] for k in keys] for r in runs[1]]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    res = run_cli(*args, "trainer.seed=1", "hydra.run.dir=c", cwd=tmp_path)
    other = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert other[0]["loss/G"] != runs[0][0]["loss/G"]


def test_quiet_without_terminal_but_prints_summary(tmp_path: Path) -> None:
    res = run_cli(*QUICK, "experiment=gaussians_demo", "trainer.steps=4", cwd=tmp_path)
    assert res.returncode == 0
    assert "it/s" not in res.stderr and "step/s" not in res.stderr  # no tqdm bar
    assert "step 4/4 epoch" in res.stderr and "loss/D" in res.stderr
    assert "train.log" in {p.name for p in (tmp_path / "run").iterdir()}


def test_hparams_dashboard_lists_overrides(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    res = run_cli(*QUICK, "experiment=gaussians_demo", "trainer.steps=4", "optimizer.lr=3e-4", cwd=tmp_path)
    assert res.returncode == 0
    events = read_events(tmp_path / "run")
    content = events.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert info.hparams["optimizer.lr"].number_value == pytest.approx(3e-4)
    assert info.hparams["loss"].string_value == "nonsaturating"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"loss/D", "loss/G"}


def test_missing_mnist_without_download_says_where(tmp_path: Path) -> None:
    res = run_cli(*QUICK, "data.download=false", f"data.root={tmp_path / 'nothing'}", cwd=tmp_path)
    assert res.returncode == 2
    assert f"{tmp_path / 'nothing' / 'MNIST' / 'raw'}" in res.stderr
    assert "make demo" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_multirun_two_by_two(tmp_path: Path) -> None:
    args = [a for a in QUICK if not a.startswith("hydra.run")]
    res = run_cli(
        "-m",
        *args,
        "experiment=gaussians_demo",
        "trainer.steps=2",
        "loss=nonsaturating,hinge",
        "optimizer.lr=1e-4,2e-4",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(runs) == 4
    names = [r.name for r in runs]
    for loss in ("nonsaturating", "hinge"):
        for lr in ("0.0001", "0.0002"):
            assert sum(f"loss={loss}," in n and f"optimizer.lr={lr}" in n for n in names) == 1, names
    for run in runs:
        assert list((run / "tb").glob("events.out.tfevents.*"))
        assert (run / "checkpoints" / "last.pt").is_file()


def test_sample_grid_layout() -> None:
    """Grids keep torchvision's layout: 2-pixel white padding around each image, gray repeated to RGB."""
    import torch

    from gan_cli.samples import image_grid

    x = torch.full((5, 1, 4, 6), -1.0)  # black images
    grid = image_grid(x, nrow=3)
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (6 + 2) + 2)
    assert grid[:, 2:6, 2:8].eq(0).all() and grid[:, :2].eq(255).all()
    assert grid[:, 8:12, 18:24].eq(255).all(), "the sixth cell is empty"
    assert image_grid(x[:1]).shape == (3, 4, 6)


def test_the_log_says_what_was_chosen(tmp_path: Path, mnist_root: Path) -> None:
    """Precision, threads and the data found are logged, a resize upwards is warned about, and the
    end of the run says what it is doing (sample, checkpoint, objective) before the last line."""
    from gan_cli.device import auto_precision

    args = [*QUICK, "model=dcgan", "model.g_width=8", "model.d_width=8", f"data.root={mnist_root}"]
    res = run_cli(*args, "data.download=false", "data.image_size=32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    log = res.stderr
    assert "data: mnist: 128 images of 1x32x32, 10 classes" in log
    assert "mnist images are 28 px; data.image_size=32 resizes them up" in log
    expected = "bf16 autocast" if auto_precision(torch.device("cpu"), conv=True).name == "bf16" else "fp32"
    assert f"precision: {expected} (trainer.precision=auto: a convolutional model on a CPU" in log
    assert "CPU threads: " in log and "training step: eager" in log
    end = log[log.index("final sample grid: ") :]
    for line in [
        "final checkpoint: ",
        "objective: pixel_fd of generated",
        "objective: pixel_fd = ",
        "done: 4 steps",
    ]:
        assert line in end
        end = end[end.index(line) :]
    res = run_cli(*args, "data.download=false", "trainer.precision=32", "hydra.run.dir=again", cwd=tmp_path)
    assert "precision: fp32 (trainer.precision=32)" in res.stderr and "resizes them up" not in res.stderr
