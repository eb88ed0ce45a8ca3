"""Precision, recall, density and coverage on feature sets whose values are known, and intra-class FID
on a stand-in extractor whose per-class FIDs have a closed form; all metrics share one feature pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gan_cli.metrics.prdc as prdc_module
from gan_cli.errors import ConfigError
from gan_cli.metrics import FEATURES, Evaluation, RealSet, evaluate
from gan_cli.metrics.prdc import NEAREST_K, knn_radii, prdc


class PixelFeatures:
    """A stand-in extractor whose features are the pixel values; it records the batch sizes it sees."""

    name = "pixels_test"
    batch_size = 10_000
    seen: list[int] = []

    def __init__(self, device: torch.device) -> None:
        pass

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        PixelFeatures.seen.append(len(images))
        return images.flatten(1).float()


if "pixels_test" not in FEATURES:
    FEATURES.register("pixels_test")(PixelFeatures)


def _column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None]


def _integer_points(rng: np.random.Generator, n: int, offset: int = 0) -> np.ndarray:
    # integer coordinates keep every squared distance exact, so points on a ball's edge stay on it
    return (rng.integers(0, 10**5, size=(n, 3)) + offset).astype(np.float32)


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The four definitions written out with every pairwise distance at once."""

    def radii(a: np.ndarray) -> np.ndarray:
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    r_real, r_fake = radii(real), radii(fake)
    d = np.sqrt(((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1))  # [i, j]: real i, fake j
    in_real = d <= r_real[:, None]
    return {
        "precision": in_real.any(0).mean(),
        "recall": (d <= r_fake[None, :]).any(1).mean(),
        "density": in_real.sum() / (k * len(fake)),
        "coverage": in_real.any(1).mean(),
    }


def test_one_dimensional_example_by_hand() -> None:
    real = _column([0, 1, 3, 6, 10])
    fake = _column([9, 10, 11, 12, 20])
    # 3rd-nearest other point: 0 -> 6 (at 6), 1 -> 6 (5), 3 -> 0 or 6 (3), 6 -> 0 (6), 10 -> 1 (9),
    # so the real balls are [-6, 6], [-4, 6], [0, 6], [1, 11], [1, 19]
    assert knn_radii(torch.as_tensor(real, dtype=torch.float64)).tolist() == [36, 25, 9, 25, 81]
    # fake radii 3, 2, 2, 3, 10: balls [6, 12], [8, 12], [9, 13], [9, 15], [10, 30]
    assert knn_radii(torch.as_tensor(fake, dtype=torch.float64)).tolist() == [9, 4, 4, 9, 100]
    expected = {
        "precision": 4 / 5,  # 9, 10, 11 (on the edge of [1, 11]) and 12 lie in [-6, 19]; 20 does not
        "recall": 2 / 5,  # 6 (on the edge of [6, 12]) and 10 lie in [6, 30]
        "density": 7 / 15,  # real balls holding 9, 10, 11, 12, 20: 2 + 2 + 2 + 1 + 0, over k M = 15
        "coverage": 2 / 5,  # only the balls around 6 and 10 hold a generated point
    }
    for chunk in (1, 7, 10**6):
        assert prdc(real, fake, chunk_elements=chunk) == pytest.approx(expected, abs=1e-12)


def test_identical_sets() -> None:
    real = _integer_points(np.random.default_rng(0), 300)
    values = prdc(real, real.copy())
    # each ball B(X_i, NND_k(X_i)) holds X_i's copy and its k nearest neighbours: k + 1 points
    expected = {"precision": 1, "recall": 1, "density": (NEAREST_K + 1) / NEAREST_K, "coverage": 1}
    assert values == pytest.approx(expected, abs=1e-12)


def test_disjoint_far_apart_sets() -> None:
    rng = np.random.default_rng(1)
    real, fake = _integer_points(rng, 100), _integer_points(rng, 80, offset=10**7)
    assert prdc(real, fake) == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}


def test_generated_set_is_a_subset_of_the_real_one() -> None:
    rng = np.random.default_rng(2)
    near, far = _integer_points(rng, 40), _integer_points(rng, 60, offset=10**7)
    real = np.concatenate([near, far])
    fake = near[rng.permutation(len(near))]
    values = prdc(real, fake)
    # every generated point is a real one (inside its own ball), but the generated manifold reaches
    # only the 40 near points: recall and coverage are 40 / 100; each near ball holds k + 1 of them
    expected = {"precision": 1, "recall": 0.4, "density": (NEAREST_K + 1) / NEAREST_K, "coverage": 0.4}
    assert values == pytest.approx(expected, abs=1e-12)


def test_chunked_distances_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(70, 5)).astype(np.float32)
    fake = (rng.normal(size=(50, 5)) * 1.3 + 0.4).astype(np.float32)
    reference = brute_force(real.astype(np.float64), fake.astype(np.float64), NEAREST_K)
    assert 0 < reference["precision"] < 1 and 0 < reference["recall"] < 1  # a case that tells them apart
    for chunk in (1, 333, 10**6):
        assert prdc(real, fake, chunk_elements=chunk) == pytest.approx(reference, abs=1e-12)


def test_too_few_points_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 4 images on each side"):
        prdc(_column([0, 1, 2, 3]), _column([0, 1, 2]))


def _images(rng: np.random.Generator, n: int) -> torch.Tensor:
    return torch.as_tensor(rng.integers(20, 200, size=(n, 1, 2, 2)), dtype=torch.uint8)


def _evaluation(
    fake: torch.Tensor,
    real: torch.Tensor,
    cache: Path,
    fake_labels: torch.Tensor | None = None,
    real_labels: torch.Tensor | None = None,
) -> Evaluation:
    real_set = RealSet(real, real_labels, key=f"toy-n{len(real)}", dataset="toy", num_classes=5)
    return Evaluation(
        fake=fake,
        real=real_set,
        device=torch.device("cpu"),
        fake_labels=fake_labels,
        feature_name="pixels_test",
        cache_dir=str(cache),
    )


def test_fid_precision_recall_share_one_feature_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    fake, real = _images(rng, 30), _images(rng, 45)
    runs = []

    def counted(real: np.ndarray, fake: np.ndarray, **kwargs: Any) -> dict[str, float]:
        runs.append(1)
        return prdc(real, fake, **kwargs)

    monkeypatch.setattr(prdc_module, "prdc", counted)
    PixelFeatures.seen = []
    values = evaluate(
        ["fid", "precision", "recall", "density", "coverage"], _evaluation(fake, real, tmp_path)
    )
    assert PixelFeatures.seen == [30, 45]  # one batch of the generated images, then one of the real ones
    assert len(runs) == 1  # the distances are computed once for the four names
    direct = prdc(real.flatten(1).float().numpy(), fake.flatten(1).float().numpy())
    assert {k: values[f"metrics/{k}"] for k in direct} == pytest.approx(direct, abs=1e-12)
    assert values["metrics/fid"] > 0


SHIFTS = [(3, 3, 3, 3), (1, 0, 2, 0), (0, 0, 0, 0)]  # per-class FIDs: 36, 5 and 0


def _classes(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real images of classes 0-4 and generated ones whose class-c features are the real class-c
    features, reordered and shifted by SHIFTS[c]; classes 3 (one generated image) and 4 (none) are
    too small to count."""
    real_parts, fake_parts = [], []
    for c, shift in enumerate(SHIFTS):
        images = _images(rng, 12)
        real_parts.append((images, c))
        fake_parts.append(
            (images[rng.permutation(12)] + torch.tensor(shift, dtype=torch.uint8).view(1, 2, 2), c)
        )
    real_parts += [(_images(rng, 5), 3), (_images(rng, 6), 4)]
    fake_parts.append((_images(rng, 1), 3))

    def shuffled(parts: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.cat([p[0] for p in parts])
        labels = torch.cat([torch.full((len(p[0]),), p[1]) for p in parts])
        order = torch.as_tensor(rng.permutation(len(images)))
        return images[order], labels[order]

    return *shuffled(fake_parts), *shuffled(real_parts)


def test_intra_fid_of_shifted_classes(tmp_path: Path) -> None:
    fake, fake_y, real, real_y = _classes(np.random.default_rng(5))
    PixelFeatures.seen = []
    ev = _evaluation(fake, real, tmp_path, fake_labels=fake_y, real_labels=real_y)
    values = evaluate(["fid", "intra_fid", "precision"], ev)
    assert values["metrics/intra_fid"] == pytest.approx((36 + 5 + 0) / 3, abs=1e-6)
    assert values["metrics/intra_fid_classes"] == 3
    assert PixelFeatures.seen == [len(fake), len(real)]  # classes are rows of the whole sets' features


def test_intra_fid_of_a_real_set_against_itself(tmp_path: Path) -> None:
    _, _, real, real_y = _classes(np.random.default_rng(6))
    ev = _evaluation(real, real, tmp_path, real_labels=real_y)
    ev.fake_set = ev.real  # the floor: real images on the generated side bring their own labels
    values = evaluate(["intra_fid"], ev)
    assert abs(values["metrics/intra_fid"]) < 1e-8 and values["metrics/intra_fid_classes"] == 5


def test_intra_fid_needs_labels_on_both_sides(tmp_path: Path) -> None:
    fake, fake_y, real, real_y = _classes(np.random.default_rng(7))
    with pytest.raises(ConfigError, match="generated images have no labels.*model.conditional=true"):
        evaluate(["intra_fid"], _evaluation(fake, real, tmp_path, real_labels=real_y))
    with pytest.raises(ConfigError, match="real images of data=toy have no labels"):
        evaluate(["intra_fid"], _evaluation(fake, real, tmp_path, fake_labels=fake_y))
