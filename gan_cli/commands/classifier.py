"""`gan-classifier DATASET [key=value ...]`: train the domain classifier the classifier metrics use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gan_cli.commands import parse_args, run_command
from gan_cli.device import resolve_device
from gan_cli.errors import ConfigError


@dataclass
class ClassifierArgs:
    root: str = "./data"  # folder holding the data set in torchvision's layout
    image_size: int = 28  # resolution (use the generator's: its images are resized to this)
    epochs: int | None = None  # passes over the training split (default: 2 for mnist, 4 otherwise)
    seed: int = 0  # seeds the initialisation and the batch order
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out: str | None = None  # file written (default: the cache, where the classifier metrics look)


def classifier(argv: list[str]) -> dict[str, Any]:
    from gan_cli.metrics.classifier import DEFAULT_EPOCHS, train_classifier

    usage = (
        "gan-classifier mnist|fashion_mnist|cifar10 [key=value ...], e.g. gan-classifier mnist root=./data"
    )
    dataset, args = parse_args(argv, ClassifierArgs, usage)
    if dataset not in ("mnist", "fashion_mnist", "cifar10"):
        raise ConfigError(f"no domain classifier for {dataset!r}; allowed: mnist, fashion_mnist, cifar10")
    result = train_classifier(
        dataset,
        str(args.root),
        int(args.image_size),
        resolve_device(args.device),
        epochs=int(args.epochs) if args.epochs is not None else DEFAULT_EPOCHS.get(dataset, 4),
        seed=int(args.seed),
        out=args.out,
    )
    print(f"{dataset}: test accuracy {result['test_accuracy']:.4f}, saved to {result['path']}")
    return result


def main() -> None:
    run_command(classifier)
