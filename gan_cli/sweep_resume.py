"""Sweeps that resume. Run an interrupted sweep again with the same `hydra.sweep.dir` and
`trainer.resume=auto`, and each job finds its own folder as the last run left it:

- finished (status.json "ok", same overrides): not launched at all, its files untouched; the sweeper gets
  the objective it recorded;
- started (a checkpoint): launched, and resume=auto continues it from its newest checkpoint;
- never started, or stopped before its first checkpoint: launched, and it trains from the start.

`SkipFinished` wraps whichever launcher the sweep uses (basic, joblib, parallel, submitit), so the skip
happens before a job is handed to it. An Optuna study kept in a file (`hydra.sweeper.storage`) goes on:
`continue_study` counts its finished trials towards n_trials and puts the trials an interrupted sweep left
running back in the queue, so each runs again with its own parameters, in its own folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_cli import folder_lock, resume
from gan_cli.sweeps import CONTINUE_KEYS, STATUS_FILE

log = logging.getLogger("gan_cli")


def _same_job(overrides: Sequence[str]) -> list[str]:
    return sorted(o for o in overrides if o.partition("=")[0].lstrip("+~") not in CONTINUE_KEYS)


def finished_record(folder: Path, overrides: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The status.json of a job that finished in `folder` (with `overrides`, when given), else None."""
    try:
        record = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "ok":
        return None
    if overrides is not None:
        try:
            saved = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        except Exception:  # no readable overrides: not known to be this job
            return None
        if not isinstance(saved, list) or _same_job([str(o) for o in saved]) != _same_job(overrides):
            return None
    return record


def start_over(folder: Path) -> Path | None:
    """A sweep job run again whose folder holds records but no checkpoint (stopped before its first
    one): set the records aside in folder/interrupted/TIME/ and return `folder`, which the job then
    writes afresh; None when the folder holds no records."""
    if not resume.holds_run(folder):
        return None
    aside = folder / "interrupted" / time.strftime("%Y-%m-%d_%H-%M-%S")
    aside.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.name in (".hydra", "interrupted", folder_lock.LOCK_FILE) or entry.suffix == ".log":
            continue
        shutil.move(str(entry), str(aside / entry.name))
    log.warning(
        "%s held no checkpoint to continue: the job starts again; earlier records in %s", folder, aside
    )
    return folder


def recorded_objective(record: dict[str, Any]) -> float | None:
    value = record.get("objective")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class SkipFinished(Launcher):
    """A launcher around another: the jobs of a resumed sweep that finished earlier are answered from
    their status.json and never launched; the others go to the wrapped launcher under their own job
    numbers (so each lands in its own folder)."""

    def __init__(self, inner: Any, config: DictConfig, hydra_context: Any) -> None:
        self.inner = inner
        self.config = config
        self.hydra_context = hydra_context

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.inner.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _finished(self, overrides: Sequence[str], number: int) -> JobReturn | None:
        job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(job):
            job.hydra.job.num = number
            job.hydra.job.id = f"{number}"
        if str(OmegaConf.select(job, "trainer.resume")) != "auto":
            return None
        folder = Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)
        record = finished_record(folder, overrides)
        if record is None:
            return None
        log.info("job #%d finished earlier: skipped, %s left as it is", number, os.path.abspath(folder))
        task = job.copy()
        with open_dict(task):
            del task["hydra"]
        return JobReturn(
            overrides=list(overrides),
            cfg=task,
            hydra_cfg=job,
            working_dir=os.path.abspath(folder),
            task_name=str(job.hydra.job.name),
            status=JobStatus.COMPLETED,
            _return_value=recorded_objective(record),
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        done: dict[int, JobReturn] = {}
        if Path(str(self.config.hydra.sweep.dir)).is_dir():  # a sweep run before: look for finished jobs
            for i, overrides in enumerate(job_overrides):
                ret = self._finished(overrides, initial_job_idx + i)
                if ret is not None:
                    done[i] = ret
        results: list[JobReturn] = []
        i = 0
        while i < len(job_overrides):
            if i in done:
                results.append(done[i])
                i += 1
                continue
            end = i
            while end < len(job_overrides) and end not in done:
                end += 1
            results.extend(self.inner.launch(job_overrides[i:end], initial_job_idx=initial_job_idx + i))
            i = end
        return results


def continue_study(storage: str, study_name: str) -> tuple[int, int]:
    """Open the stored study (if there is one) and make it go on: trials an interrupted sweep left running
    go back to the queue (the next asks return them, with their parameters). Returns the number of
    finished trials (they count towards n_trials) and the number of the next trial asked for."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet: it starts here
        return 0, 0
    trials = study.get_trials(deepcopy=False)
    stale = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in stale:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state(t._trial_id, TrialState.WAITING)
    done = len(trials) - len(stale)
    numbers = sorted(t.number for t in stale)
    if numbers and numbers != list(range(numbers[0], len(trials))):
        log.warning(
            "study %s: the unfinished trials %s are not its last ones; they run again in new folders",
            study_name,
            numbers,
        )
        numbers = []
    log.info(
        "study %s in %s: %d trials finished, %d to run again%s",
        study_name,
        storage,
        done,
        len(stale),
        f" ({', '.join(map(str, numbers))})" if numbers else "",
    )
    return done, numbers[0] if numbers else len(trials)
