"""What every metric shares: the feature-extractor interface, the registries of extractors and
metrics, the real set and the `Evaluation` that memoises features, and the on-disk feature cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gan_cli.logger import WorkProgress
from gan_cli.registry import Registry

log = logging.getLogger("gan_cli")


class FeatureExtractor(Protocol):
    """uint8 images (B, C, H, W) on `device` -> float features (B, dim)."""

    name: str
    batch_size: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


FEATURES: Registry[Callable[[torch.device], FeatureExtractor]] = Registry("feature extractor")


@dataclass
class RealSet:
    """The real images generated ones are compared with, and what identifies them in the cache."""

    images: torch.Tensor  # uint8 (N, C, H, W) on the CPU
    labels: torch.Tensor | None  # (N,) class labels, when the data set has them
    key: str  # data set, split, resolution, count and a digest of the pixels
    dataset: str  # the data set's name (which domain classifier applies)
    num_classes: int = 0


@dataclass
class Evaluation:
    """Inputs of one evaluation; `features` memoises each extractor's output per side."""

    fake: torch.Tensor  # uint8 (N, C, H, W) generated images, on the CPU
    real: RealSet
    device: torch.device
    fake_labels: torch.Tensor | None = None  # the labels a conditional G was asked for
    feature_name: str = "inception"  # the extractor FID and KID use
    cache_dir: str | None = None  # where real-set features are stored (None: the default cache)
    fake_set: RealSet | None = None  # set when the "generated" side is real images (the floor): cached too
    _memo: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _shared: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # by (kind, extractor)

    def features(self, name: str, side: str) -> np.ndarray:
        """(N, dim) float32 features of the 'fake' or 'real' images under extractor `name`."""
        if (name, side) not in self._memo:
            extractor = FEATURES.get(name)(self.device)
            if side == "real" or self.fake_set is not None:
                images = self.real if side == "real" else self.fake_set
                assert images is not None
                self._memo[name, side] = cached_features(extractor, images, self.device, self.cache_dir)
            else:
                self._memo[name, side] = extract(extractor, self.fake, self.device, "generated images")
        return self._memo[name, side]


Metric = Callable[[Evaluation], dict[str, float]]
METRICS: Registry[Metric] = Registry("metric")


def cache_root() -> Path:
    """Where gan_cli keeps downloaded weights, reference features and classifiers."""
    return Path(os.environ.get("GAN_CLI_CACHE", "~/.cache/gan_cli")).expanduser()


PROGRESS_EVERY_S = 30.0  # seconds between progress lines of a feature pass when stderr is no terminal


def extract(
    extractor: FeatureExtractor, images: torch.Tensor, device: torch.device, what: str = "images"
) -> np.ndarray:
    """Features of uint8 (N, C, H, W) images in batches; (N, dim) float32 on the CPU. Shows its progress
    (Inception takes about 90 ms an image on a 2-core CPU)."""
    out = []
    with WorkProgress(len(images), f"{extractor.name} features of {what}", every_s=PROGRESS_EVERY_S) as bar:
        for chunk in images.split(extractor.batch_size):
            out.append(extractor(chunk.to(device)).cpu())
            bar.update(len(chunk))
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
    feats = extract(extractor, real.images, device, "real images")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats
