"""Metrics from a domain classifier: a small CNN trained on the real data set's labels.

FID on Inception features can look fine while the generator draws only some of the classes; a
classifier of the domain itself catches that. From its predictions on the generated images:

- `classes_covered`: classes the generator draws at least COVERED_FRACTION as often as the real
  data holds them (by the same classifier's predictions on the real reference set);
- `class_kl`: KL(generated class histogram || real class histogram), 0 when the proportions match;
- `classifier_is`: the Inception score computed with this classifier, exp E_x KL(p(y|x) || p(y)),
  at most the number of classes: high when each image is clearly one class and all classes appear;
- `classifier_fid`: the Fréchet distance on the classifier's penultimate (128-d) features;
- `label_accuracy` (conditional models): how often the image is classified as the label asked for.

`gan-classifier DATASET data.root=PATH` trains and stores one per data set and resolution.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_cli import checkpoint as ckpt
from gan_cli.datasets import build_data
from gan_cli.errors import ConfigError
from gan_cli.metrics.base import METRICS, Evaluation, cache_root
from gan_cli.metrics.frechet import frechet_distance, mean_cov

log = logging.getLogger("gan_cli")

COVERED_FRACTION = 0.2  # a class counts as covered at >= 20% of its real share
FEATURES = 128  # size of the penultimate layer
DEFAULT_EPOCHS = {"mnist": 2, "fashion_mnist": 4}  # enough for >= 99% / >= 90% test accuracy


class DomainClassifier(nn.Module):
    """Two 3x3 convolution blocks with batch norm and pooling, then a 128-unit hidden layer (the
    features of `classifier_fid`) and the class logits: the classic small MNIST network."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, size: int = 28) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *block(channels, width),
            *block(width, 2 * width),
            nn.Flatten(),
            nn.Linear(2 * width * (size // 4) ** 2, FEATURES),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def classifier_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] at the classifier's resolution."""
    x = images.float() / 127.5 - 1
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def classifier_path(dataset: str, size: int, folder: str | Path | None = None) -> Path:
    return Path(folder or cache_root() / "classifiers").expanduser() / f"{dataset}-{size}px.pt"


def load_classifier(dataset: str, size: int, device: torch.device) -> tuple[DomainClassifier, dict[str, Any]]:
    path = classifier_path(dataset, size)
    if not path.is_file():
        raise ConfigError(
            f"the classifier metrics need a domain classifier for {dataset} at {size}px, and {path} does not "
            f"exist. Train it once with `gan-classifier {dataset} image_size={size} data.root=PATH`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and I/O errors alike
        raise ConfigError(f"{path} cannot be read ({err}); delete it and train the classifier again") from err
    net = DomainClassifier(
        int(state["channels"]), int(state["num_classes"]), int(state["width"]), int(state["image_size"])
    )
    net.load_state_dict(state["weights"])
    return net.to(device).eval(), state


@torch.inference_mode()
def predict(
    net: DomainClassifier, images: torch.Tensor, size: int, device: torch.device, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities (N, K), penultimate features (N, F)) on the CPU."""
    probs, feats = [], []
    for chunk in images.split(batch_size):
        f = net.features(classifier_input(chunk.to(device), size))
        probs.append(net.head(f).softmax(1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs).double(), torch.cat(feats).double()


def coverage(fake_hist: np.ndarray, real_hist: np.ndarray) -> tuple[int, float]:
    """(classes covered, KL(fake || real)) from two class histograms (counts or shares)."""
    p = np.asarray(fake_hist, np.float64) / np.sum(fake_hist)
    q = np.asarray(real_hist, np.float64) / np.sum(real_hist)
    covered = int(((p >= COVERED_FRACTION * q) & (q > 0)).sum())
    mask = p > 0
    if np.any(mask & (q == 0)):
        return covered, math.inf
    return covered, float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def inception_score(probs: torch.Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) over the rows of `probs` (one split, as with FID-sized samples)."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


@METRICS.register("classifier")
def classifier_metrics(ev: Evaluation) -> dict[str, float]:
    size = int(ev.fake.shape[-1])
    net, state = load_classifier(ev.real.dataset, size, ev.device)
    k = int(state["num_classes"])
    fake_p, fake_f = predict(net, ev.fake, int(state["image_size"]), ev.device)
    real_p, real_f = predict(net, ev.real.images, int(state["image_size"]), ev.device)
    fake_hist = np.bincount(fake_p.argmax(1).numpy(), minlength=k)
    real_hist = np.bincount(real_p.argmax(1).numpy(), minlength=k)
    covered, kl = coverage(fake_hist, real_hist)
    out = {
        "classes_covered": float(covered),
        "class_kl": kl,
        "classifier_is": inception_score(fake_p),
        "classifier_fid": frechet_distance(*mean_cov(fake_f.numpy()), *mean_cov(real_f.numpy())),
    }
    if ev.fake_labels is not None:
        out["label_accuracy"] = float((fake_p.argmax(1) == ev.fake_labels.cpu()).double().mean())
    return out


def _accuracy(
    net: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, size: int, device: torch.device
) -> float:
    net.eval()
    probs, _ = predict(net, images, size, device)
    return float((probs.argmax(1) == labels).double().mean())


def train_classifier(
    dataset: str,
    root: str,
    image_size: int,
    device: torch.device,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Train on the train split (random shifts of up to 2 pixels), measure on the test split, save.

    Returns what was saved, including `test_accuracy`."""
    torch.manual_seed(seed)

    def split(name: str) -> Any:
        from omegaconf import OmegaConf

        cfg = {"name": dataset, "root": root, "download": False, "split": name, "image_size": image_size}
        data = build_data(OmegaConf.create(cfg))
        if data.tensor is None or data.labels is None or data.num_classes < 2:
            raise ConfigError(
                f"{dataset} has no labelled in-memory train/test splits to train a classifier on"
            )
        return data

    train, test = split("train"), split("test")
    channels, k = int(train.shape[0]), int(train.num_classes)
    net = DomainClassifier(channels, k, width, image_size).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * (len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    images, labels = train.tensor, train.labels
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(len(train) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = classifier_input(images[idx].to(device), image_size)
            dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
            x = torch.roll(F.pad(x, (2, 2, 2, 2), value=-1), (dy, dx), (2, 3))[..., 2:-2, 2:-2]
            loss = F.cross_entropy(net(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log.info("classifier epoch %d/%d: last batch loss %.4f", epoch + 1, epochs, loss.item())
    accuracy = _accuracy(net, test.tensor, test.labels, image_size, device)
    state = {
        "weights": {k2: v.cpu() for k2, v in net.state_dict().items()},
        "dataset": dataset,
        "image_size": image_size,
        "channels": channels,
        "num_classes": k,
        "width": width,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "class_names": list(train.class_names or []),
    }
    path = Path(out) if out else classifier_path(dataset, image_size)
    ckpt.save_atomic(state, path)
    log.info("test accuracy %.4f; saved %s", accuracy, path)
    return {**state, "path": str(path)}
