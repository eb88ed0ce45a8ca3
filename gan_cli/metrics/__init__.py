"""Sample-quality metrics by name (FID, KID, the domain-classifier metrics) and the feature
extractors they share.

A metric takes an `Evaluation` (generated and real images, both uint8) and returns named numbers.
Features are computed once per extractor and side, so FID and KID share one Inception pass, and the
real side's features are cached on disk (see `reference.py`).
"""

from __future__ import annotations

from typing import Any

from gan_cli.metrics.base import (
    FEATURES,
    METRICS,
    Evaluation,
    FeatureExtractor,
    Metric,
    RealSet,
    cache_root,
    cached_features,
    extract,
)
from gan_cli.registry import import_submodules

__all__ = [
    "FEATURES",
    "METRICS",
    "Evaluation",
    "FeatureExtractor",
    "Metric",
    "RealSet",
    "cache_root",
    "cached_features",
    "evaluate",
    "extract",
]


def evaluate(names: list[str], ev: Evaluation) -> dict[str, Any]:
    """Run the named metrics in order; keys are `metrics/<number>` ready for logging."""
    metrics = [METRICS.get(n) for n in names]  # unknown names fail before any work
    out: dict[str, Any] = {}
    for metric in metrics:
        out.update({f"metrics/{k}": v for k, v in metric(ev).items()})
    return out


import_submodules(__name__)
