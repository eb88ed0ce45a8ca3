"""Sample-quality metrics by name (FID, KID, the domain-classifier metrics) and the feature
extractors they share.

A metric takes an `Evaluation` (generated and real images, both uint8) and returns named numbers.
Features are computed once per extractor and side, so FID and KID share one Inception pass, and the
real side's features are cached on disk (see `reference.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from gan_cli.registry import Registry, import_submodules


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
            from gan_cli.metrics.reference import cached_features, extract

            extractor = FEATURES.get(name)(self.device)
            if side == "real" or self.fake_set is not None:
                images = self.real if side == "real" else self.fake_set
                assert images is not None
                self._memo[name, side] = cached_features(extractor, images, self.device, self.cache_dir)
            else:
                self._memo[name, side] = extract(extractor, self.fake, self.device)
        return self._memo[name, side]


Metric = Callable[[Evaluation], dict[str, float]]
METRICS: Registry[Metric] = Registry("metric")


def evaluate(names: list[str], ev: Evaluation) -> dict[str, Any]:
    """Run the named metrics in order; keys are `metrics/<number>` ready for logging."""
    metrics = [METRICS.get(n) for n in names]  # unknown names fail before any work
    out: dict[str, Any] = {}
    for metric in metrics:
        out.update({f"metrics/{k}": v for k, v in metric(ev).items()})
    return out


import_submodules(__name__)
