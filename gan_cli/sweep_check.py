"""Checking a sweep before it starts: every job's config is composed and checked as a single run would
check it, so a bad job ends the sweep (status 2, its overrides named) before any job trains."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from gan_cli.config import validate
from gan_cli.errors import GanCliError
from gan_cli.models import check_model_config
from gan_cli.run import import_plugins, optimizer_factory

log = logging.getLogger("gan_cli")


def job_overrides(config: DictConfig, loader: Any) -> tuple[list[list[str]], bool]:
    """Each job's overrides, as Hydra's basic sweeper will launch them (its `params` and the command
    line's, expanded), and True; other sweepers (Optuna) draw their jobs as they go, so only the
    overrides every job shares are known beforehand: those, and False."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # `${...}` stays as typed
    arguments = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]  # type: ignore[union-attr]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    if str(OmegaConf.select(config, "hydra.sweeper._target_")).endswith("BasicSweeper"):
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch], True
    return [[o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]], False


def check_job(cfg: DictConfig) -> None:
    """The checks a run makes on its config before it touches a device or data: keys and values, the
    plugins, the model for the data, the optimizers' settings. (Not the device: a sweep may be
    submitted from a machine without the GPUs its jobs will run on.)"""
    validate(cfg)
    import_plugins(list(cfg.plugins))
    check_model_config(cfg)
    for net in ("g", "d"):
        optimizer_factory(cfg.optimizer[net], False, f"optimizer.{net}")


class SweepCheck(Callback):
    """Hydra callback: before a sweep launches its first job, compose every job's config and check it
    as a single run would; a bad one ends the sweep with status 2, naming the job's overrides."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        jobs, each = job_overrides(config, loader)
        for number, overrides in enumerate(jobs):
            try:
                job_cfg = loader.load_sweep_config(config, list(overrides))
                with open_dict(job_cfg):
                    del job_cfg["hydra"]
                check_job(job_cfg)
            except (GanCliError, HydraException, OmegaConfBaseException) as err:
                which = f"job #{number} of {len(jobs)}" if each else "every job"
                shown = " ".join(overrides) or "no overrides"
                log.error("%s (%s) cannot run: %s\nNo job was started.", which, shown, str(err).strip())
                sys.exit(2)
