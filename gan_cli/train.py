"""`train(cfg, run_dir)`: check the config, build the run, fit it. No Hydra here: the `gan-train`
command (cli.py) works out the run folder, the overrides and the resume point and calls this."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gan_cli import resume as resuming
from gan_cli.config import resolved, settle_auto, validate
from gan_cli.device import cpu_threads
from gan_cli.errors import OutputError
from gan_cli.graphs import StepFn
from gan_cli.logger import MetricLogger, NullLogger, ProgressLogger
from gan_cli.loop import fit
from gan_cli.resume import ResumePoint
from gan_cli.run import build_run
from gan_cli.trackers import check_installed

log = logging.getLogger("gan_cli")


def train(
    cfg: DictConfig,  # the composed config (configs/train.yaml and its groups)
    run_dir: str | Path,  # the folder the run writes (a resumed run: the run it continues)
    *,
    resume: ResumePoint | None = None,  # the checkpoint to continue; None: cfg.trainer.resume decides
    overrides: Sequence[str] = (),  # the command line's overrides, for HParams and the resume command
    loggers: Sequence[MetricLogger] | None = None,  # instead of logger.backends and metrics.jsonl
    progress: ProgressLogger | NullLogger | None = None,  # instead of the bar (told of every step)
    wrap_step: Callable[[StepFn], StepFn] | None = None,  # wraps the training step (tests, benchmarks)
    jobs_at_once: int = 1,  # runs a local launcher trains side by side (they share the CPU cores)
) -> dict[str, Any]:
    """Train a GAN as `cfg` says and return its final numbers (losses, metrics, objective, step)."""
    choices = validate(cfg)
    settle_auto(cfg)
    check_installed(cfg)
    run_dir = Path(run_dir)
    if resume is None and cfg.trainer.resume:  # called from Python: resume=auto looks in run_dir only
        now = resolved(cfg)
        resume = resuming.resolve(cfg.trainer.resume, bool(cfg.trainer.resume_force), run_dir, now)
        if resume is not None and resume.run_dir is not None:
            run_dir = resume.run_dir
    threads, why = cpu_threads(cfg.trainer.threads, jobs_at_once)
    torch.set_num_threads(threads)
    log.info("CPU threads: %d (%s)", threads, why)
    run = build_run(
        cfg,
        choices,
        run_dir,
        resume=resume,
        overrides=overrides,
        loggers=loggers,
        progress=progress,
        wrap_step=wrap_step,
    )
    try:
        return fit(run)
    except OutputError as err:  # a full disk: the checkpoints are whole, the run can go on from them
        raise OutputError(
            f"{err}. The run stopped; its checkpoints in {run.run_dir / 'checkpoints'} are kept: once "
            f"there is space, go on with: {resuming.resume_command(run.run_dir, run.overrides)}"
        ) from err
