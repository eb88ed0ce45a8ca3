"""gan_cli's Optuna sweeper (a module of its own: Optuna is an optional extra)."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

AVAILABLE = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


if AVAILABLE:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    @dataclass
    class ResumableOptunaSweeperConf(OptunaSweeperConf):
        """hydra/sweeper=optuna as gan_cli stores it: the same settings, the resumable class."""

        _target_: str = "hydra_plugins.gan_cli_launcher.optuna_sweeper.ResumableOptunaSweeper"

    class ResumableOptunaSweeper(OptunaSweeper):
        """Hydra's Optuna sweeper; a study kept in `storage` goes on where it stopped, and the trials that
        finished count towards n_trials (gan_cli.sweep_resume)."""

        def setup(
            self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
        ) -> None:
            from gan_cli.sweep_resume import SkipFinished

            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            self.sweeper.launcher = SkipFinished(self.sweeper.launcher, config, hydra_context)

        def sweep(self, arguments: list[str]) -> None:
            from gan_cli.sweep_resume import continue_study

            impl = self.sweeper
            if impl.storage:
                assert impl.config is not None  # set by setup()
                Path(str(impl.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
                done, first = continue_study(str(impl.storage), str(impl.study_name))
                impl.n_trials = max(0, impl.n_trials - done)
                impl.job_idx = first
            return impl.sweep(arguments)
