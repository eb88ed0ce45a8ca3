"""The images metrics compare: the real reference set, and generated images in batches (the one
generation loop that sampling, evaluation and the objective share)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli.datasets import build_data
from gan_cli.errors import ConfigError
from gan_cli.metrics.base import RealSet

log = logging.getLogger("gan_cli")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], the way a saved PNG would hold it."""
    return x.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def real_set(data_cfg: DictConfig, split: str, n: int) -> RealSet:
    """Up to `n` images of the data set's `split` (train | test), the first ones in the file order.

    Data sets without splits (image folders) always give their images; points have no images."""
    if split not in ("train", "test"):
        raise ConfigError(f"the reference split {split!r} is not valid; allowed: train, test")
    cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    assert isinstance(cfg, DictConfig)
    if "split" in cfg:
        cfg.split = split
    if "limit" in cfg:  # a small-data run is measured against the whole reference split
        cfg.limit = None
    data = build_data(cfg)
    if data.kind != "image":
        raise ConfigError(f"image metrics need image data; data={data_cfg.name} holds {data.kind}")
    if data.tensor is not None:
        images, labels = data.tensor[:n], (data.labels[:n] if data.labels is not None else None)
    else:
        assert data.dataset is not None
        pairs = [data.dataset[i] for i in range(min(n, len(data)))]
        images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        labels = torch.as_tensor([int(p[1]) for p in pairs])
    images = images.contiguous()
    digest = hashlib.sha1(images.numpy().tobytes()).hexdigest()[:12]
    where = split if "split" in cfg else "all"
    key = f"{cfg.name}-{where}-{images.shape[-1]}px-n{len(images)}-{digest}"
    return RealSet(images, labels, key, str(cfg.name), data.num_classes)


@torch.no_grad()
def run_generator(
    G: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], device: torch.device
) -> Iterator[torch.Tensor]:
    """G's outputs (in eval mode, as float on the CPU) for each (noise, labels) batch."""
    was_training = G.training
    G.eval()
    try:
        for z, y in batches:
            yield G(z.to(device), None if y is None else y.to(device)).float().cpu()
    finally:
        G.train(was_training)


def generate(
    G: nn.Module,
    n: int,
    z_dim: int,
    device: torch.device,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 500,
    truncation: float = 1.0,
) -> torch.Tensor:
    """`n` images from G as uint8 on the CPU, from noise seeded by `seed` (scaled by `truncation`)."""
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            z = torch.randn(count, z_dim, generator=gen) * truncation
            yield z, labels[start : start + count] if labels is not None else None

    return torch.cat([to_uint8(x) for x in run_generator(G, batches(), device)])
