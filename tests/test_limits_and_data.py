"""Run limits (steps, epochs, wall clock), the streaming image-folder path and data-set details."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from gan_cli.datasets import Batches, Data, build_data
from gan_cli.train import train
from tests.conftest import QUICK, run_cli
from tests.test_config import compose_train


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_epochs_limit(tmp_path: Path, mnist_root: Path) -> None:
    # 128 training images, batch 8: one epoch is 16 steps
    args = [*QUICK, "model=mlp", f"data.root={mnist_root}", "trainer.steps=null", "trainer.epochs=1"]
    res = run_cli(*args, "logger.log_every=4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r["step"] for r in records(tmp_path / "run")] == [4, 8, 12, 16]
    assert records(tmp_path / "run")[-1]["epoch"] == 1.0


# QUICK without its trainer.epochs=null: what a user who sets one limit leaves as it is
FEW_LOGS = [a for a in QUICK if not a.startswith(("trainer.steps", "trainer.epochs", "logger."))]
FEW_LOGS += ["logger.log_every=8", "logger.sample_every=0", "logger.progress=false"]
FEW_LOGS += ["trainer.checkpoint_every=0"]


def test_steps_alone_are_not_cut_short_by_the_default_epochs(tmp_path: Path, mnist_root: Path) -> None:
    # one epoch is 16 steps: the default 5 epochs would stop at 80
    args = [*FEW_LOGS, "model=mlp", f"data.root={mnist_root}", "trainer.steps=96"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert records(tmp_path / "run")[-1]["step"] == 96
    last = res.stderr.strip().splitlines()[-1]
    assert "done: 96 steps" in last and "ended by trainer.steps=96" in last


def test_a_run_without_limits_trains_the_default_epochs(tmp_path: Path, mnist_root: Path) -> None:
    res = run_cli(*FEW_LOGS, "model=mlp", f"data.root={mnist_root}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert records(tmp_path / "run")[-1]["step"] == 80
    assert "ended by 5 epochs" in res.stderr.strip().splitlines()[-1]


def test_minutes_alone_are_not_cut_short_by_the_default_epochs(tmp_path: Path, mnist_root: Path) -> None:
    args = [*FEW_LOGS, "model=mlp", f"data.root={mnist_root}", "trainer.max_minutes=0.1"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] > 80
    assert "ended by trainer.max_minutes=0.1" in res.stderr.strip().splitlines()[-1]


def test_epochs_limit_is_named_at_the_end(tmp_path: Path, mnist_root: Path) -> None:
    args = [*FEW_LOGS, "model=mlp", f"data.root={mnist_root}", "trainer.epochs=0.5", "trainer.steps=1000"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "done: 8 steps" in res.stderr and "ended by trainer.epochs=0.5" in res.stderr


def test_wall_clock_limit_ends_cleanly(tmp_path: Path) -> None:
    args = [*QUICK, "experiment=gaussians_demo", "trainer.steps=null", "trainer.max_minutes=0.02"]
    res = run_cli(*args, "logger.sample_every=0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] > 0
    assert (tmp_path / "run" / "samples" / f"step_{state['step']:06d}.png").is_file()


def test_streaming_image_folder(tmp_path: Path, folder_root: Path) -> None:
    args = [*QUICK, "model=dcgan", "data=image_folder", f"data.root={folder_root}", "data.image_size=16"]
    res = run_cli(*args, "data.in_memory=false", "data.num_workers=0", "data.channels=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["data_shape"] == [1, 16, 16]


def test_image_folder_labels_and_modes(folder_root: Path) -> None:
    cfg = compose_train("data=image_folder", f"data.root={folder_root}", "data.image_size=24")
    data = build_data(cfg.data)
    assert data.tensor is not None and data.labels is not None
    assert data.tensor.shape == (16, 3, 24, 24) and data.tensor.dtype == torch.uint8
    assert data.class_names == ["cats", "dogs"] and data.labels.tolist() == [0] * 8 + [1] * 8


def test_batches_cover_an_epoch_once_on_device(mnist_root: Path) -> None:
    cfg = compose_train(f"data.root={mnist_root}", "data.download=false")
    data = build_data(cfg.data)
    batches = Batches(data, 32, torch.device("cpu"), seed=0)
    seen = torch.cat([batches.next()[1] for _ in range(batches.per_epoch)])
    assert batches.epochs_done == 1.0
    assert sorted(seen.tolist()) == sorted(data.labels.tolist())  # type: ignore[union-attr]
    x, _ = batches.next()
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_mirror_flips_a_seeded_half_the_same_way_in_memory_streamed_and_resumed() -> None:
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    held = Data("image", (1, 4, 4), 40, tensor=images, labels=torch.arange(40))
    streamed = Data(
        "image", (1, 4, 4), 40, dataset=TensorDataset(images, torch.arange(40))
    )  # as a folder streams
    cpu = torch.device("cpu")

    def epochs(data: Data, mirror: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b = Batches(data, 8, cpu, seed=3, num_workers=0, mirror=mirror)
        return [b.next() for _ in range(2 * b.per_epoch)]

    plain, mirrored = epochs(held, False), epochs(held, True)
    flipped = 0
    for (x, y), (xm, ym) in zip(plain, mirrored, strict=True):
        assert torch.equal(y, ym), "mirroring keeps the order"
        same = (xm == x).flatten(1).all(1)
        flips = (xm == x.flip(-1)).flatten(1).all(1)
        assert bool((same | flips).all()), "each image is itself or its mirror image"
        flipped += int((flips & ~same).sum())
    assert 20 <= flipped <= 60, f"about half of 80 images are flipped, not {flipped}"
    for (x, y), (xs, ys) in zip(mirrored, epochs(streamed, True), strict=True):
        assert torch.equal(x, xs) and torch.equal(y, ys), "a streamed folder is mirrored the same way"
    resumed = Batches(held, 8, cpu, seed=3, num_workers=0, mirror=True)
    resumed.seek(1, 2)
    assert torch.equal(resumed.next()[0], mirrored[5 + 2][0]), "a resumed run mirrors the same images"


def test_data_root_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_CLI_DATA", "/datasets")
    assert compose_train().data.root == "/datasets"
    assert compose_train("data=image_folder").data.root == "/datasets/images"


def test_train_called_from_python(tmp_path: Path) -> None:
    cfg = compose_train(
        "experiment=gaussians_demo", "trainer.steps=3", "logger.log_every=1", "trainer.device=cpu"
    )
    result = train(cfg, tmp_path)
    assert result["step"] == 3 and set(result) >= {"loss/D", "loss/G", "D/real", "D/fake", "wall_s"}
    assert OmegaConf.to_container(cfg)  # the config is untouched and still valid


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    res = run_cli(
        *QUICK, "experiment=gaussians_demo", "trainer.steps=2", "trainer.precision=bf16", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr


def test_train_tells_a_given_progress_object_of_every_step(tmp_path: Path) -> None:
    from gan_cli.logger import NullLogger
    from tests.runs import make_cfg
    from tests.runs import train as train_setup

    class Steps(NullLogger):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def advance(self, step: int) -> None:
            self.seen.append(step)

    progress = Steps()
    result = train_setup(make_cfg(tmp_path, "trainer.steps=5", "trainer.epochs=null"), progress=progress)
    assert result["step"] == 5 and progress.seen == [1, 2, 3, 4, 5]


def test_the_progress_line_names_a_step_limit_only_when_there_is_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gan_cli.logger import ProgressLogger

    values = {"loss/D": 1.0, "loss/G": 2.0, "D/real": 0.5, "D/fake": 0.5, "perf/images_per_s": 10.0}
    with caplog.at_level("INFO", logger="gan_cli"):
        ProgressLogger(0, 0, False, 0.0).scalars(5, values, 0.1)
        ProgressLogger(0, 20, False, 0.0).scalars(5, values, 0.1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" epoch")[0] for line in lines] == ["step 5", "step 5/20"]
