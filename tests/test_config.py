"""Composing configs: every option of every group, and the errors a user sees for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

import gan_cli.cli  # noqa: F401  (registers every schema)
from gan_cli.config import DEFAULT_EPOCHS, epoch_limit, validate
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
        assert name == option


def test_defaults() -> None:
    cfg = compose_train()
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ("mnist", "dcgan", "nonsaturating")
    assert cfg.optimizer.name == "adam" and list(cfg.optimizer.betas) == [0.5, 0.999]
    assert cfg.optimizer.g._target_ == "torch.optim.Adam" and cfg.model.g_width == 64


def test_per_network_optimizer_settings() -> None:
    cfg = compose_train("optimizer.lr=1e-3", "optimizer.d.lr=4e-4")
    assert cfg.optimizer.g.lr == 1e-3 and cfg.optimizer.d.lr == 4e-4


def test_wgan_defaults_to_rmsprop_unless_told() -> None:
    assert compose_train("loss=wgan").optimizer.name == "rmsprop"
    assert compose_train("loss=wgan", "optimizer=adam").optimizer.name == "adam"


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
        ("trainer.precision=8", "allowed: auto | 32 | bf16 | 16"),
        ("trainer.cuda_graphs=maybe", "allowed: auto | true | false"),
        ("logger.log_every=0", "logger.log_every=0 is not valid"),
    ],
)
def test_invalid_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_train(override))


def test_the_default_epochs_apply_only_without_any_limit() -> None:
    assert epoch_limit(compose_train().trainer) == DEFAULT_EPOCHS == 5
    assert epoch_limit(compose_train("trainer.steps=5000").trainer) is None
    assert epoch_limit(compose_train("trainer.max_minutes=30").trainer) is None
    assert epoch_limit(compose_train("trainer.epochs=2", "trainer.steps=10").trainer) == 2
    validate(compose_train("trainer.epochs=null"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.batchsize=32", "trainer.batchsize is not a setting (did you mean trainer.batch_size?)"),
        (
            "+model.widht=3",
            "model.widht is not a setting (did you mean model.g_width?); the settings of model: ",
        ),
        ("+data.colour=1", "data.colour is not a setting; the settings of data: name, root, download"),
        ("+loss.n_crit=2", "did you mean loss.n_critic?"),
        ("+logger.tb.dir=x", "logger.tb is not a setting"),
        (
            "+foo=1",
            "foo is not a setting; the settings of the top level: data, model, loss, augment, optimizer",
        ),
    ],
)
def test_keys_outside_the_schema_are_refused_even_with_plus(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_train("debug=tiny", override))
    assert message in str(err.value)
    assert "batch_size, precision" in str(err.value) or "trainer" not in override


def test_free_keyword_nodes_are_left_to_their_own_check() -> None:
    validate(compose_train("debug=tiny", "+optimizer.g.amsgrad=true"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["trainer.batchsize=3"], "Key 'batchsize' not in 'TrainerConfig'"),
        (["+trainer.batchsize=3"], "trainer.batchsize is not a setting (did you mean trainer.batch_size?)"),
        (["model.widht=3"], "Key 'widht' not in 'DCGANConfig'"),
        (["trainer.steps=many"], "Value 'many' of type 'str' could not be converted to Integer"),
        (["model=vit"], "Could not find 'model/vit'"),
        (["optimizer=adamx"], "Could not find 'optimizer/adamx'"),
        (
            ["optimizer._target_=torch.optim.Nope", "debug=tiny"],
            "optimizer.g._target_='torch.optim.Nope' cannot",
        ),
        (["+optimizer.g.lrr=1", "debug=tiny"], "torch.optim.Adam does not take these settings"),
        (["trainer.on_nan=ignore"], "Invalid value 'ignore', expected one of [stop, skip]"),
        (["trainer.batch_size=0", "data=gaussians", "model=mlp"], "trainer.batch_size=0 is not valid"),
        (["trainer.device=cuda", "data=gaussians", "model=mlp"], "CUDA is not available"),
        (["trainer.precision=16", "trainer.device=cpu", "data=gaussians", "model=mlp"], "needs CUDA"),
        (["data=gaussians", "model=dcgan"], "model=dcgan needs image data"),
    ],
)
def test_config_errors_through_the_cli(tmp_path: Path, args: list[str], message: str) -> None:
    res = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2, "bad input exits 2, whether Hydra or gan_cli refuses it"
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
    groups = {line.split(":")[0] for line in res.stdout.split("== Settings")[0].splitlines() if ": " in line}
    assert not any(g.startswith(("schema", "debug/", "hydra")) for g in groups), groups


@pytest.mark.parametrize(
    ("choice", "group"),
    [("model=dcgan", "model"), ("model=mlp", "model")]
    + [(f"{g}={o}", g) for g in ("trainer", "logger", "optimizer", "loss", "data") for o in options(g)[:1]],
)
def test_help_prints_each_setting_with_its_comment(tmp_path: Path, choice: str, group: str) -> None:
    """What the YAML file of the chosen option says beside each key, --help prints beside the key."""
    res = run_cli(choice, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    shown = res.stdout.split(f"\n{group}:\n")[1].split("\n\n")[0]
    option = choice.split("=")[1]
    for line in (CONFIGS / group / f"{option}.yaml").read_text().splitlines():
        key, _, comment = line.partition(": ")
        if "  # " in comment and not line.startswith((" ", "#")):
            assert f"  {key}: " in shown and comment.split("  # ", 1)[1] in shown, line


def test_cfg_job_prints_config(tmp_path: Path) -> None:
    res = run_cli("--cfg", "job", "model=mlp", "trainer.batch_size=32", cwd=tmp_path)
    assert res.returncode == 0
    cfg = OmegaConf.create(res.stdout)
    assert cfg.model.name == "mlp" and cfg.trainer.batch_size == 32


SCHEMA_GROUPS = ["data", "model", "loss", "optimizer", "trainer", "logger"]


def _yaml_options() -> list[tuple[str, str]]:
    return [(g, o) for g in SCHEMA_GROUPS for o in options(g)]


@pytest.mark.parametrize(("group", "option"), _yaml_options())
def test_every_default_is_written_once(group: str, option: str) -> None:
    """A key the YAML file sets has no default of its own in the schema (the YAML is the one source)."""
    from hydra.core.config_store import ConfigStore

    text = OmegaConf.load(CONFIGS / group / f"{option}.yaml")
    schema_ref = next(d for d in text.defaults if str(d).startswith("/schema/"))
    _, _, kind, name = str(schema_ref).split("@")[0].split("/")
    node = ConfigStore.instance().load(f"schema/{kind}/{name}.yaml").node

    def check(yaml: DictConfig, schema: DictConfig, prefix: str) -> None:
        for key in yaml:
            if key == "defaults" or key not in schema:
                continue
            if isinstance(yaml[key], DictConfig) and not OmegaConf.is_missing(schema, key):
                check(yaml[key], schema[key], f"{prefix}{key}.")  # a nested schema: its own keys
                continue
            assert OmegaConf.is_missing(schema, key) or schema[key] is None, (
                f"configs/{group}/{option}.yaml sets {prefix}{key} and schema/{kind}/{name} gives it a "
                f"default ({schema[key]!r}): write the default once, in the YAML"
            )

    check(text, node, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", "true"), ("True", "true"), ("false", "false"), ("auto", "auto"), ("on", "true")],
)
def test_auto_true_false_choices_parse_from_the_command_line(value: str, expected: str) -> None:
    """`trainer.channels_last=true` is a bool once Hydra parses it: it must still mean true."""
    cfg = compose_train(
        f"trainer.channels_last={value}", f"optimizer.fused={value}", f"logger.progress={value}"
    )
    parsed = validate(cfg)
    assert parsed.channels_last.name == parsed.fused.name == parsed.progress.name == expected
    with pytest.raises(ConfigError, match="trainer.channels_last='maybe' is not valid; allowed: auto | true"):
        validate(compose_train("trainer.channels_last=maybe"))


def test_channels_last_true_trains_in_nhwc(tmp_path: Path, mnist_root: Path) -> None:
    from gan_cli.run import build_run

    cfg = compose_train(
        "debug=tiny", f"data.root={mnist_root}", "data.download=false", "trainer.channels_last=true"
    )
    run = build_run(cfg, validate(cfg), tmp_path)
    assert run.channels_last
    assert next(run.D.parameters()).is_contiguous(memory_format=torch.channels_last)


def test_any_torch_optimizer_by_class(tmp_path: Path, mnist_root: Path) -> None:
    """optimizer=adamw, or any torch.optim class named by _target_, with G's and D's own settings."""
    from gan_cli.run import build_run

    common = ["debug=tiny", f"data.root={mnist_root}", "data.download=false"]
    cfg = compose_train(*common, "optimizer=adamw", "optimizer.d.lr=1e-3")
    run = build_run(cfg, validate(cfg), tmp_path / "a")
    assert (
        type(run.nets.opt_g) is torch.optim.AdamW and run.nets.opt_g.param_groups[0]["weight_decay"] == 0.01
    )
    assert run.nets.opt_g.param_groups[0]["lr"] == 4e-4 and run.nets.opt_d.param_groups[0]["lr"] == 1e-3
    cfg = compose_train(*common, "optimizer.g._target_=torch.optim.NAdam", "optimizer.betas=[0.0,0.99]")
    run = build_run(cfg, validate(cfg), tmp_path / "b")
    assert type(run.nets.opt_g) is torch.optim.NAdam and type(run.nets.opt_d) is torch.optim.Adam
    assert (
        tuple(run.nets.opt_d.param_groups[0]["betas"])
        == tuple(run.nets.opt_g.param_groups[0]["betas"])
        == (0.0, 0.99)
    )


def test_debug_tiny_shrinks_each_model() -> None:
    for model, key, value in [("dcgan", "g_width", 8), ("mlp", "g_hidden", [32]), ("resnet", "d_width", 8)]:
        cfg = compose_train("debug=tiny", f"model={model}")
        assert cfg.trainer.device == "cpu" and cfg.trainer.steps == 4 and cfg.trainer.epochs is None
        assert OmegaConf.to_container(cfg.model)[key] == value  # type: ignore[index]
