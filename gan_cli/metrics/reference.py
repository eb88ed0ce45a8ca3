"""Getting images in and features out: the real reference set, generated images, and the on-disk
cache of real-set features (computed once per data set, split, resolution, count and extractor)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli.datasets import build_data
from gan_cli.errors import ConfigError
from gan_cli.metrics import FeatureExtractor, RealSet
from gan_cli.metrics.inception import cache_root

log = logging.getLogger("gan_cli")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], the way a saved PNG would hold it."""
    return x.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def extract(extractor: FeatureExtractor, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """Features of uint8 (N, C, H, W) images in batches; (N, dim) float32 on the CPU."""
    out = [extractor(chunk.to(device)).cpu() for chunk in images.split(extractor.batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def cached_features(
    extractor: FeatureExtractor, real: RealSet, device: torch.device, cache_dir: str | None = None
) -> np.ndarray:
    """The real set's features, read from the cache or computed and written there."""
    folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / "reference"
    path = folder / f"{real.key}-{extractor.name}.npy"
    if path.is_file():
        return np.load(path)
    log.info(
        "computing %s features of %d real images (once; cached in %s)", extractor.name, len(real.images), path
    )
    feats = extract(extractor, real.images, device)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats


def real_set(data_cfg: DictConfig, split: str, n: int) -> RealSet:
    """Up to `n` images of the data set's `split` (train | test), the first ones in the file order.

    Data sets without splits (image folders) always give their images; points have no images."""
    if split not in ("train", "test"):
        raise ConfigError(f"the reference split {split!r} is not valid; allowed: train, test")
    cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    assert isinstance(cfg, DictConfig)
    if "split" in cfg:
        cfg.split = split
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
def generate(
    G: nn.Module,
    n: int,
    z_dim: int,
    device: torch.device,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 500,
) -> torch.Tensor:
    """`n` images from G (in eval mode) as uint8 on the CPU, from noise seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = torch.randn(count, z_dim, generator=gen).to(device)
        y = labels[start : start + count].to(device) if labels is not None else None
        out.append(to_uint8(G(z, y)))
    G.train(was_training)
    return torch.cat(out)
