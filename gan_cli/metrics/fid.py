"""FID and KID on the features of `Evaluation.feature_name` (Inception-v3 unless a test swaps it)."""

from __future__ import annotations

from gan_cli.metrics.base import METRICS, Evaluation
from gan_cli.metrics.frechet import KID_SUBSET_SIZE, frechet_distance, kernel_inception_distance, mean_cov


@METRICS.register("fid")
def fid(ev: Evaluation) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to the generated and the real features (lower is better)."""
    fake = mean_cov(ev.features(ev.feature_name, "fake"))
    real = mean_cov(ev.features(ev.feature_name, "real"))
    return {"fid": frechet_distance(*fake, *real)}


@METRICS.register("kid")
def kid(ev: Evaluation) -> dict[str, float]:
    """Kernel inception distance, unbiased, over 100 subsets of up to 1,000 images (lower is better).

    `kid_std`, its spread over the subsets, is reported only when both sides hold more images than a
    subset: with fewer, every subset of a side is that whole side and the spread says nothing."""
    fake, real = ev.features(ev.feature_name, "fake"), ev.features(ev.feature_name, "real")
    mean, std = kernel_inception_distance(fake, real)
    if min(len(fake), len(real)) > KID_SUBSET_SIZE:
        return {"kid": mean, "kid_std": std}
    return {"kid": mean}
