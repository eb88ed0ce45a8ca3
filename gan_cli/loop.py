"""The training loop: `fit(run)` draws batches, runs the step, and calls the every-N-steps hooks (log,
sample, checkpoint, evaluate, stop) until the first limit is reached or a stop is asked for.

The step's statistics are summed on the device and read back only when they are logged (and before a
checkpoint), so the loop waits for the device nowhere else; skip mode of the NaN guard (one flag a
step) and several processes' stop agreement (at logged steps) add their own reads.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Iterator
from typing import Any

import torch

from gan_cli import objective, resume
from gan_cli.config import epoch_limit
from gan_cli.run import Run
from gan_cli.samples import image_grid, save_png, scatter_plot
from gan_cli.signals import GracefulStop

log = logging.getLogger("gan_cli")


class Meter:
    """The step's statistics, summed on the device between logging steps."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sum: torch.Tensor | None = None
        self.count = 0
        self.window_start = time.perf_counter()
        self.last: dict[str, float] = {}
        self.images_per_step = int(run.cfg.trainer.batch_size) * int(run.cfg.loss.n_critic)

    def add(self, stats: torch.Tensor) -> None:
        if self.sum is None:
            self.sum = torch.zeros_like(stats)
        self.sum += stats
        self.count += 1

    def flush(self, at: int) -> dict[str, float]:
        """Read and log the means since the last flush (the host sync), with speed and rates."""
        run = self.run
        if self.sum is None:  # no step counted yet
            return {}
        means = run.dist.mean(self.sum / max(self.count, 1)).tolist()
        run.guard.check(at)
        now = time.perf_counter()
        values: dict[str, float] = run.train_step.named(means)
        values["perf/images_per_s"] = self.count * self.images_per_step / max(now - self.window_start, 1e-9)
        values["lr/G"] = run.nets.opt_g.param_groups[0]["lr"]
        values["lr/D"] = run.nets.opt_d.param_groups[0]["lr"]
        if run.guard.mode == "skip":
            values["nan/skipped_steps"] = run.guard.skipped
        ada = run.nets.augment.ada
        if ada is not None:
            values["augment/p"], values["augment/rt"] = float(ada.p), float(ada.rt)
        self.sum.zero_()
        self.count, self.window_start = 0, now
        run.logger.scalars(at, values, epoch=run.batches.epochs_done)
        self.last = values
        return values


def every(step: int, n: int) -> bool:
    return bool(n) and step % n == 0


def draw(run: Run) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The real batches of one step (one per D update), each drawn when its update asks for it, so a
    step with many D updates holds one batch at a time (the CUDA-graph step copies them all into its
    buffers). The order, and so every number of a seeded run, is the same as drawing them up front."""
    for _ in range(run.train_step.batches_per_step):
        x, y = run.batches.next()
        yield (x.contiguous(memory_format=torch.channels_last) if run.channels_last else x), y


def sample(run: Run, at: int) -> None:
    """The fixed noise's samples: samples/step_NNNNNN.png and TensorBoard (rank 0)."""
    if not run.dist.is_main:
        return
    G = run.nets.G_eval()
    G.eval()
    with torch.no_grad(), run.nets.autocast():
        fake = G(run.fixed_z, run.fixed_y)
    run.nets.G.train()
    if run.real_points is not None:
        picture = scatter_plot(fake, run.real_points)
    else:
        picture = image_grid(fake, run.nrow)
    save_png(picture, run.run_dir / "samples" / f"step_{at:06d}.png")
    run.logger.image("samples/fake", picture, at)


def checkpoint(run: Run, at: int) -> None:
    run.guard.check_weights(at)  # on every process: they hold the same weights and stop together
    if run.dist.is_main:
        run.state(at).save(run.run_dir, int(run.cfg.trainer.keep_checkpoints))


def evaluate(run: Run, at: int, meter: Meter, scores: dict[str, float]) -> None:
    """The configured metrics of the samples' generator (rank 0); kept out of the images/s figure."""
    if not run.dist.is_main:
        return
    t0 = time.perf_counter()
    scores.update(run.evaluator(run.nets.G_eval()))
    run.logger.scalars(at, scores)
    meter.window_start += time.perf_counter() - t0


def stop_asked(run: Run, stop: GracefulStop, at: int) -> bool:
    """Whether a stop was asked for; several processes agree at the logged steps, where they sync."""
    if not run.dist.enabled:
        return stop.requested
    if at % run.cfg.logger.log_every:
        return False
    flag = torch.tensor(float(stop.requested), device=run.nets.device)
    return bool(run.dist.max(flag).item())


def step_limit_reached(run: Run, step: int) -> str:
    """Which step limit ended the run: trainer.steps, trainer.epochs, or the default epochs."""
    t = run.cfg.trainer
    if t.steps is not None and step >= int(t.steps):
        return f"trainer.steps={t.steps}"
    epochs = epoch_limit(t)
    if t.epochs is None:
        return f"{epochs:g} epochs (the limit of a run that sets no other)"
    return f"trainer.epochs={t.epochs:g}"


def fit(run: Run) -> dict[str, Any]:
    """Train until the first limit (steps, epochs, minutes) or a stop signal; returns the final numbers."""
    t, lg = run.cfg.trainer, run.cfg.logger
    limit_s = 60 * t.max_minutes if t.max_minutes is not None else math.inf
    meter, evaluated_at = Meter(run), -1
    scores: dict[str, float] = {}
    step, stopped, ended_by = run.start_step, False, ""
    stop = GracefulStop().install()  # SIGINT/SIGTERM: stop at a step boundary, with a checkpoint
    t_start = time.perf_counter()
    try:
        while run.total_steps is None or step < run.total_steps:
            elapsed = time.perf_counter() - t_start
            if limit_s < math.inf:  # every process stops, and decays its rates, on rank 0's clock
                elapsed = run.dist.rank0(elapsed)
            if elapsed >= limit_s:
                ended_by = f"trainer.max_minutes={t.max_minutes:g}"
                break
            if stop_asked(run, stop, step):
                stopped = True
                break
            reals = draw(run)
            if run.schedule is not None:
                run.schedule.apply(step, elapsed)
            run.guard.before_step()
            stats = run.step_fn(reals)
            if run.guard.after_step(stats, run.train_step.names or [], step + 1):
                meter.add(stats)
            step += 1
            run.progress.advance(step)
            logged = every(step, lg.log_every) and bool(meter.flush(step))
            if every(step, lg.sample_every):
                sample(run, step)
            if every(step, t.checkpoint_every):
                if not logged:
                    meter.flush(step)
                checkpoint(run, step)
            if run.evaluator and every(step, lg.eval_every):
                evaluate(run, step, meter, scores)
                evaluated_at = step
        # a signal during the final save below does not undo a finished run
        interrupted = (stop.signum or signal.SIGTERM) if stopped else None
        if stopped:
            ended_by = signal.Signals(interrupted or signal.SIGTERM).name
        elif not ended_by:
            ended_by = step_limit_reached(run, step)
        final = meter.flush(step) if meter.count else meter.last
        # the end takes seconds to a minute (and metrics longer): say what it is doing
        log.info("final sample grid: %s", run.run_dir / "samples" / f"step_{step:06d}.png")
        sample(run, step)
        log.info("final checkpoint: %s", run.run_dir / "checkpoints" / "last.pt")
        checkpoint(run, step)
        if run.evaluator and evaluated_at != step:
            log.info("final evaluation: %s", ", ".join(run.evaluator.names))
            evaluate(run, step, meter, scores)
        metrics = {k.removeprefix("metrics/"): v for k, v in scores.items()}
        nets = run.nets

        def proxy() -> float:
            log.info("objective: %s of generated and real samples", objective.PROXY_NAME)
            return objective.pixel_fd(nets.G_eval(), run.data, nets.z_dim, nets.device, t.seed)

        goal = objective.choose(metrics, proxy)
        log.info("objective: %s = %.6g", *goal)
    except BaseException:
        run.logger.close(None)
        raise
    finally:
        stop.uninstall()
        run.batches.close()  # the loader's workers end with the loop, however it ends
    wall = time.perf_counter() - t_start
    result: dict[str, Any] = {
        **final,
        **metrics,
        "step": step,
        "epoch": run.batches.epochs_done,
        "wall_s": wall,
        "perf/images_per_s_mean": (step - run.start_step) * meter.images_per_step / max(wall, 1e-9),
        "objective_name": goal[0],
        "objective": goal[1],
        "ended_by": ended_by,
    }
    run.logger.close(result)
    if interrupted is not None:
        result["signal"] = interrupted
        log.warning(
            "stopped by %s at step %d; checkpoint saved in %s. Resume with:\n  %s",
            stop.name,
            step,
            run.run_dir / "checkpoints" / "last.pt",
            resume.resume_command(run.run_dir, run.overrides),
        )
    else:
        log.info("done: %d steps in %.1f s, ended by %s; outputs in %s", step, wall, ended_by, run.run_dir)
    run.dist.barrier()
    return result
