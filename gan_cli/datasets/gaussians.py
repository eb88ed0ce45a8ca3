"""The classic 2-D mixture benchmarks: 8 Gaussians on a ring and 25 on a grid, made in memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING, DictConfig

from gan_cli.config import store_schema
from gan_cli.datasets import DATASETS, Data
from gan_cli.errors import DataError


@dataclass
class GaussiansConfig:
    name: str = MISSING
    mode: str = MISSING  # ring (8 modes on a circle of radius 2) | grid (25 modes, 5x5, spacing 2)
    num_samples: int = MISSING  # points generated
    std: float = MISSING  # standard deviation of each mode
    seed: int = MISSING  # the data set's own seed (independent of trainer.seed)


store_schema("data", "gaussians", GaussiansConfig)


def mode_centers(mode: str) -> torch.Tensor:
    if mode == "ring":
        angles = torch.arange(8) * (2 * math.pi / 8)
        return torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles)], dim=1)
    if mode == "grid":
        axis = torch.arange(-2, 3, dtype=torch.float32) * 2
        return torch.cartesian_prod(axis, axis)
    raise DataError(f"data.mode={mode!r} is not valid; allowed: ring, grid")


@DATASETS.register("gaussians")
def gaussians(cfg: DictConfig) -> Data:
    if cfg.num_samples < 1 or cfg.std <= 0:
        raise DataError("data.num_samples must be >= 1 and data.std > 0")
    centers = mode_centers(cfg.mode)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    labels = torch.randint(len(centers), (int(cfg.num_samples),), generator=gen)
    points = centers[labels] + cfg.std * torch.randn(int(cfg.num_samples), 2, generator=gen)
    return Data(kind="points", shape=(2,), num_classes=len(centers), tensor=points, labels=labels)
