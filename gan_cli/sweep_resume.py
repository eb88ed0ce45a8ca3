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

import itertools
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
from gan_cli.commands.sweep_report import DamagedFile, Run, read_run
from gan_cli.sweeps import STATUS_FILE, job_identity

log = logging.getLogger("gan_cli")


def finished_run(folder: Path, overrides: Sequence[str] | None = None) -> Run | None:
    """The run that finished in `folder` (status.json "ok"; with `overrides`, when given), else None."""
    if not (folder / STATUS_FILE).is_file():
        return None
    try:
        run = read_run(folder)
    except DamagedFile:  # not known to be this job: it runs
        return None
    if run.status != "ok" or (overrides is not None and run.overrides != job_identity(overrides)):
        return None
    return run


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


def recorded_objective(run: Run) -> float | None:
    """The objective the finished run handed its sweeper (None when it had no finite one)."""
    return run.objective if run.ranked else None


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
        run = finished_run(folder, overrides)
        if run is None:
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
            _return_value=recorded_objective(run),
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        done: dict[int, JobReturn] = {}
        if Path(str(self.config.hydra.sweep.dir)).is_dir():  # a sweep run before: look for finished jobs
            for i, overrides in enumerate(job_overrides):
                ret = self._finished(overrides, initial_job_idx + i)
                if ret is not None:
                    done[i] = ret
        results: list[JobReturn] = []
        for skipped, group in itertools.groupby(range(len(job_overrides)), key=done.__contains__):
            numbers = list(group)
            if skipped:
                results.extend(done[i] for i in numbers)
            else:  # a run of jobs to launch, under their own numbers
                batch = job_overrides[numbers[0] : numbers[-1] + 1]
                results.extend(self.inner.launch(batch, initial_job_idx=initial_job_idx + numbers[0]))
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
