"""k-nearest-neighbour metrics on the features FID uses, and intra-class FID for conditional models.

Precision and recall follow Kynkäänniemi et al. 2019 ("Improved Precision and Recall Metric for
Assessing Generative Models"), density and coverage Naeem et al. 2020 ("Reliable Fidelity and Diversity
Metrics for Generative Models"). All four come from one set of pairwise distances, computed once per
evaluation and shared by the four metric names.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gan_cli.errors import ConfigError
from gan_cli.metrics.base import METRICS, Evaluation
from gan_cli.metrics.frechet import frechet_distance, mean_cov

NEAREST_K = 3  # the k of both papers
CHUNK_ELEMENTS = 2**23  # distances held at once: 64 MiB in float64


def _row_chunks(rows: int, cols: int, elements: int) -> Iterator[slice]:
    step = max(1, elements // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def _squared_distances(
    a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor
) -> torch.Tensor:
    """||a_i - b_j||^2 as ||a_i||^2 + ||b_j||^2 - 2 a_i.b_j, clamped at 0 against round-off."""
    d = a @ b.T
    return d.mul_(-2).add_(a_sq[:, None]).add_(b_sq[None, :]).clamp_min_(0)


def knn_radii(feats: torch.Tensor, k: int = NEAREST_K, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Squared distance from each row to its k-th nearest other row (the row itself excluded)."""
    sq = (feats * feats).sum(1)
    radii = torch.empty(len(feats), dtype=feats.dtype, device=feats.device)
    for rows in _row_chunks(len(feats), len(feats), chunk_elements):
        d = _squared_distances(feats[rows], sq[rows], feats, sq)
        own = torch.arange(rows.stop - rows.start, device=feats.device)
        d[own, own + rows.start] = torch.inf
        radii[rows] = d.kthvalue(k, dim=1).values
    return radii


def prdc(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = NEAREST_K,
    device: torch.device | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, float]:
    """Precision, recall, density and coverage of fake features Y (M, D) against real features X (N, D).

    With B(x, r) the closed ball and NND_k the distance to the k-th nearest neighbour in the same set:
      precision = (1/M) sum_j 1[exists i: Y_j in B(X_i, NND_k(X_i))]
      recall    = (1/N) sum_i 1[exists j: X_i in B(Y_j, NND_k(Y_j))]
      density   = (1/(k M)) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]
      coverage  = (1/N) sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]
    Distances are computed in float64, `chunk_elements` at a time.
    """
    n, m = len(real), len(fake)
    if min(n, m) < k + 1:
        raise ConfigError(
            f"precision, recall, density and coverage need at least {k + 1} images on each side for "
            f"k = {k} nearest neighbours; got {n} real and {m} generated: measure more images"
        )
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    real_radii, fake_radii = knn_radii(x, k, chunk_elements), knn_radii(y, k, chunk_elements)
    x_sq, y_sq = (x * x).sum(1), (y * y).sum(1)
    fake_in_real = torch.zeros(m, dtype=torch.bool, device=x.device)
    real_in_fake = torch.zeros(n, dtype=torch.bool, device=x.device)
    covered = torch.zeros(n, dtype=torch.bool, device=x.device)
    hits = 0
    for rows in _row_chunks(n, m, chunk_elements):
        d = _squared_distances(x[rows], x_sq[rows], y, y_sq)
        in_real_ball = d <= real_radii[rows, None]  # [i, j]: Y_j in B(X_i, NND_k(X_i))
        fake_in_real |= in_real_ball.any(0)
        covered[rows] = in_real_ball.any(1)
        hits += int(in_real_ball.sum())
        real_in_fake[rows] = (d <= fake_radii[None, :]).any(1)
    return {
        "precision": float(fake_in_real.double().mean()),
        "recall": float(real_in_fake.double().mean()),
        "density": hits / (k * m),
        "coverage": float(covered.double().mean()),
    }


def _prdc_of(ev: Evaluation) -> dict[str, float]:
    """The four numbers for `ev`, computed on the first request and kept on it for the others."""
    key = ("prdc", ev.feature_name)
    if key not in ev._shared:
        device = ev.device if ev.device.type == "cuda" else torch.device("cpu")  # MPS has no float64
        real, fake = ev.features(ev.feature_name, "real"), ev.features(ev.feature_name, "fake")
        ev._shared[key] = prdc(real, fake, device=device)
    return ev._shared[key]


@METRICS.register("precision")
def precision(ev: Evaluation) -> dict[str, float]:
    """Share of generated images inside the real manifold: fidelity (higher is better)."""
    return {"precision": _prdc_of(ev)["precision"]}


@METRICS.register("recall")
def recall(ev: Evaluation) -> dict[str, float]:
    """Share of real images inside the generated manifold: diversity (higher is better)."""
    return {"recall": _prdc_of(ev)["recall"]}


@METRICS.register("density")
def density(ev: Evaluation) -> dict[str, float]:
    """How many real neighbourhoods each generated image lies in, over k, averaged: fidelity (about 1 when
    the two distributions match, above 1 when samples crowd where real data is dense)."""
    return {"density": _prdc_of(ev)["density"]}


@METRICS.register("coverage")
def coverage(ev: Evaluation) -> dict[str, float]:
    """Share of real images whose neighbourhood holds a generated one: diversity (higher is better)."""
    return {"coverage": _prdc_of(ev)["coverage"]}


@METRICS.register("intra_fid")
def intra_fid(ev: Evaluation) -> dict[str, float]:
    """Mean over classes c of FID(generated images asked for class c, real images of class c), from the
    features of the whole sets; classes with fewer than 2 images on either side are skipped."""
    fake_labels = ev.fake_labels
    if fake_labels is None and ev.fake_set is not None:
        fake_labels = ev.fake_set.labels
    if fake_labels is None:
        raise ConfigError(
            "intra_fid compares classes, but the generated images have no labels (the model is not "
            "conditional): train with model.conditional=true, or leave intra_fid out of the metrics"
        )
    if ev.real.labels is None:
        raise ConfigError(
            f"intra_fid compares classes, but the real images of data={ev.real.dataset} have no labels: "
            "use a labelled data set, or leave intra_fid out of the metrics"
        )
    fake, real = ev.features(ev.feature_name, "fake"), ev.features(ev.feature_name, "real")
    fake_y, real_y = fake_labels.cpu().numpy(), ev.real.labels.cpu().numpy()
    if len(fake_y) != len(fake) or len(real_y) != len(real):
        raise ValueError(
            f"labels and features differ in count: {len(fake_y)} vs {len(fake)} generated, "
            f"{len(real_y)} vs {len(real)} real"
        )
    distances = []
    for c in np.union1d(fake_y, real_y):
        fake_c, real_c = fake[fake_y == c], real[real_y == c]
        if min(len(fake_c), len(real_c)) >= 2:
            distances.append(frechet_distance(*mean_cov(fake_c), *mean_cov(real_c)))
    if not distances:
        raise ConfigError(
            "intra_fid needs a class with at least 2 generated and 2 real images; none has: "
            "measure more images"
        )
    return {"intra_fid": float(np.mean(distances)), "intra_fid_classes": float(len(distances))}
