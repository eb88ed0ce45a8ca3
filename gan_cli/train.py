"""The training loop: a pure `train(cfg) -> dict` that the `gan-train` command calls.

Each step is n_critic D updates and one G update. Scalars are summed on the device and read back
only every `logger.log_every` steps; sampling, checkpointing and evaluation are every-N-steps hooks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli import __version__, distributed, objective, resume
from gan_cli import checkpoint as ckpt
from gan_cli.config import validate
from gan_cli.datasets import Batches, Data, build_data, to_unit_range
from gan_cli.device import autocast_dtype, resolve_device
from gan_cli.ema import EMA, recompute_norm_stats
from gan_cli.errors import CheckpointError, ConfigError
from gan_cli.evaluation import Evaluator, grid_labels, label_classes
from gan_cli.fast import auto_precision, build_step, fused_by_default
from gan_cli.faults import NanGuard, StepUndo
from gan_cli.logger import parse_override_value
from gan_cli.losses import Loss, build_loss
from gan_cli.models import build_models, check_model_config
from gan_cli.samples import image_grid, save_png, scatter_plot
from gan_cli.schedule import LinearDecay, build_schedule
from gan_cli.signals import GracefulStop

log = logging.getLogger("gan_cli")

BASE_STATS = ["loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"]
SCATTER_POINTS = 2000


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


def configure_backends(cfg: DictConfig, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def make_optimizer(
    params: Any, opt: DictConfig, group: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    name = opt.name.value if hasattr(opt.name, "value") else str(opt.name)
    fused = str(opt.fused).lower()
    use_fused = fused_by_default(device) if fused == "auto" else fused == "true"
    kwargs: dict[str, Any] = {"lr": group.lr, "weight_decay": group.weight_decay}
    if name == "adam":
        return torch.optim.Adam(
            params, betas=tuple(group.betas), eps=opt.eps, fused=use_fused or None, **kwargs
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, alpha=opt.alpha, eps=opt.eps, momentum=group.momentum, foreach=use_fused or None, **kwargs
        )
    return torch.optim.SGD(params, momentum=group.momentum, fused=use_fused or None, **kwargs)


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@dataclass
class Parts:
    """Everything one training step touches."""

    G: nn.Module
    D: nn.Module
    loss: Loss
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    z_dim: int
    channels_last: bool
    shard: tuple[int, int] = (0, 1)  # (this process, processes): its rows of each global batch
    ema: EMA | None = None  # moving average of G's weights, updated after each G step
    num_classes: int = 0  # labels a conditional G takes (0: unconditional)
    schedule: LinearDecay | None = None  # learning-rate decay, applied before each step

    def noise(self, n: int) -> torch.Tensor:
        """Noise for this process's `n` examples: its rows of one draw for the global batch, so several
        processes see the same noise as one process would."""
        rank, world = self.shard
        z = torch.randn(n * world, self.z_dim, device=self.device)
        return z[rank * n : (rank + 1) * n] if world > 1 else z

    def G_eval(self) -> nn.Module:
        """The generator samples and metrics use: the moving average, with batch-norm statistics of
        its own, when there is one; else G."""
        if self.ema is None:
            return self.G
        recompute_norm_stats(self.ema.model, self.z_dim, self.device, self.num_classes)
        return self.ema.model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def optimizer_step(p: Parts, loss: torch.Tensor, opt: torch.optim.Optimizer, net: nn.Module) -> torch.Tensor:
    """Backward (scaled under fp16 AMP) and one step of `opt`; returns `net`'s unscaled gradient norm."""
    opt.zero_grad(set_to_none=True)
    p.scaler.scale(loss).backward()
    p.scaler.unscale_(opt)
    norm = grad_norm(net)
    p.scaler.step(opt)
    p.scaler.update()
    return norm


def d_update(p: Parts, real: torch.Tensor, y: torch.Tensor, keep_graph: bool) -> tuple[torch.Tensor, ...]:
    """One D update on a real batch and a fresh fake batch (with the real batch's labels);
    returns the fakes, with G's graph if asked."""
    z = p.noise(real.shape[0])
    with p.autocast():
        with torch.set_grad_enabled(keep_graph):
            fake = p.G(z, y)
        out_real, out_fake = p.D(real, y), p.D(fake.detach(), y)
        loss_d = p.loss.d_loss(out_real.float(), out_fake.float())
        penalties = p.loss.penalty(p.D, real, fake.detach())
        total = loss_d + sum(penalties.values()) if penalties else loss_d
    norm_d = optimizer_step(p, total, p.opt_d, p.D)
    p.loss.after_d_step(p.D)
    score_real = p.loss.score(out_real.detach().float()).mean()
    score_fake = p.loss.score(out_fake.detach().float()).mean()
    pen = [v.detach().float() for v in penalties.values()]
    return fake, loss_d.detach().float(), score_real, score_fake, norm_d, *pen


def g_update(p: Parts, fake: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One G update through the (just updated) D on the last D step's fakes; D's weights get no grads."""
    p.D.requires_grad_(False)
    with p.autocast():
        loss_g = p.loss.g_loss(p.D(fake, y).float())
    norm_g = optimizer_step(p, loss_g, p.opt_g, p.G)
    p.D.requires_grad_(True)
    return loss_g.detach().float(), norm_g


Batch = tuple[torch.Tensor, torch.Tensor]  # (images or points, labels)


def train_step(p: Parts, batches: list[Batch]) -> torch.Tensor:
    """n_critic D updates then one G update.

    Returns [loss/D, loss/G, D/real, D/fake, |grad D|, |grad G|, penalties...] as one device tensor."""
    for i, (real, y) in enumerate(batches):
        fake, loss_d, score_real, score_fake, norm_d, *pen = d_update(
            p, real, y, keep_graph=i == len(batches) - 1
        )
    loss_g, norm_g = g_update(p, fake, y)
    if p.ema is not None:
        p.ema.update()
    return torch.stack([loss_d, loss_g, score_real, score_fake, norm_d, norm_g, *pen])


def total_steps(cfg: DictConfig, per_epoch: int, n_critic: int) -> int | None:
    limits = []
    if cfg.steps is not None:
        limits.append(int(cfg.steps))
    if cfg.epochs is not None:
        limits.append(max(1, math.ceil(cfg.epochs * per_epoch / n_critic)))
    return min(limits) if limits else None


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings for the HParams dashboard: its main choices plus every command-line override."""
    params: dict[str, Any] = {
        "data": cfg.data.name,
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "optimizer": getattr(cfg.optimizer.name, "value", str(cfg.optimizer.name)),
        "lr/G": cfg.optimizer.g.lr,
        "lr/D": cfg.optimizer.d.lr,
        "batch_size": cfg.trainer.batch_size,
        "seed": cfg.trainer.seed,
    }
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under Hydra (e.g. train() called from Python)
        overrides = []
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key not in ("data.root", "trainer.device", "trainer.resume"):
            params[key] = parse_override_value(value)
    return params


def sample_picture(
    p: Parts,
    fixed_z: torch.Tensor,
    data: Data,
    real_points: torch.Tensor | None,
    fixed_y: torch.Tensor | None = None,
    nrow: int | None = None,
) -> torch.Tensor:
    G = p.G_eval()
    G.eval()
    with torch.no_grad(), p.autocast():
        fake = G(fixed_z, fixed_y)
    p.G.train()
    if data.kind == "points":
        assert real_points is not None
        return scatter_plot(fake, real_points)
    return image_grid(fake, nrow)


def checkpoint_state(
    cfg: DictConfig, p: Parts, step: int, batches: Batches, fixed_z: torch.Tensor, G: nn.Module, D: nn.Module
) -> dict[str, Any]:
    return {
        "version": __version__,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "step": step,
        "epoch": batches.epochs_done,
        "data_position": batches.position,
        "data_shape": list(batches.data.shape),
        "G": G.state_dict(),
        "D": D.state_dict(),
        **({"G_ema": p.ema.state_dict()} if p.ema is not None else {}),
        "num_classes": batches.data.num_classes,
        "opt_G": p.opt_g.state_dict(),
        "opt_D": p.opt_d.state_dict(),
        "scaler": p.scaler.state_dict(),
        "fixed_z": fixed_z.cpu(),
        "rng": ckpt.rng_state(),
    }


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    folder = out / "checkpoints"
    last = folder / "last.pt"
    ckpt.save_atomic(state, last)
    if keep > 0:
        numbered = folder / f"step_{state['step']:06d}.pt"
        numbered.unlink(missing_ok=True)
        try:
            numbered.hardlink_to(last)  # same bytes, no second write
        except OSError:
            ckpt.save_atomic(state, numbered)
        ckpt.rotate(folder, keep)
    return last


def restore(state: dict[str, Any], path: Path, G: nn.Module, D: nn.Module, p: Parts) -> None:
    try:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path} does not match this model (another architecture, width or image size?): "
            f"{str(err).splitlines()[0]} ... see the config saved in the checkpoint's run folder"
        ) from err
    if p.ema is not None and "G_ema" in state:
        p.ema.load_state_dict(state["G_ema"])
    elif p.ema is not None:  # a checkpoint written without the average: start it from G
        p.ema.model.load_state_dict(G.state_dict())
    try:
        p.opt_g.load_state_dict(state["opt_G"])
        p.opt_d.load_state_dict(state["opt_D"])
        p.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"the optimizer state in checkpoint {path} does not fit this run's optimizers "
            f"(another optimizer or model?): {err}"
        ) from err


def train(
    cfg: DictConfig, step_fn: Callable[[Parts, list[Batch]], torch.Tensor] = train_step
) -> dict[str, Any]:
    """Train a GAN as `cfg` says and return the final metrics (for sweeps and tests)."""
    validate(cfg)
    import_plugins(cfg.plugins)
    t_cfg, l_cfg = cfg.trainer, cfg.logger
    dist = distributed.setup(resolve_device(t_cfg.device), int(t_cfg.batch_size))
    device = dist.device
    amp_dtype = autocast_dtype(t_cfg.precision, device)
    check_model_config(cfg)
    out = Path(cfg.output_dir)
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    point = resume.resolve(t_cfg.resume, bool(t_cfg.resume_force), out, now)  # type: ignore[arg-type]
    hydra_dir = out
    if point is not None and point.run_dir is not None:  # a resumed run writes on in its run directory
        out = point.run_dir
        cfg.output_dir = str(out)
    if dist.is_main:
        ckpt.prepare_folder(out / "checkpoints")

    seed_everything(t_cfg.seed)
    configure_backends(t_cfg, device)
    with dist.main_first():
        data = build_data(cfg.data)
    num_workers = int(cfg.data.get("num_workers", 2))
    batches = Batches(data, t_cfg.batch_size, device, t_cfg.seed, num_workers, shard=dist.shard)
    G, D = build_models(cfg.model, data)
    conv = data.kind == "image" and any(isinstance(m, nn.Conv2d) for m in D.modules())
    channels_last = conv and (
        device.type == "cuda"
        if str(t_cfg.channels_last).lower() == "auto"
        else str(t_cfg.channels_last) == "true"
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if str(t_cfg.precision) == "auto":
        amp_dtype = autocast_dtype(auto_precision(device, conv), device)
    G.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    D.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    loss = build_loss(cfg.loss)
    G_run, D_run = dist.wrap(G), dist.wrap(D)
    p = Parts(
        G=torch.compile(G_run) if t_cfg.compile else G_run,  # type: ignore[arg-type]
        D=torch.compile(D_run) if t_cfg.compile else D_run,  # type: ignore[arg-type]
        loss=loss,
        opt_g=make_optimizer(G.parameters(), cfg.optimizer, cfg.optimizer.g, device),
        opt_d=make_optimizer(D.parameters(), cfg.optimizer, cfg.optimizer.d, device),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        device=device,
        amp_dtype=amp_dtype,
        z_dim=int(cfg.model.z_dim),
        channels_last=channels_last,
        shard=dist.shard,
        ema=EMA(G, float(cfg.model.ema_decay)) if cfg.model.get("ema_decay", 0) else None,
        num_classes=label_classes(cfg.model, data.num_classes),
    )
    n_critic = int(cfg.loss.n_critic)
    total = total_steps(t_cfg, batches.per_epoch, n_critic)
    opt_cfg = cfg.optimizer
    p.schedule = build_schedule(
        str(opt_cfg.lr_decay),
        float(opt_cfg.lr_decay_start),
        [(p.opt_g, float(opt_cfg.g.lr)), (p.opt_d, float(opt_cfg.d.lr))],
        total,
        t_cfg.max_minutes,
    )
    step_fn = build_step(p, t_cfg.cuda_graphs, step_fn)  # eager, or captured once as a CUDA graph
    evaluator = Evaluator(cfg, data, device, t_cfg.seed + 2)
    n_fixed = SCATTER_POINTS if data.kind == "points" else int(l_cfg.num_samples)
    fixed_y, nrow = None, None
    if cfg.model.get("conditional", False):  # one row per class
        fixed_y, nrow = grid_labels(n_fixed, data.num_classes)
        n_fixed, fixed_y = len(fixed_y), fixed_y.to(device)
    fixed_z = torch.randn(n_fixed, p.z_dim, generator=torch.Generator().manual_seed(t_cfg.seed + 1)).to(
        device
    )
    real_points = data.tensor[:SCATTER_POINTS] if data.kind == "points" and data.tensor is not None else None

    undo = None
    if t_cfg.on_nan == "skip":  # everything a step changes, to put back when it goes bad
        averaged = [p.ema.model] if p.ema is not None else []
        counts = [p.ema.num_updates] if p.ema is not None else []
        undo = StepUndo([G, D, *averaged], [p.opt_g, p.opt_d], p.scaler, counts)
    stat_names = BASE_STATS + [f"loss/{n}" for n in loss.penalty_names]
    guard = NanGuard(t_cfg.on_nan, stat_names, device, [G, D], undo, out / "checkpoints", dist.max)

    step = 0
    if point is not None:
        resume.check_compatible(point, data.shape, str(cfg.model.name))
        restore(point.state, point.path, G, D, p)
        if dist.is_main:
            resume.continue_in(out, hydra_dir)
        step = int(point.state["step"])
        batches.seek(**point.state["data_position"])
        fixed_z = point.state["fixed_z"].to(device)
        guard.skipped = int(point.state.get("skipped_steps", 0))
        ckpt.set_rng_state(point.state["rng"])
        log.info("resumed from %s at step %d; writing on in %s", point.path, step, out)

    logger = dist.logger(
        out,
        start_step=step,
        total_steps=total or 0,
        tensorboard=bool(l_cfg.tensorboard),
        progress=str(l_cfg.progress),
        print_every_s=float(l_cfg.print_every_s),
    )
    if step == 0:
        metric_tags = [f"metrics/{n}" for n in evaluator.names]
        logger.hparams(run_hparams(cfg), [*stat_names[:4], *metric_tags, "objective"])
    if step == 0 and dist.is_main:
        logger.image("samples/real", real_picture(data, batches, int(l_cfg.num_samples), real_points), 0)

    def sample(at: int) -> None:
        if not dist.is_main:
            return
        picture = sample_picture(p, fixed_z, data, real_points, fixed_y, nrow)
        save_png(picture, out / "samples" / f"step_{at:06d}.png")
        logger.image("samples/fake", picture, at)

    def checkpoint(at: int) -> None:
        guard.check_weights(at)  # on every process: they hold the same weights and stop together
        if not dist.is_main:
            return
        state = checkpoint_state(cfg, p, at, batches, fixed_z, G, D)
        state["skipped_steps"] = guard.skipped
        save_checkpoint(out, state, int(t_cfg.keep_checkpoints))

    acc = torch.zeros(len(stat_names), device=device)
    n_acc, values, last = 0, {}, {}
    bs_per_step = t_cfg.batch_size * n_critic
    t_start = t_window = time.perf_counter()
    start_step = step
    limit_s = 60 * t_cfg.max_minutes if t_cfg.max_minutes is not None else math.inf

    def flush(at: int) -> dict[str, float]:
        """Read the accumulated stats (the loop's one host sync) and log them."""
        nonlocal n_acc, t_window, last
        stats = dist.mean(acc / max(n_acc, 1)).tolist()
        guard.check(at)
        now = time.perf_counter()
        vals = dict(zip(stat_names, stats, strict=True))
        vals["perf/images_per_s"] = n_acc * bs_per_step / max(now - t_window, 1e-9)
        vals["lr/G"] = p.opt_g.param_groups[0]["lr"]
        vals["lr/D"] = p.opt_d.param_groups[0]["lr"]
        if guard.mode == "skip":
            vals["nan/skipped_steps"] = guard.skipped
        acc.zero_()
        n_acc, t_window = 0, now
        logger.scalars(at, vals, epoch=batches.epochs_done)
        last = vals
        return vals

    stop, stopped = GracefulStop().install(), False  # SIGINT/SIGTERM: stop at a step boundary, saved

    def stopping(at: int) -> bool:
        """Whether a stop was asked for; several processes agree at the logged steps, where they sync."""
        if not dist.enabled:
            return stop.requested
        if at % l_cfg.log_every:
            return False
        return bool(dist.max(torch.tensor(float(stop.requested), device=device)).item())

    scores: dict[str, float] = {}
    evaluated_at = -1

    def evaluate(at: int) -> None:
        """Metrics of the generator samples come from (on the main process); kept out of images/s."""
        nonlocal t_window, evaluated_at
        evaluated_at = at
        if not dist.is_main:
            return
        t0 = time.perf_counter()
        scores.update(evaluator(p.G_eval()))
        logger.scalars(at, scores)
        t_window += time.perf_counter() - t0

    try:
        while total is None or step < total:
            elapsed = time.perf_counter() - t_start
            if limit_s < math.inf:  # every process stops, and decays its rates, on rank 0's clock
                elapsed = dist.rank0(elapsed)
            if elapsed >= limit_s:
                break
            if stopping(step):
                stopped = True
                break
            reals = [batches.next() for _ in range(n_critic)]
            if channels_last:
                reals = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in reals]
            if p.schedule is not None:
                p.schedule.apply(step, elapsed)
            guard.before_step()
            stats = step_fn(p, reals)
            if guard.after_step(stats, step + 1):
                acc += stats
                n_acc += 1
            step += 1
            values = flush(step) if step % l_cfg.log_every == 0 else {}
            logger.progress(step, batches.epochs_done, values)
            if l_cfg.sample_every and step % l_cfg.sample_every == 0:
                sample(step)
            if t_cfg.checkpoint_every and step % t_cfg.checkpoint_every == 0:
                if not values:
                    flush(step)
                checkpoint(step)
            if evaluator and l_cfg.eval_every and step % l_cfg.eval_every == 0:
                evaluate(step)
        # a signal during the final save below does not undo a finished run
        interrupted = (stop.signum or signal.SIGTERM) if stopped else None
        final = flush(step) if n_acc else last
        sample(step)
        checkpoint(step)
        if evaluator and evaluated_at != step:
            evaluate(step)
        measured = {k.removeprefix("metrics/"): v for k, v in scores.items()}
        goal = objective.choose(
            measured, lambda: objective.pixel_fd(p.G_eval(), data, p.z_dim, device, t_cfg.seed)
        )
        logger.objective(goal[1], step)
    finally:
        stop.uninstall()
        logger.close()
    wall = time.perf_counter() - t_start
    result = {
        **final,
        **{k.removeprefix("metrics/"): v for k, v in scores.items()},
        "step": step,
        "epoch": batches.epochs_done,
        "wall_s": wall,
        "perf/images_per_s_mean": (step - start_step) * bs_per_step / max(wall, 1e-9),
        "objective_name": goal[0],
        "objective": goal[1],
    }
    logger.summary(step, batches.epochs_done, final)
    if interrupted is not None:
        result["signal"] = interrupted
        log.warning(
            "stopped by %s at step %d; checkpoint saved in %s. Resume with:\n  %s",
            stop.name,
            step,
            out / "checkpoints" / "last.pt",
            resume.resume_command(out),
        )
    else:
        log.info("done: %d steps in %.1f s; outputs in %s", step, wall, out)
    dist.barrier()
    return result


def real_picture(data: Data, batches: Batches, n: int, real_points: torch.Tensor | None) -> torch.Tensor:
    """The picture of real data logged once at the start: a grid of images, or the points alone."""
    if real_points is not None:
        return scatter_plot(real_points[:0], real_points)
    if data.tensor is not None:
        return image_grid(to_unit_range(data.tensor[:n].clone()))
    images = batches.next()[0][:n]
    batches.seek(0, 0)
    return image_grid(images)


if __name__ == "__main__":  # `torchrun ... -m gan_cli.train ARGS` runs the gan-train command
    from gan_cli.cli import train_main

    train_main()
