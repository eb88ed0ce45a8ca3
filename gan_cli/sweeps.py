"""Sweeps (`gan-train -m ...`): every job records how it ended, so one failure never costs the others.

Hydra's launchers re-raise a job's exception and end the sweep; instead a failed job logs the error,
writes `status.json` (status "failed" and the error) and hands the sweeper no value, which Optuna
records as a failed trial (with `max_failure_rate: 1.0` it goes on with the next ones). A finished
job writes `status.json` with its final metrics. At the end of the sweep a Hydra callback
(`gan_cli.commands.sweep_report.SweepSummary`) writes the report to `summary.md` and fills `failed_runs`,
and the command exits 1 if any job failed. Before the first job starts, `sweep_check.SweepCheck`
composes and checks every job's config, so a bad value in the last job stops the sweep at once, with
status 2, instead of after the others have trained.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gan_cli.errors import GanCliError, write_advice

log = logging.getLogger("gan_cli")

STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.md"

# keys that say how a job continues, not what it is: a sweep run again may add them (trainer.resume=auto)
CONTINUE_KEYS = ("trainer.resume", "trainer.resume_force")


def job_identity(overrides: Iterable[str]) -> dict[str, str]:
    """What a job is, from its overrides (key -> value), leaving out how it continues (CONTINUE_KEYS)."""
    pairs = (str(item).partition("=") for item in overrides)
    return {key: value for key, _, value in pairs if key.lstrip("+~") not in CONTINUE_KEYS}


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
