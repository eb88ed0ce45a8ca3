"""Full-state checkpoints and exact resume, run in-process (the killed-process versions are in
test_kill_resume.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_cli import checkpoint as ckpt
from gan_cli import resume
from gan_cli.errors import CheckpointError
from gan_cli.logger import TensorBoardLogger
from tests.runs import Crash, crash_after, load, logged, make_cfg, records, same_weights, tb_scalars, train

N, EVERY = 12, 4


def mnist_base(root: Path) -> list[str]:
    return [
        "model=dcgan",
        "model.g_width=8",
        "model.d_width=8",
        "model.z_dim=16",
        f"data.root={root}",
        "data.download=false",
        "trainer.device=cpu",
        "trainer.epochs=null",
        "trainer.batch_size=8",
        "logger.log_every=2",
        "logger.sample_every=0",
        "logger.num_samples=4",
        "logger.progress=false",
    ]


def test_checkpoint_holds_the_full_state(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "trainer.steps=4", "trainer.checkpoint_every=2"))
    state = load(tmp_path)
    assert {"G", "D", "G_ema", "opt_G", "opt_D", "scaler", "fixed_z", "config", "version"} <= state.keys()
    assert state["step"] == 4 and state["epoch"] > 0 and state["data_position"]["index"] > 0
    assert {"python", "numpy", "torch"} <= state["rng"].keys()
    assert state["config"]["trainer"]["steps"] == 4 and state["config"]["data"]["name"] == "gaussians"
    assert state["opt_G"]["state"], "the optimizer's moments are saved, not only its settings"


@pytest.mark.parametrize(
    ("data", "k"),
    [("gaussians", 6), ("gaussians", EVERY), pytest.param("mnist", 6, marks=pytest.mark.slow)],
    ids=["between-checkpoints", "right-after-a-checkpoint", "dcgan-batchnorm"],
)
def test_crash_then_resume_is_the_uninterrupted_run(
    tmp_path: Path, mnist_root: Path, data: str, k: int
) -> None:
    base = None if data == "gaussians" else mnist_base(mnist_root)
    common = [f"trainer.steps={N}", f"trainer.checkpoint_every={EVERY}"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(make_cfg(whole, *common, base=base))

    with pytest.raises(Crash):
        train(make_cfg(broken, *common, base=base), wrap_step=crash_after(k))
    assert load(broken)["step"] == EVERY
    if k > EVERY:  # records after the checkpoint exist and must not be doubled by the resume
        assert records(broken)[-1]["step"] == k

    train(make_cfg(tmp_path / "new", *common, f"trainer.resume={broken}", base=base))
    assert not (tmp_path / "new").exists(), "the resumed run writes on in the run it continues"
    assert same_weights(load(whole), load(broken))
    assert logged(broken) == logged(whole)
    steps = [s for s, _ in tb_scalars(broken)]
    assert steps == list(range(2, N + 1, 2)), "TensorBoard has each step once, in order"
    assert tb_scalars(broken) == tb_scalars(whole)


def test_resumed_event_file_sorts_after_the_earlier_ones(tmp_path: Path) -> None:
    # TensorBoard reads event files in name order; one made in the same second as the earlier file
    # (here: a second later, from a host whose name sorts last) must still come after it.
    tb = tmp_path / "tb"
    tb.mkdir()
    earlier = tb / f"events.out.tfevents.{int(time.time()) + 1}.zzzz.1.0"
    earlier.write_bytes(b"")
    TensorBoardLogger(tmp_path, start_step=4).close()
    names = sorted(f.name for f in tb.iterdir())
    assert len(names) == 2 and names[0] == earlier.name


def test_resume_from_a_numbered_checkpoint_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg(run, "trainer.steps=8", "trainer.checkpoint_every=4"))
    first = logged(run)
    train(make_cfg(tmp_path / "again", "trainer.steps=8", f"trainer.resume={run}/checkpoints/step_000004.pt"))
    assert load(run)["step"] == 8
    assert logged(run) == first  # steps 5..8 rewritten with the same values, not appended


def test_keep_checkpoints_rotates_by_step(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "trainer.steps=10", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=2"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000008.pt", "step_000010.pt"]
    folder = tmp_path / "order"
    folder.mkdir()
    for step in (999_999, 1_000_000, 20):
        (folder / f"step_{step:06d}.pt").write_bytes(b"x")
    ckpt.rotate(folder, 1)
    assert [p.name for p in folder.iterdir()] == ["step_1000000.pt"]


def test_auto_resume_starts_afresh_when_nothing_matches(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "trainer.steps=4", "trainer.resume=auto"))
    assert load(tmp_path)["step"] == 4
    train(make_cfg(tmp_path, "trainer.steps=6", "trainer.resume=auto"))
    assert load(tmp_path)["step"] == 6
    assert [r["step"] for r in records(tmp_path)] == [2, 4, 6]
    train(make_cfg(tmp_path, "trainer.steps=8", "trainer.resume=auto", "loss=hinge"))
    assert [r["step"] for r in records(tmp_path)] == [2, 4, 6, 8], "another config: a fresh run"


def test_auto_resume_skips_a_checkpoint_rotated_away_while_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    setup = make_cfg(run, "trainer.steps=4", "trainer.checkpoint_every=2")
    train(setup)
    listed = resume._checkpoints(run)
    gone = run / "checkpoints" / "step_000000.pt"  # listed, then deleted by the run's rotation
    monkeypatch.setattr(resume, "_checkpoints", lambda folder: [*listed, gone] if folder == run else [])
    now = ckpt.load(run / "checkpoints" / "last.pt")["config"]
    assert resume.auto_run(tmp_path, now) == (run, 0)
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(2, "gone")))
    with pytest.raises(CheckpointError, match="was removed while being read"):
        ckpt.load(run / "checkpoints" / "last.pt")


def test_changed_config_is_refused_with_the_keys_listed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg(run, "trainer.steps=4"))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    args = ["trainer.steps=6", f"trainer.resume={run}"]
    with pytest.raises(CheckpointError) as err:
        train(make_cfg(tmp_path / "x", *args, "optimizer.lr=0.01", "trainer.batch_size=16"))
    text = str(err.value)
    assert "optimizer.lr" in text and "trainer.batch_size" in text and "resume_force" in text
    assert "logger" not in text.split("Keys that may change")[0]
    assert (run / "checkpoints" / "last.pt").read_bytes() == before

    # keys that may change freely, then the same change forced
    train(make_cfg(tmp_path / "y", *args, "logger.log_every=3", "trainer.checkpoint_every=5"))
    assert load(run)["step"] == 6
    train(
        make_cfg(
            tmp_path / "z",
            "trainer.steps=8",
            f"trainer.resume={run}",
            "optimizer.lr=0.01",
            "trainer.resume_force=true",
        )
    )
    assert load(run)["step"] == 8 and load(run)["config"]["optimizer"]["lr"] == 0.01


def test_config_diff_and_safe_keys() -> None:
    saved = {"trainer": {"steps": 4, "seed": 0}, "logger": {"log_every": 5}, "loss": {"name": "hinge"}}
    now = {"trainer": {"steps": 9, "seed": 1}, "logger": {"log_every": 1}, "loss": {"name": "wgan"}, "new": 1}
    assert resume.config_diff(saved, now) == [
        ("loss.name", "hinge", "wgan"),
        ("new", resume.ABSENT, 1),
        ("trainer.seed", 0, 1),
    ]


def test_checkpoint_for_another_model_or_size_is_refused(tmp_path: Path, mnist_root: Path) -> None:
    run = tmp_path / "run"
    base = mnist_base(mnist_root)
    train(make_cfg(run, "trainer.steps=2", base=base))
    for change, words in (
        (["data.image_size=32"], ["[1, 28, 28]", "[1, 32, 32]"]),
        (["model=mlp"], ["model=dcgan", "model=mlp"]),
        (["model.g_width=16"], ["does not match this model"]),
    ):
        keep = [b for b in base if not (change[0].startswith("model=") and b.startswith("model."))]
        args = ["trainer.steps=4", f"trainer.resume={run}", "trainer.resume_force=true", *change]
        cfg = make_cfg(tmp_path / "x", *args, base=keep)
        with pytest.raises(CheckpointError) as err:
            train(cfg)
        assert str(run / "checkpoints" / "last.pt") in str(err.value)
        for word in words:
            assert word in str(err.value), str(err.value)


def test_missing_resume_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint or run directory"):
        train(make_cfg(tmp_path, "trainer.steps=2", f"trainer.resume={tmp_path / 'nope'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        train(make_cfg(tmp_path / "b", "trainer.steps=2", f"trainer.resume={tmp_path / 'empty'}"))


def test_rng_state_round_trip() -> None:
    import random

    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == a
