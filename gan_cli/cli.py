"""The `gan-train` command: Hydra composes the config; this module works out the run folder, the
command-line overrides and the resume point, folds a resumed run's fresh folder into the run it
continues, calls `train(cfg, run_dir, ...)` and turns its outcome into an exit code (0 done, 1 a sweep
job failed, 2 bad input, 128 + n stopped by signal n)."""

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
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import gan_cli.augment
import gan_cli.datasets
import gan_cli.help
import gan_cli.losses
import gan_cli.models  # noqa: F401  (registers every model, loss and data set with its schema; --help's resolvers)
from gan_cli import distributed, folder_lock, launcher, resume, run_folder, sweep_resume, sweeps
from gan_cli.config import resolved
from gan_cli.device import usable_cores
from gan_cli.errors import GanCliError
from gan_cli.train import train

log = logging.getLogger("gan_cli")


def short_name(text: str, limit: int = 200) -> str:
    """A run directory name from its overrides, cut (plus a hash, to stay unique) to a valid length."""
    text = text.replace("/", "|")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("short_name", short_name, replace=True)


def _remove_if_empty_run(out: Path) -> None:
    """Drop a run directory that holds nothing but Hydra's own files, so a refused run leaves no trace
    (never one that held files before this invocation)."""
    if not out.is_dir() or run_folder.had_files(out) or folder_lock.held_elsewhere(out):
        return
    leftovers = [
        p for p in out.iterdir() if p.name not in (".hydra", folder_lock.LOCK_FILE) and p.suffix != ".log"
    ]
    if not leftovers:
        shutil.rmtree(out, ignore_errors=True)


def continue_in(run_dir: Path | None, new_dir: Path) -> Path:
    """Fold Hydra's fresh `new_dir` into `run_dir`, where the resumed run writes, and remove it.

    This invocation's .hydra/ folder is kept as run_dir/.hydra/resumes/<name>/ and its log lines
    go on in run_dir/train.log.
    """
    if run_dir is None or not run_dir.is_dir():
        return new_dir
    run_dir, new_dir = run_dir.absolute(), new_dir.absolute()
    if run_dir == new_dir:
        return run_dir
    hydra_files = new_dir / ".hydra"
    if hydra_files.is_dir():
        target = run_dir / ".hydra" / "resumes" / (new_dir.name or time.strftime("%Y-%m-%d_%H-%M-%S"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(hydra_files), str(target))
    _move_log_files(new_dir, run_dir)
    folder_lock.discard(new_dir)
    if new_dir.is_dir():
        try:
            new_dir.rmdir()
        except OSError:
            log.info("kept %s: it holds files other than Hydra's", new_dir)
    return run_dir


def _move_log_files(old: Path, new: Path) -> None:
    """Point the logging file handlers that write inside `old` at the same file names in `new`."""
    for handler in list(logging.getLogger().handlers):
        if not isinstance(handler, logging.FileHandler):
            continue
        current = Path(handler.baseFilename)
        if current.parent != old:
            continue
        handler.acquire()
        try:
            handler.close()
            target = new / current.name
            with open(target, "a", encoding="utf-8") as dst:
                dst.write(current.read_text(encoding="utf-8") if current.exists() else "")
            current.unlink(missing_ok=True)
            handler.baseFilename = str(target)
            handler.mode = "a"
            handler.stream = handler._open()
        finally:
            handler.release()


def jobs_at_once(hc: Any) -> int:
    """How many jobs of this sweep run side by side on this machine: joblib's n_jobs (-1: one per
    usable core, -2: all but one...), else 1."""
    if hc.mode != RunMode.MULTIRUN or "joblib" not in str(OmegaConf.select(hc, "launcher._target_")):
        return 1
    n_jobs = int(OmegaConf.select(hc, "launcher.n_jobs") or 1)
    return max(1, n_jobs if n_jobs > 0 else usable_cores() + 1 + n_jobs)


def run(cfg: DictConfig) -> dict[str, Any]:
    """One run as Hydra set it up: its folder, its overrides and what it resumes."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    overrides = [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)]  # type: ignore[union-attr]
    now = resolved(cfg)
    point = resume.resolve(
        cfg.trainer.resume, bool(cfg.trainer.resume_force), run_folder.search_root(hc), now
    )
    run_dir = out
    if point is not None and point.run_dir is not None:  # a resumed run writes on in its run directory
        run_dir = point.run_dir
    main_rank = distributed.env_rank() == 0
    with folder_lock.hold(run_dir, take=main_rank):  # the folder it writes, refused while another writes it
        if main_rank:  # a folder holding another run is never written over
            continues = point.run_dir if point is not None else None
            if continues is None and hc.mode == RunMode.MULTIRUN and str(cfg.trainer.resume) == "auto":
                continues = sweep_resume.start_over(out)  # this job, stopped before its first checkpoint
            resume.refuse_earlier_run(out, continues)
            continue_in(run_dir, out)
        result = train(cfg, run_dir, resume=point, overrides=overrides, jobs_at_once=jobs_at_once(hc))
        return {**result, "run_dir": str(run_dir)}


_started = False  # a job began: an exit status of 1 from Hydra before that means a refused command line


@hydra.main(version_base="1.3", config_path="pkg://gan_cli.configs", config_name="train")
def _hydra_train(cfg: DictConfig) -> float | None:
    global _started
    _started = True
    out = Path(HydraConfig.get().runtime.output_dir)
    main_rank = distributed.env_rank() == 0
    t_start = time.perf_counter()
    if main_rank and sweeps.in_multirun() and str(cfg.trainer.resume) == "auto":
        finished = sweep_resume.finished_run(out)
        if finished is not None:  # a sweep run again: this job finished earlier
            log.info("this job finished earlier (%s): nothing to do", out / sweeps.STATUS_FILE)
            return sweep_resume.recorded_objective(finished)
    try:
        result = run(cfg)
    except KeyboardInterrupt:  # Ctrl-C before training started (then it stops the run cleanly)
        if main_rank:
            _remove_if_empty_run(out)
        raise
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
    run_dir = Path(result.pop("run_dir"))
    if main_rank:
        sweeps.record_success(run_dir, result, time.perf_counter() - t_start)
    else:
        with contextlib.suppress(OSError):  # a folder of its own this process left empty
            os.rmdir(out)
    objective = result.get("objective")
    return float(objective) if objective is not None and math.isfinite(objective) else None


def train_main() -> None:
    sys.argv += distributed.worker_overrides(sys.argv[1:])
    launcher.register()  # hydra/launcher=parallel
    try:
        _hydra_train()
    except SystemExit as done:
        if done.code == 1 and not _started:  # Hydra could not compose the config: bad input
            sys.exit(2)
        raise
    if sweeps.failed_runs:
        sys.exit(1)


if __name__ == "__main__":
    train_main()
