"""FID/KID maths against direct references, their properties on a stand-in feature extractor,
Inception's preprocessing, and the real-feature cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf

from gan_cli.metrics import FEATURES, METRICS, Evaluation, RealSet, evaluate
from gan_cli.metrics.base import cached_features, extract
from gan_cli.metrics.frechet import frechet_distance, kernel_inception_distance, mean_cov
from gan_cli.metrics.inception import inception_input, legacy_bilinear_matrix
from gan_cli.metrics.reference import real_set


class RandomFeatures:
    """A cheap stand-in for Inception: a fixed random projection of 14x14 pixels through a ReLU."""

    name = "random_test"
    batch_size = 32
    calls = 0

    def __init__(self, device: torch.device) -> None:
        self.weight = torch.randn(196, 64, generator=torch.Generator().manual_seed(0)) / 14

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        RandomFeatures.calls += 1
        x = torch.nn.functional.avg_pool2d(images.float().mean(1, keepdim=True) / 255, 2)
        return torch.relu(x.flatten(1) @ self.weight)


if "random_test" not in FEATURES:
    FEATURES.register("random_test")(RandomFeatures)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID the textbook way: scipy's matrix square root of S1 S2."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim", [1, 8, 64])
def test_frechet_matches_scipy(dim: int) -> None:
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(300, dim))
    b = rng.normal(size=(200, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 0.3
    ours = frechet_distance(*mean_cov(a), *mean_cov(b))
    assert ours == pytest.approx(scipy_fid(a, b), rel=1e-6, abs=1e-9)


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    feats = np.random.default_rng(0).normal(size=(500, 32))
    assert abs(frechet_distance(*mean_cov(feats), *mean_cov(feats))) < 1e-8


def test_kid_is_unbiased_and_separates() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((400, 16)), rng.random((400, 16))
    same, _ = kernel_inception_distance(a, b, num_subsets=50, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 0.2, num_subsets=50, subset_size=200)
    assert abs(same) < 2e-3 < shifted
    # the unbiased estimator on one subset, written out term by term
    x, y = a[:3], b[:3]
    k = lambda u, v: (u @ v / 16 + 1) ** 3  # noqa: E731
    direct = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(3) for j in range(3) if i != j) / 6
    direct -= 2 * sum(k(x[i], y[j]) for i in range(3) for j in range(3)) / 9
    assert kernel_inception_distance(x, y, num_subsets=1, subset_size=3)[0] == pytest.approx(direct, rel=1e-4)


def test_legacy_bilinear_resize() -> None:
    # TensorFlow 1's bilinear resize: output i reads input i * in / out, clamped at the edge
    assert legacy_bilinear_matrix(2, 4).tolist() == [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    assert torch.allclose(legacy_bilinear_matrix(28, 299).sum(1), torch.ones(299))


def test_inception_input_scaling_and_channels() -> None:
    gray = torch.tensor([[[[0, 255], [128, 64]]]], dtype=torch.uint8)
    x = inception_input(gray)
    assert x.shape == (1, 3, 299, 299)
    assert x.min().item() == -1 and x.max().item() == pytest.approx(0.9921875)
    assert torch.equal(x[:, 0], x[:, 2])
    with pytest.raises(TypeError):
        inception_input(gray.float())


def _mnist_cfg(root: Path) -> object:
    return OmegaConf.create(
        {"name": "mnist", "root": str(root), "download": False, "split": "train", "image_size": 28}
    )


def _evaluation(fake: torch.Tensor, real: RealSet, cache: Path) -> Evaluation:
    return Evaluation(
        fake=fake, real=real, device=torch.device("cpu"), feature_name="random_test", cache_dir=str(cache)
    )


def test_fid_orders_real_real_below_noise_real(mnist_root: Path, tmp_path: Path) -> None:
    test = real_set(_mnist_cfg(mnist_root), "test", 64)
    train = real_set(_mnist_cfg(mnist_root), "train", 64)
    noise = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    real_real = evaluate(["fid", "kid"], _evaluation(train.images, test, tmp_path))
    noise_real = evaluate(["fid", "kid"], _evaluation(noise, test, tmp_path))
    self_fid = evaluate(["fid"], _evaluation(test.images, test, tmp_path))
    assert abs(self_fid["metrics/fid"]) < 1e-6
    assert real_real["metrics/fid"] * 20 < noise_real["metrics/fid"]
    assert real_real["metrics/kid"] * 20 < noise_real["metrics/kid"]


def test_kid_std_only_when_subsets_vary(tmp_path: Path) -> None:
    """With no more images than a KID subset (1000) every subset is the whole set: no spread to report."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2100, 1, 28, 28), dtype=torch.uint8, generator=gen)
    real = RealSet(images[1050:], None, "noise-real-n1050", "noise")
    few = evaluate(["kid"], _evaluation(images[:1000], real, tmp_path))
    many = evaluate(["kid"], _evaluation(images[:1050], real, tmp_path))
    assert "metrics/kid" in few and "metrics/kid_std" not in few
    assert many["metrics/kid_std"] > 0


def test_feature_passes_report_their_progress_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("gan_cli.metrics.base.PROGRESS_EVERY_S", 0.0)
    images = torch.zeros(70, 1, 28, 28, dtype=torch.uint8)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        feats = extract(RandomFeatures(torch.device("cpu")), images, torch.device("cpu"), "generated images")
    assert feats.shape == (70, 64)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"random_test features of generated images: {n}/70 img" for n in (32, 64, 70)]


def test_real_features_are_cached(mnist_root: Path, tmp_path: Path) -> None:
    test = real_set(_mnist_cfg(mnist_root), "test", 40)
    assert test.key.startswith("mnist-test-28px-n40-") and test.images.dtype == torch.uint8
    extractor = RandomFeatures(torch.device("cpu"))
    before = RandomFeatures.calls
    first = cached_features(extractor, test, torch.device("cpu"), str(tmp_path))
    after_first = RandomFeatures.calls
    second = cached_features(extractor, test, torch.device("cpu"), str(tmp_path))
    assert after_first > before and RandomFeatures.calls == after_first  # the second read the file
    assert np.array_equal(first, second) and first.shape == (40, 64)
    assert [p.name for p in tmp_path.iterdir()] == [f"{test.key}-random_test.npy"]
    # real images on the "generated" side (the floor of a benchmark) are cached under their own key
    train = real_set(_mnist_cfg(mnist_root), "train", 40)
    ev = Evaluation(
        train.images, test, torch.device("cpu"), feature_name="random_test", cache_dir=str(tmp_path)
    )
    ev.fake_set = train
    assert ev.features("random_test", "fake").shape == (40, 64)
    assert (tmp_path / f"{train.key}-random_test.npy").is_file()


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(
        Exception,
        match="unknown metric .fdi.; choose one of: classifier, coverage, density, fid, intra_fid, kid, ",
    ):
        METRICS.get("fdi")


@pytest.mark.slow
def test_inception_features_of_real_images(mnist_root: Path) -> None:
    net = FEATURES.get("inception")(torch.device("cpu"))
    images = real_set(_mnist_cfg(mnist_root), "test", 6).images
    feats = net(images)
    assert feats.shape == (6, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()
    assert torch.allclose(net(images[:3]), feats[:3], atol=1e-4)  # no batch statistics
