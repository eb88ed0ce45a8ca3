"""The modern recipes through gan-train: R1/R2 (every step and lazily), the relativistic loss,
augmentation whose adaptive probability survives a resume, and training on a chosen subset of data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from gan_cli.config import validate
from gan_cli.run import build_run
from tests.conftest import run_cli
from tests.runs import load, records, same_weights

pytestmark = pytest.mark.slow  # runs in make test; make test-fast leaves it out

TINY = ["debug=tiny", "data.download=false", "trainer.precision=32", "logger.log_every=1"]


def gan_train(cwd: Path, root: Path, *args: str, run: str = "run") -> Path:
    res = run_cli(*TINY, f"data.root={root}", *args, f"hydra.run.dir={run}", cwd=cwd)
    assert res.returncode == 0, res.stderr + res.stdout
    return cwd / run


def test_rpgan_with_r1_and_r2_logs_both_penalties(tmp_path: Path, mnist_root: Path) -> None:
    run = gan_train(tmp_path, mnist_root, "loss=rpgan", "loss.r1_gamma=1", "loss.r2_gamma=2")
    last = records(run)[-1]
    assert last["loss/r1"] > 0 and last["loss/r2"] > 0 and math.isfinite(last["loss/G"])
    assert "grad_norm/Dreg" not in last  # every step: inside D's own update


def test_the_default_r1_is_lazy_on_the_cpu_and_says_so(tmp_path: Path, mnist_root: Path) -> None:
    res = run_cli(*TINY, f"data.root={mnist_root}", "trainer.steps=18", "hydra.run.dir=r", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        "penalties: R1 gamma 0.3, lazily, every 16 D steps with weight x16 (loss.reg_every=auto: the step "
        "runs eagerly)" in res.stderr
    )
    logged = records(tmp_path / "r")
    assert len(logged) == 18 and all(r["loss/r1"] > 0 and r["grad_norm/Dreg"] > 0 for r in logged)
    assert logged[15]["loss/r1"] == logged[0]["loss/r1"] != logged[16]["loss/r1"], "R1 on steps 1 and 17"


def test_the_r1_mnist_preset_trains_with_lazy_r1_at_adam_8e4(tmp_path: Path, mnist_root: Path) -> None:
    args = ["experiment=dcgan_r1_mnist", f"data.root={mnist_root}", "trainer.steps=5", "hydra.run.dir=r"]
    res = run_cli(*TINY, *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "penalties: R1 gamma 1, lazily, every 4 D steps with weight x4" in res.stderr
    logged = records(tmp_path / "r")
    assert len(logged) == 5 and {(r["lr/G"], r["lr/D"]) for r in logged} == {(8e-4, 8e-4)}
    assert logged[0]["loss/r1"] > 0 and logged[1]["loss/r1"] == logged[0]["loss/r1"] != logged[4]["loss/r1"]


def test_a_resumed_run_keeps_lazy_r1_on_its_schedule(tmp_path: Path, mnist_root: Path) -> None:
    lazy = ["loss.r1_gamma=1", "loss.reg_every=4", "trainer.steps=8"]
    whole = gan_train(tmp_path, mnist_root, *lazy, run="whole")
    cut = gan_train(tmp_path, mnist_root, *lazy, "trainer.steps=6", run="cut")
    assert load(cut)["step_held"]["Dreg"]["loss/r1"] == pytest.approx(records(cut)[4]["loss/r1"])
    res = run_cli(
        *TINY, f"data.root={mnist_root}", *lazy, f"trainer.resume={cut}", "hydra.run.dir=x", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    again, straight = records(cut), records(whole)
    keys = ["step", "loss/r1", "grad_norm/Dreg", "loss/D", "loss/G"]
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in straight]
    held = again[4]["loss/r1"]  # R1 ran on steps 1 and 5; steps 7 and 8 come after the resume
    assert again[6]["loss/r1"] == again[7]["loss/r1"] == held != again[3]["loss/r1"]
    assert same_weights(load(cut), load(whole))


def test_lazy_r1_is_one_more_phase_every_k_steps(tmp_path: Path, mnist_root: Path) -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY,
                f"data.root={mnist_root}",
                "loss.r1_gamma=1",
                "loss.reg_every=4",
                "trainer.steps=8",
            ],
        )
    run = build_run(cfg, validate(cfg), tmp_path)
    assert [p.name for p in run.train_step.phases] == ["D", "Dreg", "G"]
    for _ in range(8):
        run.step_fn([run.batches.next()])
    d_param = next(run.D.parameters())
    assert int(run.nets.opt_d.state[d_param]["step"]) == 8 + 2, "8 D updates and R1 on steps 1 and 5"
    res = run_cli(
        *TINY,
        f"data.root={mnist_root}",
        "loss.r1_gamma=1",
        "loss.reg_every=3",
        "trainer.steps=6",
        "hydra.run.dir=r",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    logged = records(tmp_path / "r")
    assert all(r["loss/r1"] > 0 and r["grad_norm/Dreg"] > 0 for r in logged)
    assert logged[1]["loss/r1"] == logged[0]["loss/r1"], "step 2 has no R1 update: step 1's value stands"


def test_ada_probability_is_logged_and_resumes(tmp_path: Path, mnist_root: Path) -> None:
    ada = [
        "augment=ada",
        "augment.interval=1",
        "augment.speed_images=64",
        "augment.target=-1",
        "trainer.steps=6",
    ]
    whole = gan_train(tmp_path, mnist_root, *ada, "trainer.checkpoint_every=3", run="whole")
    p = [r["augment/p"] for r in records(whole)]
    assert p[0] > 0 and p == sorted(p) and p[-1] <= 1, "D beats a target of -1: p only rises"
    assert load(whole)["augment"]["p"].item() == pytest.approx(p[-1])
    cut = gan_train(tmp_path, mnist_root, *ada, "trainer.steps=3", run="cut")
    res = run_cli(
        *TINY, f"data.root={mnist_root}", *ada, f"trainer.resume={cut}", "hydra.run.dir=again", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert [r["augment/p"] for r in records(cut)] == p, "the resumed run continues with the saved p"
    assert same_weights(load(cut), load(whole))


def test_mirror_changes_the_images_d_sees_and_is_recorded(tmp_path: Path, mnist_root: Path) -> None:
    plain = gan_train(tmp_path, mnist_root, "trainer.steps=3", run="plain")
    mirrored = gan_train(tmp_path, mnist_root, "trainer.steps=3", "data.mirror=true", run="mirrored")
    assert load(mirrored)["config"]["data"]["mirror"] is True
    assert not same_weights(load(plain), load(mirrored)), "the flipped images train a different D"
    res = run_cli(
        "debug=tiny", "experiment=gaussians_demo", "data.mirror=true", "hydra.run.dir=p", cwd=tmp_path
    )
    assert res.returncode == 2 and "Could not override 'data.mirror'" in res.stderr, "points have no mirror"


def test_diffaugment_trains_and_points_are_refused(tmp_path: Path, mnist_root: Path) -> None:
    run = gan_train(tmp_path, mnist_root, "augment=diffaugment")
    assert math.isfinite(records(run)[-1]["loss/D"])
    res = run_cli(
        "debug=tiny", "experiment=gaussians_demo", "augment=diffaugment", "hydra.run.dir=p", cwd=tmp_path
    )
    assert res.returncode == 2 and "augment=diffaugment needs image data" in res.stderr + res.stdout


def test_data_limit_and_classes_choose_a_recorded_subset(tmp_path: Path, mnist_root: Path) -> None:
    run = gan_train(tmp_path, mnist_root, "data.limit=20", "data.classes=[1,3]", "trainer.batch_size=4")
    state = load(run)
    subset = state["data_subset"]
    assert len(subset) == 20 and state["config"]["data"]["limit"] == 20
    again = gan_train(
        tmp_path, mnist_root, "data.limit=20", "data.classes=[1,3]", "trainer.batch_size=4", run="b"
    )
    assert torch.equal(load(again)["data_subset"], subset), "the same seed chooses the same images"
    from gan_cli.datasets import build_data

    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"data.root={mnist_root}", "data.download=false"])
    labels = build_data(cfg.data).labels
    assert labels is not None and set(labels[subset].tolist()) <= {1, 3}
    res = run_cli(*TINY, f"data.root={mnist_root}", "data.classes=[12]", "hydra.run.dir=c", cwd=tmp_path)
    assert res.returncode == 2 and "data.classes=[12] is not valid; give class numbers in 0..9" in res.stderr


def test_minibatch_std_gives_d_one_more_input_channel(tmp_path: Path, mnist_root: Path) -> None:
    plain = load(gan_train(tmp_path, mnist_root, "trainer.steps=2", run="plain"))
    run = gan_train(tmp_path, mnist_root, "trainer.steps=2", "model.mbstd_group=4", run="mbstd")
    state = load(run)
    assert state["config"]["model"]["mbstd_group"] == 4 and math.isfinite(records(run)[-1]["loss/D"])

    def last_conv(d: dict) -> torch.Size:
        return [w for k, w in d.items() if k.endswith(".weight") and w.dim() == 4][-1].shape

    assert last_conv(state["D"])[1] == last_conv(plain["D"])[1] + 1
