"""The config's schema, its closed choices, and the checks that run before any work starts.

The YAML files under configs/ hold every default; the dataclasses here (stored in Hydra's ConfigStore
under `schema/<group>`) give each key its type, so a misspelt key or a wrong type fails when the config
is composed. Model, loss and data-set schemas live beside their code and are stored with `store_schema`.
Closed choices are Enums, parsed from the composed config in one place (`choice`).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from gan_cli.errors import ConfigError

log = logging.getLogger("gan_cli")


def store_schema(group: str, name: str, node: Any) -> None:
    """Register the dataclass that `configs/<group>/<name>.yaml` extends."""
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=node)


class Switch(Enum):
    """auto | true | false (on and off are accepted for true and false)."""

    auto = "auto"
    true = True
    false = False
    on = True
    off = False


class Precision(Enum):
    """What the networks compute in: auto, fp32, bf16 autocast or fp16 autocast (CUDA)."""

    auto = "auto"
    fp32 = 32
    bf16 = "bf16"
    fp16 = 16


class OnNan(Enum):
    stop = "stop"
    skip = "skip"


class LrDecay(Enum):
    none = "none"
    linear = "linear"


class Split(Enum):
    test = "test"
    train = "train"


class Backend(Enum):
    """Where a run's scalars and pictures go, besides metrics.jsonl (always written)."""

    tensorboard = "tensorboard"
    mlflow = "mlflow"
    wandb = "wandb"
    csv = "csv"


class WandbMode(Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


E = TypeVar("E", bound=Enum)

_SPELLINGS = {"32": "fp32", "16": "fp16", "on": "true", "off": "false", "none": "none"}


def choice(value: Any, kind: type[E], key: str) -> E:
    """`value` as a member of `kind`: from a member, its name or value, a bool, or the strings a YAML
    file or a command line give (`true`, `True`, `32`, ...). Anything else is a ConfigError."""
    if isinstance(value, kind):
        return value
    if isinstance(value, int):  # bools too
        for member in kind:
            if member.value is value or (not isinstance(value, bool) and member.value == value):
                return member
    elif isinstance(value, str):
        text = value.strip().lower()
        text = _SPELLINGS.get(text, text)
        if text in kind.__members__:
            return kind.__members__[text]
    allowed = " | ".join(_shown(m) for m in kind)
    raise ConfigError(f"{key}={value!r} is not valid; allowed: {allowed}")


def _shown(member: Enum) -> str:
    return {Precision.fp32: "32", Precision.fp16: "16"}.get(member, member.name)  # type: ignore[call-overload]


@dataclass
class OptimizerConfig:
    name: str = MISSING  # the optimizer's short name (logs, sweep tables)
    _target_: str = MISSING  # the torch.optim class both networks use (optimizer.g/d._target_ set one)
    lr: float = MISSING  # learning rate of both networks (optimizer.g.lr / optimizer.d.lr: one of them)
    betas: Any = None  # Adam's (beta1, beta2)
    eps: Any = None  # numerical stability term
    alpha: Any = None  # RMSprop's smoothing constant
    momentum: Any = None  # SGD / RMSprop momentum
    weight_decay: float = MISSING  # L2 penalty
    fused: Any = MISSING  # auto | true | false: fused (or foreach) optimizer kernels
    lr_decay: LrDecay = MISSING  # none | linear: both rates ramp down to 0 by the end of the run
    lr_decay_start: float = MISSING  # fraction of the run done when the decay begins
    g: Any = MISSING  # G's optimizer: keyword arguments of _target_ (with _partial_: true)
    d: Any = MISSING  # D's optimizer, likewise


@dataclass
class TrainerConfig:
    device: str = MISSING  # auto | cpu | cuda | cuda:N | mps
    threads: Any = MISSING  # auto | N: CPU threads torch computes with
    seed: int = MISSING  # seeds Python, NumPy and torch
    steps: int | None = MISSING  # generator updates
    epochs: float | None = MISSING  # passes over the training data
    max_minutes: float | None = MISSING  # wall-clock budget in minutes
    batch_size: int = MISSING  # images per D and per G update
    precision: Any = MISSING  # auto | 32 | bf16 | 16
    cudnn_benchmark: bool = MISSING  # let cuDNN pick the fastest convolution kernels (CUDA)
    tf32: bool = MISSING  # TensorFloat-32 matrix maths on Ampere and newer (CUDA)
    channels_last: Any = MISSING  # auto | true | false: NHWC memory layout for conv models
    cuda_graphs: Any = MISSING  # auto | true | false (on | off): the whole step as one CUDA graph
    compile: bool = MISSING  # torch.compile the networks
    checkpoint_every: int = MISSING  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = MISSING  # numbered checkpoints kept beside last.pt
    resume: str | None = MISSING  # auto, or the path of a checkpoint or run directory
    resume_force: bool = MISSING  # resume even if the config changed in keys that matter
    on_nan: OnNan = MISSING  # stop | skip: what to do when a loss or weight is not finite


@dataclass
class MlflowConfig:
    tracking_uri: str = MISSING  # the MLflow store: sqlite:///FILE, a folder, or a server (http://...)
    experiment: str | None = MISSING  # experiment name (None: a sweep's folder, else gan_cli)


@dataclass
class WandbConfig:
    mode: WandbMode = MISSING  # offline | online | disabled
    project: str = MISSING  # W&B project
    entity: str | None = MISSING  # W&B user or team (None: the account's default)


@dataclass
class LoggerConfig:
    log_every: int = MISSING  # steps between scalar logs
    sample_every: int = MISSING  # steps between sample grids (0: only at start and end)
    eval_every: int = MISSING  # steps between metric evaluations (0: only at the end)
    num_samples: int = MISSING  # images in a sample grid
    backends: list[Backend] = MISSING  # tensorboard | mlflow | wandb | csv, besides metrics.jsonl
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: Any = MISSING  # auto | true | false: tqdm bar (auto: only on a terminal)
    print_every_s: float = MISSING  # seconds between summary lines when the bar is off
    metrics: list[str] = MISSING  # each evaluation: fid | kid | precision | recall | ...
    eval_images: int = MISSING  # generated images per evaluation
    eval_reference: Split = MISSING  # test | train: the real split generated images are compared with
    eval_real_images: int = MISSING  # real images in that reference set


@dataclass
class TrainConfig:
    data: Any = MISSING  # data set group
    model: Any = MISSING  # architecture group
    loss: Any = MISSING  # adversarial objective group
    augment: Any = MISSING  # augmentation of every image D sees
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    plugins: list[str] = MISSING  # modules to import first (they register models, losses...)


store_schema("optimizer", "base", OptimizerConfig)
store_schema("trainer", "base", TrainerConfig)
store_schema("logger", "base", LoggerConfig)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)


@dataclass(frozen=True)
class Choices:
    """The closed choices of a config, parsed once."""

    precision: Precision
    channels_last: Switch
    cuda_graphs: Switch
    on_nan: OnNan
    fused: Switch
    lr_decay: LrDecay
    progress: Switch
    eval_reference: Split


def choices(cfg: DictConfig) -> Choices:
    t, lg, opt = cfg.trainer, cfg.logger, cfg.optimizer
    return Choices(
        precision=choice(t.precision, Precision, "trainer.precision"),
        channels_last=choice(t.channels_last, Switch, "trainer.channels_last"),
        cuda_graphs=choice(t.cuda_graphs, Switch, "trainer.cuda_graphs"),
        on_nan=choice(t.on_nan, OnNan, "trainer.on_nan"),
        fused=choice(opt.fused, Switch, "optimizer.fused"),
        lr_decay=choice(opt.lr_decay, LrDecay, "optimizer.lr_decay"),
        progress=choice(lg.progress, Switch, "logger.progress"),
        eval_reference=choice(lg.eval_reference, Split, "logger.eval_reference"),
    )


def conditional(model: Any, data: Any) -> bool:
    """model.conditional as a bool. auto: true where the data set's labels name classes
    (data.labels_are_classes: torchvision's MNIST, Fashion-MNIST and CIFAR-10) and two or more of them
    are trained on; false for image folders, whose sub-folders need not be classes, and for points."""
    value = model.get("conditional", False)
    if value != "auto":
        return bool(value)
    classes = data.get("classes")
    return bool(data.get("labels_are_classes", False)) and (classes is None or len(classes) >= 2)


R1_AUTO = 0.3  # loss.r1_gamma=auto on torchvision's image sets (measured on MNIST and Fashion-MNIST)


def r1_gamma(loss: Any, data: Any) -> float:
    """loss.r1_gamma as a number. auto: R1_AUTO where data.labels_are_classes (torchvision's MNIST,
    Fashion-MNIST and CIFAR-10; it helped the first two), 0 for image folders and points, where it made
    the samples worse (bench/RESULTS.md)."""
    value = loss.get("r1_gamma", 0.0)
    if value != "auto":
        return float(value)
    return R1_AUTO if data.get("labels_are_classes", False) else 0.0


def settle_auto(cfg: DictConfig) -> None:
    """Write the answers of model.conditional=auto and loss.r1_gamma=auto into `cfg`, so that the
    networks, the step, the checkpoint and the tools that read it later all see what was run. A
    plugin's model or loss without the key is left alone."""
    if cfg.model.get("conditional") == "auto":
        cfg.model.conditional = answer = conditional(cfg.model, cfg.data)
        why = "the labels name classes" if answer else "data.labels_are_classes is false, or one class"
        log.info("model.conditional=auto: %s (%s)", str(answer).lower(), why)
    if cfg.loss.get("r1_gamma") == "auto":
        cfg.loss.r1_gamma = gamma = r1_gamma(cfg.loss, cfg.data)
        why = "the labels name classes" if gamma else "data.labels_are_classes is false"
        log.info("loss.r1_gamma=auto: %g (%s)", gamma, why)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values (interpolations resolved, Enums as their names, model.conditional=auto
    and loss.r1_gamma=auto settled): what a checkpoint stores and what a resume compares. An
    interpolation that cannot be resolved is a ConfigError."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except InterpolationResolutionError as err:
        key = getattr(err, "full_key", None) or "a key"
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"{key} cannot be resolved: {reason}. An interpolation names another key (${{data.name}}) or a "
            "resolver (${oc.env:VAR,default}); to pass a literal '${', escape it as '\\${'"
        ) from err
    assert isinstance(tree, dict)
    model, data, loss = tree.get("model"), tree.get("data"), tree.get("loss")
    if isinstance(data, dict):
        if isinstance(model, dict) and model.get("conditional") == "auto":
            model["conditional"] = conditional(model, data)
        if isinstance(loss, dict) and loss.get("r1_gamma") == "auto":
            loss["r1_gamma"] = r1_gamma(loss, data)
    return {str(k): v for k, v in tree.items()}


DEFAULT_EPOCHS = 5  # what a run that sets none of trainer.steps, epochs and max_minutes trains


def epoch_limit(trainer: DictConfig) -> float | None:
    """`trainer.epochs`, or DEFAULT_EPOCHS when no limit at all is set: a default limit never cuts
    short one the user gave (trainer.steps=5000 alone trains 5000 steps)."""
    if trainer.steps is None and trainer.epochs is None and trainer.max_minutes is None:
        return DEFAULT_EPOCHS
    return None if trainer.epochs is None else float(trainer.epochs)


# D updates in one step: a step is where a stop signal is seen and what a checkpoint holds whole, so it
# must stay short (recipes use 1 to 5; WGAN's 100-update bursts fit too).
MAX_N_CRITIC = 1000


def _positive(value: float | None, key: str, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{key} must be set")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is not valid; it must be {bound}")


def check_keys(cfg: DictConfig, path: str = "") -> None:
    """Refuse keys the schema does not have. Hydra refuses a misspelt key but suggests `+key=value`,
    which adds it anyway: the run would then ignore it. Nodes without a schema are left alone:
    optimizer.g and optimizer.d (keyword arguments, checked against the optimizer class) and the
    groups of a plugin that brings no schema."""
    kind = OmegaConf.get_type(cfg)
    if kind is not None and dataclasses.is_dataclass(kind):
        known = [f.name for f in dataclasses.fields(kind)]
        for key in map(str, cfg):
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {path}{close[0]}?)" if close else ""
                node = path.rstrip(".") or "the top level"
                raise ConfigError(
                    f"{path}{key} is not a setting{hint}; the settings of {node}: {', '.join(known)}"
                )
    for key in map(str, cfg):
        if OmegaConf.is_interpolation(cfg, key) or OmegaConf.is_missing(cfg, key):
            continue
        child = cfg[key]
        if isinstance(child, DictConfig):
            check_keys(child, f"{path}{key}.")


SEED_LIMIT = 2**63  # seeds are whole numbers in [0, 2**63): what every generator a run seeds accepts


def check_seed(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{key}={value!r} is not valid; give a whole number from 0 to 2**63 - 1")


def check_plugins(names: Any) -> None:
    """Plugins are module names to import; an empty or malformed one would fail deep inside importlib."""
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"plugins: {name!r} is not a module name; give importable modules, e.g. plugins=[my_models]"
            )


def validate(cfg: DictConfig) -> Choices:
    """Refuse keys outside the schema, interpolations that do not resolve and values that would fail
    (or silently misbehave) later, before any work starts; returns the parsed closed choices."""
    check_keys(cfg)
    resolved(cfg)
    check_plugins(cfg.plugins)
    t, lg, opt = cfg.trainer, cfg.logger, cfg.optimizer
    check_seed(t.seed, "trainer.seed")
    parsed = choices(cfg)
    _positive(t.batch_size, "trainer.batch_size")
    if t.threads != "auto" and (
        isinstance(t.threads, bool) or not isinstance(t.threads, int) or t.threads < 1
    ):
        raise ConfigError(
            f"trainer.threads={t.threads!r} is not valid; give auto or a number of threads >= 1"
        )
    _positive(t.steps, "trainer.steps", allow_none=True)
    _positive(t.epochs, "trainer.epochs", allow_none=True)
    _positive(t.max_minutes, "trainer.max_minutes", allow_none=True)
    _positive(t.checkpoint_every, "trainer.checkpoint_every", allow_zero=True)
    _positive(t.keep_checkpoints, "trainer.keep_checkpoints", allow_zero=True)
    _positive(lg.log_every, "logger.log_every")
    _positive(lg.sample_every, "logger.sample_every", allow_zero=True)
    _positive(lg.eval_every, "logger.eval_every", allow_zero=True)
    _positive(lg.num_samples, "logger.num_samples")
    _positive(lg.eval_images, "logger.eval_images")
    _positive(lg.eval_real_images, "logger.eval_real_images")
    if not 0 <= opt.lr_decay_start < 1:
        raise ConfigError(
            f"optimizer.lr_decay_start={opt.lr_decay_start} is not valid; give the fraction of the run "
            "done when the decay begins, in [0, 1)"
        )
    for net in ("g", "d"):
        group = opt[net]
        _positive(group.get("lr"), f"optimizer.{net}.lr")
        for key in ("weight_decay", "momentum"):
            if group.get(key) is not None:
                _positive(group[key], f"optimizer.{net}.{key}", allow_zero=True)
        if group.get("betas") is not None:
            betas = list(group.betas)
            if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise ConfigError(f"optimizer.{net}.betas={betas} is not valid; give two numbers in [0, 1)")
        if group.get("eps") is not None:
            _positive(group.eps, f"optimizer.{net}.eps")
    if cfg.model.get("conditional", False) not in (True, False, "auto"):
        raise ConfigError(
            f"model.conditional={cfg.model.conditional!r} is not valid; give true, false or auto (true where "
            "data.labels_are_classes)"
        )
    r1 = cfg.loss.r1_gamma
    if r1 != "auto" and (isinstance(r1, bool) or not isinstance(r1, (int, float))):
        raise ConfigError(f"loss.r1_gamma={r1!r} is not valid; give auto or a number >= 0 (0: off)")
    if r1 != "auto":
        _positive(float(r1), "loss.r1_gamma", allow_zero=True)
    _positive(cfg.loss.r2_gamma, "loss.r2_gamma", allow_zero=True)
    every = cfg.loss.reg_every
    if every != "auto" and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(f"loss.reg_every={every!r} is not valid; give auto or a number of D steps >= 1")
    if not 1 <= cfg.loss.n_critic <= MAX_N_CRITIC:
        raise ConfigError(
            f"loss.n_critic={cfg.loss.n_critic} is not valid; it must be >= 1 and <= {MAX_N_CRITIC} "
            "(D steps per G step)"
        )
    _positive(lg.print_every_s, "logger.print_every_s", allow_zero=True)
    _validate_sizes(cfg)
    return parsed


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
    if "mbstd_group" in model:
        _positive(model.mbstd_group, "model.mbstd_group", allow_zero=True)
    for key in ("g_hidden", "d_hidden"):
        if key in model and not all(int(w) >= 1 for w in model[key]):
            raise ConfigError(f"model.{key}={list(model[key])} is not valid; every width must be >= 1")
