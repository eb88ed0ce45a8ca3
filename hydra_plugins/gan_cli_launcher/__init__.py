"""gan_cli's Hydra launcher (Hydra takes plugins only from the hydra_plugins package); the work is done in
gan_cli.launcher. Chosen with hydra/launcher=parallel (configs/hydra/launcher/parallel.yaml)."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class ProcessJoblibLauncher(JoblibLauncher):
    """The joblib launcher, each job in a fresh process of its own: a job whose process dies fails alone."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gan_cli.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
