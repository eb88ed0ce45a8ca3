"""Experiment trackers chosen by `logger.backends`: TensorBoard, MLflow, Weights & Biases and metrics.csv,
always with metrics.jsonl.

MLflow and W&B are optional packages (`pip install 'gan-cli[mlflow]'`, `'gan-cli[wandb]'`): a run that
names one that is missing is refused before any work. Each tracker's run is named after the run folder
and carries the whole config and the command line's overrides; the runs of a sweep go to one MLflow
experiment (one W&B group) named after the sweep's folder. A resumed run continues its tracker runs,
whose ids are kept in the run folder's trackers.json.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gan_cli import sweeps
from gan_cli.config import Backend, WandbMode, choice, resolved
from gan_cli.errors import ConfigError
from gan_cli.logger import CsvLogger, JsonlLogger, MetricLogger, NullLogger, TensorBoardLogger

log = logging.getLogger("gan_cli")

IDS_FILE = "trackers.json"  # the tracker runs a resumed run continues
PACKAGES = {Backend.mlflow: "mlflow", Backend.wandb: "wandb"}  # backends that need a package of their own


def backends(cfg: DictConfig) -> list[Backend]:
    """logger.backends, parsed, each once."""
    named = [choice(b, Backend, "logger.backends") for b in cfg.logger.backends]
    return list(dict.fromkeys(named))


def check_installed(cfg: DictConfig) -> None:
    """Refuse a tracker whose package is missing, with the command that installs it."""
    for backend in backends(cfg):
        module = PACKAGES.get(backend)
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"logger.backends names {backend.name}, but {module} cannot be imported ({err}); "
                f"install it with: pip install 'gan-cli[{backend.name}]', or leave {backend.name} out of "
                "logger.backends"
            ) from err


def build_loggers(cfg: DictConfig, run_dir: Path, start: int, overrides: Sequence[str]) -> list[MetricLogger]:
    """metrics.jsonl and the loggers of logger.backends, continuing after step `start`."""
    made: dict[Backend, MetricLogger] = {}
    for backend in backends(cfg):
        if backend is Backend.tensorboard:
            made[backend] = TensorBoardLogger(run_dir, start)
        elif backend is Backend.csv:
            made[backend] = CsvLogger(run_dir, start)
        elif backend is Backend.mlflow:
            made[backend] = MlflowLogger(cfg, run_dir, start, overrides)
        else:
            made[backend] = WandbLogger(cfg, run_dir, start, overrides)
    return [*made.values(), JsonlLogger(run_dir, start)]


def sweep_name() -> str | None:
    """The folder of the sweep this run belongs to (relative to the current folder when inside it),
    or None outside a sweep."""
    if not sweeps.in_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    folder = Path(str(HydraConfig.get().sweep.dir)).absolute()
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys (data.name, optimizer.g.lr, ...)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def override_pairs(overrides: Sequence[str]) -> dict[str, str]:
    """key -> value of each command-line override (`+key=` and `~key` as the key alone)."""
    pairs = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        pairs[key] = value
    return pairs


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a result (no bools, no None)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read_ids(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / IDS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _write_ids(run_dir: Path, tracker: str, ids: dict[str, Any]) -> None:
    path = run_dir / IDS_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({**_read_ids(run_dir), tracker: ids}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _picture(picture: torch.Tensor) -> Any:
    """A (C, H, W) uint8 picture as an (H, W, C) array (H, W for one channel)."""
    arr = picture.permute(1, 2, 0).cpu().numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def tracking_uri(text: str) -> str:
    """`logger.mlflow.tracking_uri` made independent of the current folder: a SQLite file's path (its
    folder created) or a plain folder made absolute; server addresses as given."""
    if text.startswith("sqlite:///"):
        db = Path(text.removeprefix("sqlite:///")).expanduser().absolute()
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"
    if "://" not in text and not text.startswith("file:"):
        return Path(text).expanduser().absolute().as_uri()
    return text


_PARAM_KEY = re.compile(r"[^\w\-. /:]")  # what MLflow refuses in a key


class MlflowLogger(NullLogger):
    """An MLflow run: scalars as metrics, sample grids as PNG artifacts (samples/fake/step_NNNNNN.png),
    the flattened config and the overrides as params, the final numbers (objective, wall time) at the end.

    Values that a killed process logged after its last checkpoint stay in MLflow's history when the
    run is resumed (MLflow keeps every value of a step)."""

    PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch

    def __init__(self, cfg: DictConfig, run_dir: Path, start_step: int, overrides: Sequence[str]) -> None:
        from mlflow.tracking import MlflowClient

        settings = cfg.logger.mlflow
        self.uri = tracking_uri(str(settings.tracking_uri))
        self.client = MlflowClient(tracking_uri=self.uri)
        self.config = flatten(resolved(cfg))
        self.overrides = list(overrides)
        self.last: dict[str, tuple[int, float]] = {}  # key -> (step, value) last logged
        saved = _read_ids(run_dir).get("mlflow") if start_step > 0 else None
        if saved and saved.get("tracking_uri") == self.uri:
            self.run_id = str(saved["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            sweep = sweep_name()
            self.experiment = settings.experiment or sweep or "gan_cli"
            tags = {"overrides": " ".join(self.overrides)[:5000], **({"sweep": sweep} if sweep else {})}
            created = self.client.create_run(self._experiment_id(), run_name=run_dir.name, tags=tags)
            self.run_id = created.info.run_id
            _write_ids(run_dir, "mlflow", {"tracking_uri": self.uri, "run_id": self.run_id})
            if start_step > 0:  # a resumed run new to MLflow: the loop declares params only at step 0
                self.hparams({}, [])
        log.info("MLflow run %s in %s (mlflow ui --backend-store-uri %s)", self.run_id, self.uri, self.uri)

    def _experiment_id(self) -> str:
        """The id of the experiment named `self.experiment`, made when missing (by this process or, in a
        parallel sweep, by another one at the same moment)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            artifacts = None
            if self.uri.startswith("sqlite:///"):  # beside the database, not in the current folder
                artifacts = str(Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts")
            try:
                return self.client.create_experiment(self.experiment, artifact_location=artifacts)
            except MlflowException:
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"the MLflow experiment {self.experiment!r} in {self.uri} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or name another "
                "with logger.mlflow.experiment=NAME"
            )
        return str(found.experiment_id)

    def _metrics(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)
        self.last.update({key: (step, float(value)) for key, value in values.items()})

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        self._metrics(step, {**values, **({"epoch": epoch} if epoch is not None else {})})

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        self.client.log_image(self.run_id, _picture(picture), artifact_file=f"{tag}/step_{step:06d}.png")

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """The whole config, flattened (data.name, ...), and each override as given on the command line
        (overrides.loss=hinge, ...): the columns that tell a sweep's runs apart."""
        from mlflow.entities import Param

        given = {f"overrides.{key}": value for key, value in override_pairs(self.overrides).items()}
        values = {**self.config, **given}
        batch = [Param(_PARAM_KEY.sub("_", key), str(value)[:500]) for key, value in values.items()]
        batch = list({p.key: p for p in batch}.values())
        for i in range(0, len(batch), self.PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=batch[i : i + self.PARAMS_PER_CALL])

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        if final is None:
            self.client.set_terminated(self.run_id, status="FAILED")
            return
        step = int(final["step"])  # what was not logged at the last step: objective, wall time, ...
        fresh = {
            k: v for k, v in numbers(final).items() if k != "step" and self.last.get(k, (-1, 0))[0] != step
        }
        self._metrics(step, fresh)
        if final.get("objective_name"):
            self.client.set_tag(self.run_id, "objective_name", str(final["objective_name"]))
        self.client.set_terminated(self.run_id, status="FINISHED")


class WandbLogger(NullLogger):
    """A Weights & Biases run kept in the run folder (wandb/): scalars and sample grids by step, the
    config and overrides as its config, the final numbers as its summary. Offline by default; the
    end of the run logs the `wandb sync` command that uploads it."""

    def __init__(self, cfg: DictConfig, run_dir: Path, start_step: int, overrides: Sequence[str]) -> None:
        import wandb

        self.wandb = wandb
        settings = cfg.logger.wandb
        self.mode = choice(settings.mode, WandbMode, "logger.wandb.mode")
        self.config = {**resolved(cfg), "overrides": list(overrides)}
        saved = _read_ids(run_dir).get("wandb") if start_step > 0 else None
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=str(settings.project),
            entity=settings.entity,
            mode=self.mode.value,
            dir=str(run_dir),
            name=run_dir.name,
            group=sweep_name(),
            id=saved["id"] if saved else None,
            resume="allow" if saved else None,
            settings=wandb.Settings(console="off", disable_git=True, save_code=False, silent=True),
        )
        _write_ids(run_dir, "wandb", {"id": self.run.id})
        if start_step > 0 and not saved:  # a resumed run new to W&B: the loop declares its config at step 0
            self.hparams({}, [])

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        self.run.log({**values, **({"epoch": epoch} if epoch is not None else {})}, step=step)

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        self.run.log({tag: self.wandb.Image(_picture(picture))}, step=step)

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """The whole config (nested, as composed) with the overrides as given on the command line."""
        self.run.config.update(self.config, allow_val_change=True)

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        if final is not None:
            self.run.summary.update({k: v for k, v in final.items() if v is not None})
        sync_dir = self.run.settings.sync_dir
        self.run.finish(exit_code=0 if final is not None else 1)
        if self.mode is WandbMode.offline:
            log.info("W&B run kept offline in %s; upload it with: wandb sync %s", sync_dir, sync_dir)
