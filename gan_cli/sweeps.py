"""Sweeps (`gan-train -m ...`): every job records how it ended, so one failure never costs the others.

Hydra's launchers re-raise a job's exception and end the sweep; instead a failed job logs the error,
writes `status.json` (status "failed" and the error) and hands the sweeper no value, which Optuna
records as a failed trial (with `max_failure_rate: 1.0` it goes on with the next ones). A finished
job writes `status.json` with its final metrics. At the end of the sweep a Hydra callback
(`gan_cli.commands.sweep_report.SweepSummary`) writes the report to `summary.md` and fills `failed_runs`,
and the command exits 1 if any job failed. Before the first job starts, another callback (`SweepCheck`)
composes and checks every job's config, so a bad value in the last job stops the sweep at once, with
status 2, instead of after the others have trained.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from gan_cli.errors import GanCliError, write_advice

log = logging.getLogger("gan_cli")

STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.md"

failed_runs: list[str] = []  # filled by SweepSummary: the CLI exits 1 when it is not empty


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not running under Hydra
        return False


def _plain_metrics(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def write_status(out: Path, status: str, wall_s: float, **fields: Any) -> None:
    """Write `status.json` in the run folder, atomically (a report may read it while jobs run). A full disk
    costs only this summary, named in the log: the run's own records are written by then."""
    record = {"status": status, "wall_s": round(wall_s, 3), **fields}
    tmp = out / f".{STATUS_FILE}.tmp{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, out / STATUS_FILE)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        log.error("could not write %s: %s; %s", out / STATUS_FILE, err.strerror or err, write_advice(err))


def record_success(out: Path, result: dict[str, Any], wall_s: float) -> None:
    write_status(
        out,
        "ok",
        wall_s,
        objective=result.get("objective"),
        objective_name=result.get("objective_name"),
        metrics=_plain_metrics(result),
    )


def record_failure(out: Path, err: BaseException, wall_s: float) -> None:
    """Log and record a failed job (the sweeper then gets no value for it: a failed trial)."""
    if isinstance(err, GanCliError):
        log.error("this run failed: %s", err)
        message = str(err)
    else:
        log.error("this run failed:\n%s", "".join(traceback.format_exception(err)))
        message = f"{type(err).__name__}: {err}"
    write_status(out, "failed", wall_s, error=message)


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
    if str(OmegaConf.select(config, "hydra.sweeper._target_")).endswith(".BasicSweeper"):
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch], True
    return [[o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]], False


def check_job(cfg: DictConfig) -> None:
    """The checks a run makes on its config before it touches a device or data: keys and values, the
    plugins, the model for the data, the optimizers' settings. (Not the device: a sweep may be
    submitted from a machine without the GPUs its jobs will run on.)"""
    from gan_cli.config import validate
    from gan_cli.models import check_model_config
    from gan_cli.run import import_plugins, optimizer_factory

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
