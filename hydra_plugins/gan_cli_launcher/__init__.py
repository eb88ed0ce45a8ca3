"""gan_cli's Hydra plugins (Hydra takes plugins only from the hydra_plugins package); the work is done in
gan_cli.launcher and gan_cli.sweep_resume. The launcher is chosen with hydra/launcher=parallel
(configs/hydra/launcher/parallel.yaml); gan_cli.launcher.register stores the sweepers' configs as Hydra's
`basic` and `optuna`."""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig


class ProcessJoblibLauncher(JoblibLauncher):
    """The joblib launcher, each job in a fresh process of its own: a job whose process dies fails alone."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gan_cli.launcher import launch

        return launch(self, job_overrides, initial_job_idx)


@dataclass
class ResumableBasicSweeperConf(BasicSweeperConf):
    """hydra/sweeper=basic (the default) as gan_cli stores it: the same settings, the resumable class."""

    _target_: str = "hydra_plugins.gan_cli_launcher.ResumableBasicSweeper"


class ResumableBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper; with trainer.resume=auto, the jobs that finished in the sweep folder earlier
    are not launched again (gan_cli.sweep_resume)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from gan_cli.sweep_resume import SkipFinished

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = SkipFinished(self.launcher, config, hydra_context)
