"""The one number a sweep minimises: the run's final FID, or where FID is off a cheap stand-in.

`train()` returns it as `result["objective"]` (its name as `result["objective_name"]`), the CLI hands it
to Hydra's sweeper, and `gan-sweep-report` sorts by it. Lower is better for both.

The stand-in, `pixel_fd`, is the Frechet distance between Gaussians fitted to real and generated
samples in a tiny pixel space (images average-pooled to at most 8x8, all channels kept; 2-D points as
they are). It needs no Inception network and takes a second, and it reacts to what ruins a GAN run
early: collapse onto a few layouts, wrong brightness or colour, divergence. It is blind to fine
texture and to perceptual realism, its scale differs from FID's, and it is biased upwards with few
samples; compare it only between runs on the same data at the same image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan_cli.datasets import Data, to_unit_range
from gan_cli.metrics.frechet import frechet_distance, mean_cov
from gan_cli.metrics.reference import run_generator

PROXY_NAME = "pixel_fd"
PROXY_SAMPLES = 2048  # real and generated samples the stand-in compares
POOLED_SIZE = 8  # images are averaged down to at most this many pixels a side


def choose(metrics: Mapping[str, Any], proxy: Callable[[], float]) -> tuple[str, float]:
    """The final FID when the run measured one, else the stand-in (computed only then)."""
    fid = metrics.get("fid")
    if fid is not None and math.isfinite(float(fid)):
        return "fid", float(fid)
    return PROXY_NAME, float(proxy())


def _features(batch: torch.Tensor) -> torch.Tensor:
    x = to_unit_range(batch).float()
    if x.dim() == 4:
        x = F.adaptive_avg_pool2d(x, min(POOLED_SIZE, x.shape[-1]))
    return x.flatten(1).double()


def _real_sample(data: Data, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real examples and their labels, the same ones for every run with the same seed."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    if data.tensor is not None:
        labels = data.labels if data.labels is not None else torch.zeros(len(data), dtype=torch.long)
        return data.tensor[idx], labels[idx]
    assert data.dataset is not None
    pairs = [data.dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])


def pixel_fd(G: nn.Module, data: Data, z_dim: int, device: torch.device, seed: int = 0) -> float:
    """The stand-in objective: see the module docstring. Leaves the global RNG untouched."""
    n = min(PROXY_SAMPLES, len(data))
    real, labels = _real_sample(data, n, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    chunks = [(torch.randn(len(y), z_dim, generator=gen), y) for y in labels.split(256)]
    fake = torch.cat(list(run_generator(G, chunks, device)))
    mu_r, cov_r = mean_cov(_features(real).numpy())
    mu_f, cov_f = mean_cov(_features(fake).numpy())
    return frechet_distance(mu_r, cov_r, mu_f, cov_f)
