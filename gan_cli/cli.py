"""The `gan-train` command: Hydra composes the config, then the pure `train(cfg)` runs it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import gan_cli.datasets
import gan_cli.losses
import gan_cli.models  # noqa: F401  (registers every model, loss and data set with its schema)
from gan_cli import distributed, sweeps
from gan_cli.errors import GanCliError

log = logging.getLogger("gan_cli")


def short_name(text: str, limit: int = 200) -> str:
    """A run directory name from its overrides, cut (plus a hash, to stay unique) to a valid length."""
    text = text.replace("/", "|")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("short_name", short_name, replace=True)


def _remove_if_empty_run(out: Path) -> None:
    """Drop a run directory that holds nothing but Hydra's own files, so a refused run leaves no trace."""
    if not out.is_dir():
        return
    leftovers = [p for p in out.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not leftovers:
        shutil.rmtree(out, ignore_errors=True)


@hydra.main(version_base="1.3", config_path="pkg://gan_cli.configs", config_name="train")
def _hydra_train(cfg: DictConfig) -> float | None:
    from gan_cli.train import train

    out = Path(cfg.output_dir)
    main_rank = distributed.env_rank() == 0
    t_start = time.perf_counter()
    try:
        result = train(cfg)
    except Exception as err:
        if sweeps.in_multirun():  # record it and let the sweep go on with the other jobs
            sweeps.record_failure(out, err, time.perf_counter() - t_start)
            return None
        if not isinstance(err, GanCliError):
            raise
        log.error("%s", err)
        if main_rank:
            _remove_if_empty_run(out)
        sys.exit(2)
    if result.get("signal"):  # stopped by SIGINT/SIGTERM after saving: the shell's code for that signal
        sys.exit(128 + int(result["signal"]))
    if main_rank:  # a resumed run wrote in the run it continued: train() set output_dir to it
        sweeps.record_success(Path(cfg.output_dir), result, time.perf_counter() - t_start)
    else:
        with contextlib.suppress(OSError):  # a folder of its own this process left empty
            os.rmdir(out)
    objective = result.get("objective")
    return float(objective) if objective is not None and math.isfinite(objective) else None


def train_main() -> None:
    sys.argv += distributed.worker_overrides(sys.argv[1:])
    _hydra_train()
    if sweeps.failed_runs:
        sys.exit(1)


if __name__ == "__main__":
    train_main()
