"""Typed schema of the training config and the checks that run before any work starts.

The YAML files under configs/ extend these dataclasses (stored in Hydra's ConfigStore under
`schema/<group>`), so a misspelt key or a wrong type fails when the config is composed.
Model, loss and data-set schemas live beside their code and are stored with `store_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig

from gan_cli.errors import ConfigError
from gan_cli.schedule import DECAYS


def store_schema(group: str, name: str, node: Any) -> None:
    """Register the dataclass that `configs/<group>/<name>.yaml` extends."""
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=node)


class OptimizerName(Enum):
    adam = "adam"
    rmsprop = "rmsprop"
    sgd = "sgd"


@dataclass
class ParamGroupConfig:
    lr: float = II("..lr")  # learning rate of this network (defaults to optimizer.lr)
    betas: list[float] = II("..betas")  # Adam's (beta1, beta2)
    weight_decay: float = II("..weight_decay")  # L2 penalty
    momentum: float = II("..momentum")  # SGD / RMSprop momentum


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam  # adam | rmsprop | sgd
    lr: float = 2e-4  # shared learning rate; optimizer.g.lr / optimizer.d.lr override it per network
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam betas
    weight_decay: float = 0.0  # L2 penalty
    momentum: float = 0.0  # SGD / RMSprop momentum
    alpha: float = 0.99  # RMSprop smoothing constant
    eps: float = 1e-8  # numerical stability term
    fused: str = "auto"  # auto | true | false: fused (or foreach) optimizer kernels
    lr_decay: str = "none"  # none | linear: both rates ramp down to 0 by the end of the run
    lr_decay_start: float = 0.5  # fraction of the run (steps or minutes) done when the decay begins
    g: ParamGroupConfig = field(default_factory=ParamGroupConfig)  # generator's settings
    d: ParamGroupConfig = field(default_factory=ParamGroupConfig)  # discriminator's settings


@dataclass
class TrainerConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0  # seeds Python, NumPy and torch
    steps: int | None = None  # generator updates; the run stops at the first limit reached
    epochs: float | None = 5  # passes over the training data (fractions allowed)
    max_minutes: float | None = None  # wall-clock budget in minutes
    batch_size: int = 64  # images per D and per G update
    precision: str = "auto"  # auto | 32 | bf16 | 16 (auto: bf16 for conv models on CUDA and bf16 CPUs)
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest convolution kernels (CUDA)
    tf32: bool = True  # TensorFloat-32 matrix maths on Ampere and newer (CUDA)
    channels_last: str = "auto"  # auto | true | false: NHWC memory layout for conv models on CUDA
    cuda_graphs: str = "auto"  # auto | on | off: capture the whole D+G step as one CUDA graph
    compile: bool = False  # torch.compile the networks
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # numbered checkpoints kept beside last.pt
    resume: str | None = None  # auto, or the path of a checkpoint or run directory
    resume_force: bool = False  # resume even if the config changed in keys that matter
    on_nan: str = "stop"  # stop | skip: what to do when a loss or weight is not finite


@dataclass
class LoggerConfig:
    log_every: int = 50  # steps between scalar logs (the only host syncs of the loop)
    sample_every: int = 500  # steps between sample grids (0: only at start and end)
    eval_every: int = 0  # steps between metric evaluations (0: only at the end)
    num_samples: int = 64  # images in a sample grid
    tensorboard: bool = True  # write TensorBoard event files under tb/
    progress: str = "auto"  # auto | true | false: tqdm bar (auto: only on a terminal)
    print_every_s: float = 30.0  # seconds between summary lines when the bar is off
    metrics: list[str] = field(default_factory=list)  # each evaluation: fid | kid | precision | recall | ...
    eval_images: int = 5000  # generated images per evaluation
    eval_reference: str = "test"  # test | train: the real split generated images are compared with
    eval_real_images: int = 10000  # real images in that reference set (at most the split's size)


@dataclass
class TrainConfig:
    data: Any = MISSING  # data set group
    model: Any = MISSING  # architecture group
    loss: Any = MISSING  # adversarial objective group
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    output_dir: str = "${hydra:runtime.output_dir}"  # where this run writes; Hydra's run directory
    plugins: list[str] = field(
        default_factory=list
    )  # modules to import first (they register models, losses...)


store_schema("optimizer", "base", OptimizerConfig)
store_schema("trainer", "base", TrainerConfig)
store_schema("logger", "base", LoggerConfig)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)


PRECISIONS = ("32", "bf16", "16", "auto")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; allowed: {', '.join(allowed)}")


def _positive(value: float | None, key: str, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{key} must be set")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is not valid; it must be {bound}")


def validate(cfg: DictConfig) -> None:
    """Refuse values that would fail (or silently misbehave) later, before any work starts."""
    t, lg, opt = cfg.trainer, cfg.logger, cfg.optimizer
    _positive(t.batch_size, "trainer.batch_size")
    _positive(t.steps, "trainer.steps", allow_none=True)
    _positive(t.epochs, "trainer.epochs", allow_none=True)
    _positive(t.max_minutes, "trainer.max_minutes", allow_none=True)
    if t.steps is None and t.epochs is None and t.max_minutes is None:
        raise ConfigError("no limit set: give trainer.steps, trainer.epochs or trainer.max_minutes")
    _positive(t.checkpoint_every, "trainer.checkpoint_every", allow_zero=True)
    _positive(t.keep_checkpoints, "trainer.keep_checkpoints", allow_zero=True)
    _choice(str(t.precision), PRECISIONS, "trainer.precision")
    _choice(t.cuda_graphs, ("auto", "on", "off"), "trainer.cuda_graphs")
    _choice(str(t.channels_last).lower(), ("auto", "true", "false"), "trainer.channels_last")
    _choice(t.on_nan, ("stop", "skip"), "trainer.on_nan")
    _positive(lg.log_every, "logger.log_every")
    _positive(lg.sample_every, "logger.sample_every", allow_zero=True)
    _positive(lg.eval_every, "logger.eval_every", allow_zero=True)
    _positive(lg.num_samples, "logger.num_samples")
    _choice(str(lg.progress).lower(), ("auto", "true", "false"), "logger.progress")
    _positive(lg.eval_images, "logger.eval_images")
    _positive(lg.eval_real_images, "logger.eval_real_images")
    _choice(str(lg.eval_reference), ("test", "train"), "logger.eval_reference")
    _choice(str(opt.fused).lower(), ("auto", "true", "false"), "optimizer.fused")
    _choice(str(opt.lr_decay), DECAYS, "optimizer.lr_decay")
    if not 0 <= opt.lr_decay_start < 1:
        raise ConfigError(
            f"optimizer.lr_decay_start={opt.lr_decay_start} is not valid; give the fraction of the run "
            "done when the decay begins, in [0, 1)"
        )
    for net in ("g", "d"):
        group = opt[net]
        _positive(group.lr, f"optimizer.{net}.lr")
        _positive(group.weight_decay, f"optimizer.{net}.weight_decay", allow_zero=True)
        _positive(group.momentum, f"optimizer.{net}.momentum", allow_zero=True)
        betas = list(group.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"optimizer.{net}.betas={betas} is not valid; give two numbers in [0, 1)")
    if cfg.loss.n_critic < 1:
        raise ConfigError(
            f"loss.n_critic={cfg.loss.n_critic} is not valid; it must be >= 1 (D steps per G step)"
        )
    _positive(opt.eps, "optimizer.eps")
    _positive(lg.print_every_s, "logger.print_every_s", allow_zero=True)
    _validate_sizes(cfg)


def _validate_sizes(cfg: DictConfig) -> None:
    """Sizes in the data and model groups (each group's own keys, checked where present)."""
    data, model = cfg.data, cfg.model
    for key in ("image_size", "num_samples", "max_memory_mb"):
        if key in data:
            _positive(data[key], f"data.{key}")
    if "num_workers" in data:
        _positive(data.num_workers, "data.num_workers", allow_zero=True)
    for key in ("z_dim", "g_width", "d_width"):
        if key in model:
            _positive(model[key], f"model.{key}")
    for key in ("g_hidden", "d_hidden"):
        if key in model and not all(int(w) >= 1 for w in model[key]):
            raise ConfigError(f"model.{key}={list(model[key])} is not valid; every width must be >= 1")
