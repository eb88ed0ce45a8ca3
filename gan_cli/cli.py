"""The `gan-train` command: Hydra composes the config, then the pure `train(cfg)` runs it."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import gan_cli.datasets
import gan_cli.losses
import gan_cli.models  # noqa: F401  (registers every model, loss and data set with its schema)
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
    try:
        result = train(cfg)
    except GanCliError as err:
        log.error("%s", err)
        _remove_if_empty_run(out)
        sys.exit(2)
    if result.get("signal"):  # stopped by SIGINT/SIGTERM after saving: the shell's code for that signal
        sys.exit(128 + int(result["signal"]))
    objective = result.get("objective")
    return float(objective) if objective is not None else None


def train_main() -> None:
    _hydra_train()


if __name__ == "__main__":
    train_main()
