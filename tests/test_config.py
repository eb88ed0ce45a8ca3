"""Composing configs: every option of every group, and the errors a user sees for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

import gan_cli.cli  # noqa: F401  (registers every schema)
from gan_cli.config import validate
from gan_cli.errors import ConfigError
from tests.conftest import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ["data", "model", "loss", "optimizer", "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_train(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module="gan_cli.configs", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    if group in ("data", "model", "loss", "optimizer"):
        name = cfg[group].name
        assert getattr(name, "value", name) == option


def test_defaults() -> None:
    cfg = compose_train()
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ("mnist", "dcgan", "nonsaturating")
    assert cfg.optimizer.name.value == "adam" and list(cfg.optimizer.betas) == [0.5, 0.999]


def test_per_network_optimizer_settings() -> None:
    cfg = compose_train("optimizer.lr=1e-3", "optimizer.d.lr=4e-4")
    assert cfg.optimizer.g.lr == 1e-3 and cfg.optimizer.d.lr == 4e-4


def test_wgan_defaults_to_rmsprop_unless_told() -> None:
    assert compose_train("loss=wgan").optimizer.name.value == "rmsprop"
    assert compose_train("loss=wgan", "optimizer=adam").optimizer.name.value == "adam"


def test_experiment_preset() -> None:
    cfg = compose_train("experiment=gaussians_demo")
    assert cfg.data.name == "gaussians" and cfg.model.name == "mlp" and cfg.trainer.steps == 3000


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.batch_size=0", "trainer.batch_size=0 is not valid"),
        ("trainer.steps=-3", "trainer.steps=-3 is not valid"),
        ("optimizer.lr=-1", "optimizer.g.lr=-1.0 is not valid"),
        ("optimizer.betas=[0.5,1.5]", "betas"),
        ("loss.n_critic=0", "loss.n_critic=0 is not valid"),
        ("trainer.precision=8", "allowed: 32, bf16, 16"),
        ("trainer.on_nan=ignore", "allowed: stop, skip"),
        ("logger.log_every=0", "logger.log_every=0 is not valid"),
    ],
)
def test_invalid_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_train(override))


def test_no_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="no limit set"):
        validate(compose_train("trainer.epochs=null"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["trainer.batchsize=3"], "Key 'batchsize' not in 'TrainerConfig'"),
        (["model.widht=3"], "Key 'widht' not in 'DCGANConfig'"),
        (["trainer.steps=many"], "Value 'many' of type 'str' could not be converted to Integer"),
        (["model=vit"], "Could not find 'model/vit'"),
        (["optimizer.name=adamw"], "Invalid value 'adamw', expected one of [adam, rmsprop, sgd]"),
        (["trainer.batch_size=0", "data=gaussians", "model=mlp"], "trainer.batch_size=0 is not valid"),
        (["trainer.device=cuda", "data=gaussians", "model=mlp"], "CUDA is not available"),
        (["trainer.precision=16", "trainer.device=cpu", "data=gaussians", "model=mlp"], "needs CUDA"),
        (["data=gaussians", "model=dcgan"], "model=dcgan needs image data"),
    ],
)
def test_config_errors_through_the_cli(tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists(), "a refused run must leave no run directory"


def test_help_lists_groups_and_options(tmp_path: Path) -> None:
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0
    for line in [
        "model: dcgan, mlp, resnet",
        "loss: hinge, lsgan, minimax, nonsaturating, rpgan, wgan, wgan_gp",
        "data: cifar10",
    ]:
        assert line in res.stdout


def test_cfg_job_prints_config(tmp_path: Path) -> None:
    res = run_cli("--cfg", "job", "model=mlp", "trainer.batch_size=32", cwd=tmp_path)
    assert res.returncode == 0
    cfg = OmegaConf.create(res.stdout)
    assert cfg.model.name == "mlp" and cfg.trainer.batch_size == 32
