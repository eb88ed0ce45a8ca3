"""Measuring a generator during and after training: the labels it is asked for, the evaluation hook
of the loop, and loading a trained generator back from a checkpoint (for gan-sample and gan-eval)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli import checkpoint as ckpt
from gan_cli.datasets import Data
from gan_cli.ema import recompute_norm_stats
from gan_cli.errors import CheckpointError, ConfigError
from gan_cli.metrics import METRICS, Evaluation, RealSet, evaluate
from gan_cli.metrics.reference import generate, real_set

log = logging.getLogger("gan_cli")


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (what a conditional G is evaluated on)."""
    return torch.arange(n) % num_classes


def grid_labels(n: int, num_classes: int) -> tuple[torch.Tensor, int]:
    """Labels for a sample grid with one row per class: (labels, images per row)."""
    per_row = max(1, n // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_row), per_row


def label_classes(model_cfg: DictConfig, num_classes: int) -> int:
    """How many labels G takes: the data set's classes for a conditional model, else 0."""
    return int(num_classes) if model_cfg.get("conditional", False) else 0


class Evaluator:
    """The loop's `evaluate` hook: `logger.eval_images` images from G against the real reference set.

    The metric names are checked when it is built (before training starts); the real set and its
    features are loaded on the first call, and the features come from the cache after that."""

    def __init__(self, cfg: DictConfig, data: Data, device: torch.device, seed: int) -> None:
        lg = cfg.logger
        self.names = [str(n) for n in lg.metrics]
        for name in self.names:
            METRICS.get(name)
        if self.names and data.kind != "image":
            raise ConfigError(
                f"logger.metrics={self.names} needs image data; data={cfg.data.name} holds points. "
                "Set logger.metrics=[]"
            )
        self.data_cfg, self.device, self.seed = cfg.data, device, seed
        self.n, self.n_real, self.split = (
            int(lg.eval_images),
            int(lg.eval_real_images),
            str(lg.eval_reference),
        )
        self.num_classes = label_classes(cfg.model, data.num_classes)
        self.z_dim = int(cfg.model.z_dim)
        self._real: RealSet | None = None

    def __bool__(self) -> bool:
        return bool(self.names)

    def __call__(self, G: nn.Module) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self._real is None:
            self._real = real_set(self.data_cfg, self.split, self.n_real)
        labels = balanced_labels(self.n, self.num_classes) if self.num_classes else None
        fake = generate(G, self.n, self.z_dim, self.device, labels=labels, seed=self.seed)
        ev = Evaluation(fake=fake, real=self._real, device=self.device, fake_labels=labels)
        values = evaluate(self.names, ev)
        log.info(
            "evaluated %d images against %d real in %.0f s: %s",
            self.n,
            len(self._real.images),
            time.perf_counter() - t0,
            "  ".join(f"{k.removeprefix('metrics/')} {v:.4g}" for k, v in values.items()),
        )
        return values


def generator_from_checkpoint(
    path: str | Path, device: torch.device, use_ema: bool = True
) -> tuple[nn.Module, DictConfig, dict[str, Any]]:
    """(G in eval mode, the run's config, the checkpoint) from a run directory or a .pt file.

    With `use_ema` the averaged weights are used when the checkpoint has them."""
    import gan_cli.datasets
    import gan_cli.losses  # noqa: F401  (their schemas are needed to read configs)
    from gan_cli.models import build_models

    file = ckpt.find(path)
    state = ckpt.load(file)
    if "config" not in state or "data_shape" not in state:
        raise CheckpointError(f"{file} has no saved config or data shape; it was not written by gan-train")
    cfg = OmegaConf.create(state["config"])
    shape = tuple(int(s) for s in state["data_shape"])
    data = Data(
        kind="image" if len(shape) == 3 else "points",
        shape=shape,
        num_classes=int(state.get("num_classes", 0)),
    )
    G, _ = build_models(cfg.model, data)
    averaged = use_ema and "G_ema" in state
    weights = state["G_ema"] if averaged else state["G"]
    weights = {k: v for k, v in weights.items() if not k.startswith("_")}
    try:
        G.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: the saved generator does not match its config: {err}") from err
    G.to(device).eval()
    if averaged:  # the average's own batch-norm statistics, as training used
        recompute_norm_stats(G, int(cfg.model.z_dim), device, label_classes(cfg.model, data.num_classes))
    return G, cfg, state
