"""Measuring a generator during training: the labels it is asked for and the loop's evaluation hook."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from gan_cli.config import Split, choice
from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.metrics import METRICS, Evaluation, RealSet, evaluate
from gan_cli.metrics.reference import generate, real_set
from gan_cli.models import label_classes

log = logging.getLogger("gan_cli")


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: every class equally often (what a conditional G is evaluated on)."""
    return torch.arange(n) % num_classes


def grid_labels(n: int, num_classes: int) -> tuple[torch.Tensor, int]:
    """Labels for a sample grid with one row per class: (labels, images per row)."""
    per_row = max(1, n // num_classes)
    return torch.arange(num_classes).repeat_interleave(per_row), per_row


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
            choice(lg.eval_reference, Split, "logger.eval_reference").value,
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
