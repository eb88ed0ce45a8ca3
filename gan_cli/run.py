"""Building a run: everything `fit` needs (networks, EMA, optimizers, loss, data and batches, schedule,
step, evaluation, fixed noise, NaN guard and loggers), made once, in one function, from the config."""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli import checkpoint as ckpt
from gan_cli import distributed
from gan_cli.augment import Augment
from gan_cli.augment import check_config as check_augment
from gan_cli.config import Choices, OnNan, Switch, epoch_limit, r1_gamma, resolved
from gan_cli.datasets import Batches, Data, build_data, to_unit_range
from gan_cli.device import (
    autocast_dtype,
    channels_last,
    check_precision,
    configure_backends,
    precision_summary,
    resolve_device,
    use_fused,
)
from gan_cli.ema import EMA
from gan_cli.errors import ConfigError
from gan_cli.evaluation import Evaluator, grid_labels
from gan_cli.faults import NanGuard, StepUndo
from gan_cli.graphs import StepFn, build_step, graph_blocker
from gan_cli.logger import (
    HEADLINE,
    Loggers,
    MetricLogger,
    NullLogger,
    ProgressLogger,
    show_progress,
)
from gan_cli.losses import build_loss
from gan_cli.models import build_models, check_model_config, label_classes
from gan_cli.resume import ResumePoint
from gan_cli.samples import image_grid, scatter_plot
from gan_cli.schedule import LinearDecay, build_schedule
from gan_cli.step import Nets, Penalties, TrainStep, penalty_summary, reg_interval
from gan_cli.trackers import build_loggers

log = logging.getLogger("gan_cli")

SCATTER_POINTS = 2000  # generated points in a scatter plot of a 2-D run


@dataclass
class Run:
    """What a run is made of; `fit` runs it."""

    cfg: DictConfig
    run_dir: Path  # where it writes
    choices: Choices  # the config's closed choices, parsed
    dist: distributed.Dist  # this process among the run's processes
    data: Data
    batches: Batches
    G: nn.Module  # the plain networks (saved, averaged, restored)
    D: nn.Module
    nets: Nets  # what a step touches
    train_step: TrainStep
    step_fn: StepFn  # train_step, maybe captured as a CUDA graph
    channels_last: bool  # batches are handed to the step in NHWC
    schedule: LinearDecay | None
    evaluator: Evaluator
    fixed_z: torch.Tensor  # noise of the sample grids
    fixed_y: torch.Tensor | None  # their labels (conditional models: one row per class)
    nrow: int | None
    real_points: torch.Tensor | None  # 2-D data: real points drawn under the generated ones
    guard: NanGuard
    logger: MetricLogger
    progress: ProgressLogger | NullLogger
    start_step: int  # 0, or the step a resumed run continues from
    total_steps: int | None  # the step limit (None: only a time limit)
    overrides: list[str]  # the command line's overrides (HParams, the resume command)

    def state(self, step: int) -> ckpt.TrainState:
        return ckpt.TrainState.capture(
            resolved(self.cfg),
            step,
            self.G,
            self.D,
            self.nets,
            self.batches,
            self.fixed_z,
            self.guard.skipped,
            self.train_step.held_values(),
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def import_plugins(modules: list[str]) -> None:
    """Import the user's modules named in `plugins`, whose decorators register new models, losses or data."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"plugins: cannot import {name!r}: {err}. Put the module on PYTHONPATH or install it."
            ) from err


def optimizer_factory(node: DictConfig, fused: bool, key: str) -> Callable[[Any], torch.optim.Optimizer]:
    """The optimizer `node` describes (a `_target_` with `_partial_: true` and its keyword arguments),
    checked against the class before anything is built; call it with the parameters. Fused kernels
    where the class has them, else foreach ones, when `fused`."""
    spec = OmegaConf.to_container(node, resolve=True)
    assert isinstance(spec, dict)
    target = spec.get("_target_")
    try:
        factory = instantiate(spec, _partial_=True, _convert_="all")
    except InstantiationException as err:
        raise ConfigError(
            f"{key}._target_={target!r} cannot be used: {str(err).splitlines()[0]}. Name an optimizer "
            "class, e.g. torch.optim.Adam, or choose optimizer=adam|adamw|rmsprop|sgd"
        ) from err
    accepted = inspect.signature(factory.func).parameters
    extra: dict[str, Any] = {}
    if fused and "fused" in accepted:
        extra["fused"] = True
    elif fused and "foreach" in accepted:
        extra["foreach"] = True
    try:
        inspect.signature(factory.func).bind(None, **factory.keywords, **extra)
    except TypeError as err:
        raise ConfigError(
            f"{key}: {target} does not take these settings ({err}); its settings are "
            f"{', '.join(p for p in accepted if p != 'params')}"
        ) from err

    def build(params: Any) -> torch.optim.Optimizer:
        try:
            return factory(params, **extra)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key}: {target} refused its settings: {err}") from err

    return build


def build_optimizer(node: DictConfig, params: Any, fused: bool, key: str) -> torch.optim.Optimizer:
    return optimizer_factory(node, fused, key)(params)


def total_steps(cfg: DictConfig, per_epoch: int, n_critic: int) -> int | None:
    limits = []
    epochs = epoch_limit(cfg)
    if cfg.steps is not None:
        limits.append(int(cfg.steps))
    if epochs is not None:
        limits.append(max(1, math.ceil(epochs * per_epoch / n_critic)))
    return min(limits) if limits else None


def parse_override_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run_hparams(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """The run's settings for the HParams dashboard: its main choices plus every command-line override."""
    params: dict[str, Any] = {
        "data": cfg.data.name,
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "optimizer": cfg.optimizer.name,
        "lr/G": cfg.optimizer.g.lr,
        "lr/D": cfg.optimizer.d.lr,
        "batch_size": cfg.trainer.batch_size,
        "seed": cfg.trainer.seed,
    }
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key not in ("data.root", "trainer.device", "trainer.resume"):
            params[key] = parse_override_value(value)
    return params


def real_picture(data: Data, batches: Batches, n: int, real_points: torch.Tensor | None) -> torch.Tensor:
    """The picture of real data logged once at the start: a grid of images, or the points alone."""
    if real_points is not None:
        return scatter_plot(real_points[:0], real_points)
    if data.tensor is not None:
        return image_grid(to_unit_range(data.tensor[:n].clone()))
    images = batches.next()[0][:n]
    batches.seek(0, 0)
    return image_grid(images)


def data_summary(name: str, data: Data) -> str:
    """What the data set turned out to hold: `mnist: 60000 images of 1x28x28, 10 classes`."""
    if data.kind == "points":
        return f"{name}: {len(data)} points in {data.shape[0]} dimensions"
    classes = f"{data.num_classes} classes" if data.num_classes else "no labels"
    return f"{name}: {len(data)} images of {'x'.join(map(str, data.shape))}, {classes}"


def default_loggers(
    cfg: DictConfig, run_dir: Path, start: int, overrides: Sequence[str] = ()
) -> list[MetricLogger]:
    """The trackers of logger.backends and metrics.jsonl, continuing after `start`."""
    return build_loggers(cfg, run_dir, start, overrides)


def build_run(
    cfg: DictConfig,
    choices: Choices,
    run_dir: Path,
    *,
    resume: ResumePoint | None = None,
    overrides: Sequence[str] = (),
    loggers: Sequence[MetricLogger] | None = None,
    progress: ProgressLogger | NullLogger | None = None,
    wrap_step: Callable[[StepFn], StepFn] | None = None,
) -> Run:
    """Everything a run is made of, in the order that fixes its random numbers (the same seed and config
    give the same run)."""
    t_cfg, l_cfg = cfg.trainer, cfg.logger
    import_plugins(cfg.plugins)
    dist = distributed.setup(resolve_device(t_cfg.device), int(t_cfg.batch_size))
    device = dist.device
    check_precision(choices.precision, device)
    check_model_config(cfg)
    check_augment(cfg.augment)
    fused = use_fused(choices.fused, device)
    make_opt_g = optimizer_factory(cfg.optimizer.g, fused, "optimizer.g")
    make_opt_d = optimizer_factory(cfg.optimizer.d, fused, "optimizer.d")
    if dist.is_main:
        ckpt.prepare_folder(run_dir / "checkpoints")

    seed_everything(t_cfg.seed)
    configure_backends(device, t_cfg.cudnn_benchmark, t_cfg.tf32)
    with dist.main_first():
        data = build_data(cfg.data)
    log.info("data: %s", data_summary(str(cfg.data.name), data))
    num_workers = int(cfg.data.get("num_workers", 2))
    mirror = bool(cfg.data.get("mirror", False))
    batches = Batches(data, t_cfg.batch_size, device, t_cfg.seed, num_workers, dist.shard, mirror)
    if cfg.augment.name != "none" and data.kind != "image":
        raise ConfigError(f"augment={cfg.augment.name} needs image data; data={cfg.data.name} holds points")
    G, D = build_models(cfg.model, data)
    conv = data.kind == "image" and any(isinstance(m, nn.Conv2d) for m in D.modules())
    nhwc = channels_last(choices.channels_last, device, conv)
    amp_dtype = autocast_dtype(choices.precision, device, conv)
    log.info("precision: %s", precision_summary(choices.precision, amp_dtype, device, conv))
    memory_format = torch.channels_last if nhwc else torch.contiguous_format
    G.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    D.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    loss = build_loss(cfg.loss)
    G_run, D_run = dist.wrap(G), dist.wrap(D)
    nets = Nets(
        G=torch.compile(G_run) if t_cfg.compile else G_run,  # type: ignore[arg-type]
        D=torch.compile(D_run) if t_cfg.compile else D_run,  # type: ignore[arg-type]
        loss=loss,
        opt_g=make_opt_g(G.parameters()),
        opt_d=make_opt_d(D.parameters()),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        device=device,
        amp_dtype=amp_dtype,
        z_dim=int(cfg.model.z_dim),
        shard=dist.shard,
        ema=EMA(G, float(cfg.model.ema_decay)) if cfg.model.get("ema_decay", 0) else None,
        num_classes=label_classes(cfg.model, data.num_classes),
        augment=Augment(cfg.augment, device),
        bare_D=D if dist.enabled else None,
        average_grads=dist.average_grads if dist.enabled else None,
        uncompiled_D=D_run if t_cfg.compile else None,
    )
    if data.subset is not None:
        log.info("training on %d images chosen by data.limit / data.classes", len(data.subset))
    n_critic = int(cfg.loss.n_critic)
    total = total_steps(t_cfg, batches.per_epoch, n_critic)
    rates = [(nets.opt_g, float(cfg.optimizer.g.lr)), (nets.opt_d, float(cfg.optimizer.d.lr))]
    start_at = float(cfg.optimizer.lr_decay_start)
    schedule = build_schedule(choices.lr_decay, start_at, rates, total, t_cfg.max_minutes)
    blocker = graph_blocker(device, dist.world, schedule is not None, nets.scaler.is_enabled())
    graphed = choices.cuda_graphs is not Switch.false and blocker is None
    every = reg_interval(cfg.loss.reg_every, graphed)
    penalties = Penalties(r1_gamma(cfg.loss, cfg.data), float(cfg.loss.r2_gamma), every)
    if penalties.active:
        log.info("penalties: %s", penalty_summary(penalties, cfg.loss.reg_every))
    train_step = TrainStep(nets, n_critic, penalties)
    step_fn: StepFn = train_step if wrap_step is None else wrap_step(train_step)
    lazy = penalties.active and penalties.every > 1
    blocker = graph_blocker(device, dist.world, schedule is not None, nets.scaler.is_enabled(), lazy)
    step_fn = build_step(step_fn, choices.cuda_graphs, blocker, [nets.opt_d, nets.opt_g], device)
    evaluator = Evaluator(cfg, data, device, t_cfg.seed + 2)
    n_fixed = SCATTER_POINTS if data.kind == "points" else int(l_cfg.num_samples)
    fixed_y, nrow = None, None
    if cfg.model.get("conditional", False):  # one row per class
        fixed_y, nrow = grid_labels(n_fixed, data.num_classes)
        n_fixed, fixed_y = len(fixed_y), fixed_y.to(device)
    gen = torch.Generator().manual_seed(t_cfg.seed + 1)
    fixed_z = torch.randn(n_fixed, nets.z_dim, generator=gen).to(device)
    real_points = data.tensor[:SCATTER_POINTS] if data.kind == "points" and data.tensor is not None else None

    undo = None
    if choices.on_nan is OnNan.skip:  # everything a step changes, to put back when it goes bad
        averaged = [nets.ema.model] if nets.ema is not None else []
        counts = [nets.ema.num_updates] if nets.ema is not None else []
        undo = StepUndo([G, D, *averaged], [nets.opt_g, nets.opt_d], nets.scaler, counts)
    guard = NanGuard(choices.on_nan.value, device, [G, D], undo, run_dir / "checkpoints", dist.max)

    start = 0
    if resume is not None:
        resume.state.check_fits(resume.path, data.shape, str(cfg.model.name))
        resume.state.restore(resume.path, G, D, nets, batches)
        start = int(resume.state.step)
        fixed_z = resume.state.fixed_z.to(device)
        guard.skipped = int(resume.state.skipped_steps)
        train_step.resume(start, resume.state.step_held)
        ckpt.set_rng_state(resume.state.rng)
        log.info("resumed from %s at step %d; writing on in %s", resume.path, start, run_dir)

    if not dist.is_main:
        logger: MetricLogger = NullLogger()
        progress = NullLogger()
    else:
        if progress is None:
            show = show_progress(choices.progress.name)
            progress = ProgressLogger(start, total or 0, show, float(l_cfg.print_every_s))
        chosen = list(loggers) if loggers is not None else default_loggers(cfg, run_dir, start, overrides)
        logger = Loggers([*chosen, progress])
    if start == 0:
        tags = [*HEADLINE, *[f"metrics/{n}" for n in evaluator.names], "objective"]
        logger.hparams(run_hparams(cfg, overrides), tags)
        if dist.is_main:
            logger.image("samples/real", real_picture(data, batches, int(l_cfg.num_samples), real_points), 0)
    return Run(
        cfg=cfg,
        run_dir=run_dir,
        choices=choices,
        dist=dist,
        data=data,
        batches=batches,
        G=G,
        D=D,
        nets=nets,
        train_step=train_step,
        step_fn=step_fn,
        channels_last=nhwc,
        schedule=schedule,
        evaluator=evaluator,
        fixed_z=fixed_z,
        fixed_y=fixed_y,
        nrow=nrow,
        real_points=real_points,
        guard=guard,
        logger=logger,
        progress=progress,
        start_step=start,
        total_steps=total,
        overrides=list(overrides),
    )
