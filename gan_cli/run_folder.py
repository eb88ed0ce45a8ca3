"""Keeping earlier runs whole: a Hydra callback that refuses a run whose folder already holds another
run (`hydra.run.dir=X` given twice) before Hydra writes anything there, and remembers which folders
existed before this invocation, so that cleaning up after a refused run removes nothing of theirs.

Hydra writes `.hydra/` and opens the log file in the run folder before the task starts, so the check
must come at `on_run_start`; `cli.run` checks again once the resume point is known (and for sweeps).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gan_cli import distributed, folder_lock, resume
from gan_cli.config import resolved
from gan_cli.errors import GanCliError

log = logging.getLogger("gan_cli")

_had_files: set[str] = set()  # run folders that held files before this invocation


def had_files(folder: Path) -> bool:
    """Whether `folder` held files before Hydra made it this run's folder."""
    return os.path.abspath(folder) in _had_files


def search_root(hc: Any) -> Path:
    """Where resume=auto looks: the fixed part of Hydra's run-directory pattern (outputs/ by default); in a
    sweep, the job's own folder, so that jobs differing only in keys a resume may change (trainer.steps)
    never continue one another, while a job run again in its folder (a requeued one) continues itself."""
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.runtime.output_dir)
    pattern = str(OmegaConf.to_container(hc.run, resolve=False)["dir"])  # type: ignore[index,call-overload]
    fixed = pattern.split("${", 1)[0]
    if fixed == pattern:
        return Path(pattern).expanduser().absolute()
    return Path(fixed.rsplit("/", 1)[0] if "/" in fixed else ".").expanduser().absolute()


class KeepEarlierRuns(Callback):
    """Before Hydra writes into a single run's folder: refuse a folder holding another run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if distributed.env_rank() != 0:  # other processes share rank 0's folder and never write it
            return
        try:
            folder = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir"))))
        except Exception:  # a pattern that resolves only inside the job: cli.run checks there
            return
        if folder.is_dir() and any(folder.iterdir()):
            _had_files.add(str(folder))
        if not resume.holds_run(folder) or folder_lock.held_elsewhere(folder):  # a live run: the lock's turn
            return
        try:
            continues = self._continues(config)
        except Exception:  # a resume point that cannot be worked out here: cli.run reports it
            return
        try:
            resume.refuse_earlier_run(folder, continues)
        except GanCliError as err:
            log.error("%s", err)
            sys.exit(2)

    @staticmethod
    def _continues(config: DictConfig) -> Path | None:
        """The run directory this invocation's `trainer.resume` continues (None: a fresh run)."""

        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        spec = task.trainer.resume
        now = resolved(task) if str(spec) == "auto" else {}
        return resume.target(spec, search_root(config.hydra), now)
