"""The moving average of G, conditional models, spectral norm, and the loop's evaluation hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

import gan_cli.datasets
import gan_cli.losses
import gan_cli.models  # noqa: F401
from gan_cli.checkpoint import load_generator
from gan_cli.config import conditional, r1_gamma, resolved, settle_auto, validate
from gan_cli.datasets import Data
from gan_cli.ema import EMA, recompute_norm_stats
from gan_cli.errors import ConfigError
from gan_cli.metrics import FEATURES
from gan_cli.models import build_models
from gan_cli.resume import config_diff
from tests.conftest import QUICK, run_cli
from tests.test_metrics import RandomFeatures


@pytest.mark.parametrize("ramp", [10.0, 5.0])
def test_ema_follows_the_formula_with_ramp_up(ramp: float) -> None:
    G = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = EMA(G, decay=0.9, ramp=ramp)
    start = G[0].weight.detach().clone()
    expected = start.clone()
    for t in range(1, 30):
        with torch.no_grad():
            G[0].weight.add_(0.1)
            G[1].running_mean.fill_(float(t))
        ema.update()
        decay_t = min(0.9, (1 + t) / (ramp + t))
        expected = decay_t * expected + (1 - decay_t) * G[0].weight.detach()
        assert torch.allclose(ema.model[0].weight, expected, atol=1e-6), t
    assert torch.equal(ema.model[1].running_mean, G[1].running_mean)  # buffers are copied
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    # the average lags behind: it sits between the start and the current weights
    assert (ema.model[0].weight - start).mean() < (G[0].weight - start).mean()
    copy = EMA(G, decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert torch.equal(copy.model[0].weight, ema.model[0].weight) and copy.num_updates.item() == 29


def test_ema_rejects_a_ramp_that_never_warms_up() -> None:
    with pytest.raises(ValueError, match="ramp must be above 1"):
        EMA(nn.Linear(2, 2), decay=0.9, ramp=1.0)


class Affine(nn.Module):
    """A stand-in generator: z (and a label, added as a number) -> linear -> batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = nn.Linear(2, 3), nn.BatchNorm1d(3)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z) + (y[:, None].float() if y is not None else 0)
        return self.norm(h)


@pytest.mark.parametrize("num_classes", [0, 5])
def test_recomputed_norm_stats_are_the_averages_of_the_batch_stats(num_classes: int) -> None:
    G = Affine()
    with torch.no_grad():
        G.norm.running_mean.fill_(7.0)  # stale statistics, as copied from another network
    recompute_norm_stats(G, 2, torch.device("cpu"), num_classes, batches=3, batch_size=4, seed=5)
    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order
    means, variances = [], []
    with torch.no_grad():
        for _ in range(3):
            z = torch.randn(4, 2, generator=gen)
            y = torch.randint(num_classes, (4,), generator=gen) if num_classes else None
            h = G.linear(z) + (y[:, None].float() if y is not None else 0)
            means.append(h.mean(0))
            variances.append(h.var(0))  # unbiased, as batch norm's running variance
    assert torch.allclose(G.norm.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(G.norm.running_var, torch.stack(variances).mean(0), atol=1e-5)
    assert G.norm.momentum == 0.1 and not G.training  # momentum put back, left in eval mode
    again = Affine()
    again.load_state_dict(G.state_dict())
    recompute_norm_stats(again, 2, torch.device("cpu"), num_classes, batches=3, batch_size=4, seed=5)
    assert torch.equal(again.norm.running_mean, G.norm.running_mean)  # seeded: reproducible


def test_standing_stats_are_recomputed_only_after_the_average_changed() -> None:
    G = Affine()
    ema = EMA(G, 0.9)
    calls = []
    ema.model.register_forward_hook(lambda *_: calls.append(1))
    model = ema.eval_model(2, torch.device("cpu"))
    first = len(calls)
    assert first > 0 and model is ema.model and not model.training
    ema.eval_model(2, torch.device("cpu"))
    assert len(calls) == first  # same weights: the statistics still fit
    ema.update()
    ema.eval_model(2, torch.device("cpu"))
    assert len(calls) == 2 * first
    ema.load_state_dict(ema.state_dict())  # loaded buffers replace the standing statistics
    ema.eval_model(2, torch.device("cpu"))
    assert len(calls) == 3 * first


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
def test_conditional_models_use_the_label(name: str) -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"model={name}", "model.conditional=true", "model.spectral_norm=true"]
        )
    G, D = build_models(cfg.model, Data("image", (1, 28, 28), 10))
    z = torch.randn(4, cfg.model.z_dim)
    G.eval()
    a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4, dtype=torch.long))
    assert a.shape == (4, 1, 28, 28) and not torch.allclose(a, b)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        D.embed.weight.normal_()  # type: ignore[union-attr]
    assert not torch.allclose(D(x, torch.zeros(4, dtype=torch.long)), D(x, torch.ones(4, dtype=torch.long)))
    assert D(x).shape == (4,)  # without labels (gradient-penalty interpolates): the unconditional part
    with pytest.raises(ValueError, match="conditional"):
        G(z)
    sn = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert sn and not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    D.train()
    for _ in range(30):  # power iterations run in training forwards
        D(x, torch.zeros(4, dtype=torch.long))
    weight = sn[0].weight.flatten(1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, rel=0.05)


def test_conditional_needs_labels() -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=["model=mlp", "model.conditional=true"])
    with pytest.raises(ConfigError, match="labelled data set"):
        build_models(cfg.model, Data("points", (2,), 0))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], True),  # MNIST's labels name its digits
        (["data=fashion_mnist"], True),
        (["data=cifar10"], True),
        (["data.classes=[3,5]"], True),
        (["data.classes=[3]"], False),  # one class: nothing to condition on
        (["model.conditional=false"], False),
        (["data=image_folder"], False),  # sub-folders need not be classes
        (["data=image_folder", "data.labels_are_classes=true"], True),
        (["data=image_folder", "model.conditional=true"], True),
        (["data=gaussians", "model=mlp", "model.conditional=auto"], False),
    ],
)
def test_auto_conditional_follows_the_data_sets_labels(overrides: list[str], expected: bool) -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    validate(cfg)
    assert conditional(cfg.model, cfg.data) is expected
    assert resolved(cfg)["model"]["conditional"] is expected  # what a checkpoint stores
    settle_auto(cfg)
    assert cfg.model.conditional is expected


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], 0.3),  # MNIST: the default loss's R1
        (["data=fashion_mnist"], 0.3),
        (["data=image_folder"], 0.0),  # R1 made the CIFAR-10 folder worse
        (["data=image_folder", "data.labels_are_classes=true"], 0.3),
        (["data=image_folder", "loss.r1_gamma=0.1"], 0.1),
        (["loss.r1_gamma=0"], 0.0),
        (["loss=hinge"], 0.0),  # the other losses carry no R1 unless asked
        (["data=gaussians", "model=mlp"], 0.0),
    ],
)
def test_auto_r1_follows_the_data_sets_labels(overrides: list[str], expected: float) -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    validate(cfg)
    assert r1_gamma(cfg.loss, cfg.data) == expected
    assert resolved(cfg)["loss"]["r1_gamma"] == expected  # what a checkpoint stores
    settle_auto(cfg)
    assert cfg.loss.r1_gamma == expected


def test_a_conditional_setting_outside_true_false_auto_is_refused() -> None:
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=["model.conditional=sometimes"])
    with pytest.raises(
        ConfigError, match="model.conditional='sometimes' is not valid; give true, false or auto"
    ):
        validate(cfg)


def test_the_default_dcgan_is_conditional_on_mnist_and_its_checkpoint_says_true(
    tmp_path: Path, mnist_root: Path, folder_root: Path
) -> None:
    digits = ["data.download=false", f"data.root={mnist_root}"]
    folder = ["data=image_folder", f"data.root={folder_root}", "data.image_size=16"]
    for name, data, classes in (("digits", digits, 10), ("folder", folder, 2)):
        res = run_cli("debug=tiny", *data, f"hydra.run.dir={name}", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        said = "true (the labels name classes)" if name == "digits" else "false (data.labels_are_classes"
        assert f"model.conditional=auto: {said}" in res.stderr
        r1 = "0.3 (the labels name classes)" if name == "digits" else "0 (data.labels_are_classes is false)"
        assert f"loss.r1_gamma=auto: {r1}" in res.stderr
        assert ("penalties: R1 gamma 0.3" in res.stderr) is (name == "digits")
        _, cfg, state = load_generator(tmp_path / name, torch.device("cpu"))
        assert cfg.model.conditional is (name == "digits") and int(state.num_classes) == classes
        assert cfg.loss.r1_gamma == (0.3 if name == "digits" else 0.0)
    again = ["debug=tiny", *digits, "trainer.steps=6", f"trainer.resume={tmp_path / 'digits'}"]
    res = run_cli(*again, "hydra.run.dir=more", cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # auto on the command line matches the checkpoint's true
    assert "resumed from" in res.stderr


def test_a_folder_run_with_r1_resumes_only_when_r1_is_named(tmp_path: Path, folder_root: Path) -> None:
    """A checkpoint stores auto's answer: a folder run trained with R1 (as before loss.r1_gamma=auto)
    is refused under today's auto, which answers 0 there, and resumes once R1 is named."""
    folder = ["debug=tiny", "data=image_folder", f"data.root={folder_root}", "data.image_size=16"]
    res = run_cli(*folder, "loss.r1_gamma=0.3", "hydra.run.dir=first", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "penalties: R1 gamma 0.3" in res.stderr
    again = [*folder, "trainer.steps=6", f"trainer.resume={tmp_path / 'first'}"]
    res = run_cli(*again, "hydra.run.dir=refused", cwd=tmp_path)
    assert res.returncode != 0 and "loss.r1_gamma" in res.stderr
    res = run_cli(*again, "loss.r1_gamma=0.3", "hydra.run.dir=more", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stderr


def test_a_checkpoint_from_before_labels_are_classes_resumes_on_its_settled_conditional() -> None:
    saved = {"data": {"name": "mnist"}, "model": {"conditional": True}}  # no labels_are_classes key yet
    now = {"data": {"name": "mnist", "labels_are_classes": True}, "model": {"conditional": True}}
    assert config_diff(saved, now) == []
    other = {"data": {"name": "mnist", "labels_are_classes": True}, "model": {"conditional": False}}
    assert config_diff(saved, other) == [("model.conditional", True, False)]


def test_evaluation_hook_logs_metrics(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gan_cli.train import train

    monkeypatch.setitem(FEATURES._entries, "inception", RandomFeatures)  # a cheap stand-in
    monkeypatch.setenv("GAN_CLI_CACHE", str(tmp_path / "cache"))
    overrides = [o for o in QUICK if not o.startswith("hydra.")] + [
        f"data.root={mnist_root}",
        "data.download=false",
        "model=mlp",
        "model.conditional=true",
        "trainer.steps=6",
        "logger.eval_every=4",
        "logger.metrics=[fid,kid]",
        "logger.eval_images=32",
        "logger.eval_real_images=48",
    ]
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    (tmp_path / "run").mkdir()
    result = train(cfg, tmp_path / "run")
    assert result["fid"] > 0 and "kid" in result
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "metrics/fid" in r]
    assert [r["step"] for r in evals] == [4, 6]
    assert evals[-1]["metrics/fid"] == pytest.approx(result["fid"])
    assert len(list((tmp_path / "cache" / "reference").glob("mnist-test-28px-n48-*-random_test.npy"))) == 1
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert "G_ema" in state and state["num_classes"] == 10
    assert not torch.equal(state["G_ema"]["net.0.weight"], state["G"]["net.0.weight"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("metrics/fid")] == [4, 6]


def test_metrics_on_points_are_refused(tmp_path: Path) -> None:
    res = run_cli(*QUICK, "experiment=gaussians_demo", "logger.metrics=[fid]", cwd=tmp_path)
    assert res.returncode == 2
    assert "needs image data" in res.stderr + res.stdout
