"""The domain classifier: coverage and KL on crafted histograms, the classifier Inception score,
and training one on a small learnable data set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_cli.metrics import Evaluation, RealSet, evaluate
from gan_cli.metrics.classifier import coverage, inception_score, train_classifier
from tests.conftest import make_mnist


def test_coverage_of_matching_histograms() -> None:
    assert coverage(np.full(10, 500), np.full(10, 1000)) == (10, pytest.approx(0.0))


def test_coverage_of_a_collapsed_generator() -> None:
    fake = np.zeros(10)
    fake[3] = 5000
    covered, kl = coverage(fake, np.full(10, 1000))
    assert covered == 1 and kl == pytest.approx(math.log(10))


def test_coverage_with_missing_and_rare_classes() -> None:
    real = np.full(10, 100)
    fake = np.array([0, 0, 0, 100, 100, 100, 100, 100, 100, 100])
    covered, kl = coverage(fake, real)
    assert covered == 7 and kl == pytest.approx(math.log(10 / 7))
    # a class drawn at 15% of its real share is not covered, at 25% it is
    rare = np.array([15] + [100] * 9)
    assert coverage(rare, real)[0] == 9
    assert coverage(np.array([25] + [100] * 9), real)[0] == 10
    # a class the real data never shows makes the KL infinite
    assert coverage(np.array([1, 1]), np.array([1, 0]))[1] == math.inf


def test_classifier_inception_score_bounds() -> None:
    confident_all = torch.eye(10).repeat(20, 1)
    assert inception_score(confident_all) == pytest.approx(10.0)
    assert inception_score(torch.eye(10)[[2] * 200]) == pytest.approx(1.0)
    assert inception_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A classifier trained on 2,000 labelled blobs (their position gives the class)."""
    root = make_mnist(tmp_path_factory.mktemp("blobs"), n_train=2000, n_test=300)
    out = tmp_path_factory.mktemp("cache") / "classifiers" / "mnist-28px.pt"
    result = train_classifier("mnist", str(root), 28, torch.device("cpu"), epochs=2, width=8, out=out)
    return root, result


def test_trained_classifier_is_accurate_and_saved(trained: tuple[Path, dict]) -> None:
    _, result = trained
    assert result["test_accuracy"] >= 0.9
    saved = torch.load(result["path"], weights_only=True)
    assert saved["num_classes"] == 10 and saved["test_accuracy"] == result["test_accuracy"]


def test_classifier_metrics_catch_mode_collapse(
    trained: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, result = trained
    monkeypatch.setenv("GAN_CLI_CACHE", str(Path(result["path"]).parent.parent))
    from omegaconf import OmegaConf

    from gan_cli.metrics.reference import real_set

    cfg = OmegaConf.create(
        {"name": "mnist", "root": str(root), "download": False, "split": "train", "image_size": 28}
    )
    real = real_set(cfg, "test", 300)
    train = real_set(cfg, "train", 2000)
    one_class = train.images[train.labels == 4][:200]  # type: ignore[index]

    def run(fake: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        ev = Evaluation(fake=fake, real=real, device=torch.device("cpu"), fake_labels=labels)
        return evaluate(["classifier"], ev)

    good = run(train.images[:300], train.labels[:300])  # type: ignore[index]
    collapsed = run(one_class)
    assert good["metrics/classes_covered"] == 10 and collapsed["metrics/classes_covered"] == 1
    assert good["metrics/class_kl"] < 0.1 < 1.5 < collapsed["metrics/class_kl"]
    assert good["metrics/classifier_is"] > 5 > 1.5 > collapsed["metrics/classifier_is"]
    assert good["metrics/classifier_fid"] < collapsed["metrics/classifier_fid"]
    assert good["metrics/label_accuracy"] >= 0.9
    assert "metrics/label_accuracy" not in collapsed


def test_missing_classifier_says_how_to_train_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_CLI_CACHE", str(tmp_path))
    real = RealSet(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), None, "k", "fashion_mnist", 10)
    ev = Evaluation(fake=real.images, real=real, device=torch.device("cpu"))
    with pytest.raises(Exception, match="gan-classifier fashion_mnist"):
        evaluate(["classifier"], ev)
