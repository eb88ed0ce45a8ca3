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


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) for samples in rows."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def _real_sample(data: Data, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real examples and their labels, the same ones for every run with the same seed."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    if data.tensor is not None:
        labels = data.labels if data.labels is not None else torch.zeros(len(data), dtype=torch.long)
        return data.tensor[idx], labels[idx]
    assert data.dataset is not None
    pairs = [data.dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])


@torch.no_grad()
def pixel_fd(G: nn.Module, data: Data, z_dim: int, device: torch.device, seed: int = 0) -> float:
    """The stand-in objective: see the module docstring. Leaves the global RNG untouched."""
    n = min(PROXY_SAMPLES, len(data))
    real, labels = _real_sample(data, n, seed)
    gen = torch.Generator().manual_seed(seed + 2)
    was_training = G.training
    G.eval()
    fakes = []
    for start in range(0, n, 256):
        y = labels[start : start + 256].to(device)
        z = torch.randn(len(y), z_dim, generator=gen).to(device)
        fakes.append(G(z, y).float().cpu())
    G.train(was_training)
    return frechet_distance(_features(real), _features(torch.cat(fakes)))
