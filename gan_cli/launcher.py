"""`hydra/launcher=parallel`: sweep jobs side by side, each in a fresh process of its own.

hydra-joblib-launcher runs jobs in a pool of shared loky worker processes; when one of them dies (a
segfault, the out-of-memory killer, SIGKILL) the pool breaks and the whole sweep ends with
TerminatedWorkerError: no summary, no status files, the running jobs lost. Here joblib only dispatches
(`n_jobs` threads, its settings as before), and each thread runs its job in a spawned process (Hydra's own
`execute_job`) and waits for its result. A process that ends without one is recorded like any failed job
(status.json "failed", with how it ended), the sweeper gets no value for it, and the others go on. A
process per job also hands its memory (GPU memory included) back when the job ends.

The launcher class itself lives in `hydra_plugins.gan_cli_launcher`, where Hydra looks for plugins.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_cli import sweeps

log = logging.getLogger("gan_cli")

_compose = threading.Lock()  # Hydra's config loading is not made for threads: one at a time


def register() -> None:
    """Make gan_cli's launcher and sweepers known to Hydra before a sweep starts (an editable install puts
    hydra_plugins.gan_cli_launcher behind an import hook that Hydra's plugin scan does not walk), and
    store the sweepers' configs as hydra/sweeper=basic and =optuna, so that every sweep can resume. The
    scan comes first: it reloads Hydra's plugin modules (which store their own configs again)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    from hydra_plugins.gan_cli_launcher import (
        ProcessJoblibLauncher,
        ResumableBasicSweeper,
        ResumableBasicSweeperConf,
        optuna_sweeper,
    )

    store = ConfigStore.instance()
    plugins.register(ProcessJoblibLauncher)
    plugins.register(ResumableBasicSweeper)
    store.store(group="hydra/sweeper", name="basic", node=ResumableBasicSweeperConf, provider="gan_cli")
    if optuna_sweeper.AVAILABLE:
        plugins.register(optuna_sweeper.ResumableOptunaSweeper)
        conf = optuna_sweeper.ResumableOptunaSweeperConf
        store.store(group="hydra/sweeper", name="optuna", node=conf, provider="gan_cli")


def _run_child(payload: bytes, results: Connection) -> None:
    """In the job's process: run the job as the joblib plugin does and send back its JobReturn."""
    import cloudpickle
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    results.send_bytes(cloudpickle.dumps(execute_job(*cloudpickle.loads(payload))))


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"its process was killed by {name} (a crash, the out-of-memory killer or a kill from outside)"
    if exitcode is not None and exitcode - 128 in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(exitcode - 128).name
        return f"it was stopped by {name}, after saving a checkpoint (its train.log says how to resume it)"
    return f"its process exited with status {exitcode} before reporting a result"


def job_folder(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str], idx: int) -> Path:
    """The folder Hydra gives job `idx` of the sweep (hydra.sweep.dir / hydra.sweep.subdir)."""
    with _compose:
        job = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = f"{job.hydra.job.name}_{idx}"
            job.hydra.job.num = idx
        return Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)


def record_death(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    exitcode: int | None,
    wall_s: float,
) -> JobReturn:
    """Write what a job that left no result would have written on failing, and its JobReturn (no value)."""
    folder = job_folder(hydra_context, config, overrides, idx)
    message = f"job {idx} did not finish: {_how_it_ended(exitcode)}"
    log.error("%s; the sweep goes on (%s)", message, folder)
    written = folder / ".hydra" / "overrides.yaml"
    if not written.is_file():  # it died before Hydra wrote its folder: the report still lists it
        written.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(overrides)), written)
    sweeps.write_status(folder, "failed", wall_s, error=message)
    ret = JobReturn(overrides=list(overrides), working_dir=str(folder), task_name=str(config.hydra.job.name))
    ret.status = JobStatus.COMPLETED  # what a failed job returns in-process: no value, the sweep goes on
    ret.return_value = None
    return ret


def run_in_own_process(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """Run one job in a fresh process and wait for it; a process that ends without a result is recorded."""
    import cloudpickle

    payload = cloudpickle.dumps((idx, overrides, hydra_context, config, task_function, singleton_state))
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or CUDA state copied
    results, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(target=_run_child, args=(payload, sender), name=f"sweep job {idx}")
    t_start = time.perf_counter()
    process.start()
    sender.close()  # only the job holds the sending end now: when its process ends, recv() ends too
    ret: JobReturn | None = None
    try:
        ret = cloudpickle.loads(results.recv_bytes())
    except EOFError:  # it ended without sending one
        pass
    finally:
        results.close()
        process.join()
    if ret is None:
        return record_death(
            idx, overrides, hydra_context, config, process.exitcode, time.perf_counter() - t_start
        )
    return ret


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """The joblib plugin's launch, with joblib's threads dispatching jobs that each run in a process."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    setup_globals()
    assert launcher.config is not None and launcher.hydra_context is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = {**launcher.joblib, "backend": "threading"}
    process_joblib_cfg(settings)
    log.info(
        "Joblib.Parallel(%s) is launching %d jobs, each in a process of its own",
        ",".join(f"{k}={v}" for k, v in settings.items()),
        len(job_overrides),
    )
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
    state = Singleton.get_state()
    runs = Parallel(**settings)(
        delayed(run_in_own_process)(
            initial_job_idx + idx,
            overrides,
            launcher.hydra_context,
            launcher.config,
            launcher.task_function,
            state,
        )
        for idx, overrides in enumerate(job_overrides)
    )
    assert isinstance(runs, list) and all(isinstance(r, JobReturn) for r in runs)
    return runs
