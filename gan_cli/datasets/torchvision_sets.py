"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, held whole as a uint8 tensor."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING, DictConfig

from gan_cli.config import store_schema
from gan_cli.datasets import DATASETS, Data
from gan_cli.errors import DataError


@dataclass
class TorchvisionDataConfig:
    name: str = MISSING  # mnist | fashion_mnist | cifar10
    root: str = MISSING  # folder holding the data set in torchvision's layout
    download: bool = MISSING  # download the files when they are missing
    split: str = MISSING  # train | test
    image_size: int = MISSING  # images are resized to this (native: 28 for MNIST-like, 32 for CIFAR-10)
    limit: Any = MISSING  # train on a seeded subset of this many images (null: all)
    classes: Any = MISSING  # train on these class numbers only (null: all)
    labels_are_classes: bool = MISSING  # model.conditional=auto trains with the labels
    subset_seed: int = MISSING  # seeds the choice of data.limit images
    mirror: bool = MISSING  # flip a seeded half of each epoch's images left to right


store_schema("data", "torchvision", TorchvisionDataConfig)

log = logging.getLogger("gan_cli")

# name -> (torchvision class name, native size, folder the files go in, files expected there)
_SETS = {
    "mnist": ("MNIST", 28, "MNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-*-ubyte"),
    "fashion_mnist": (
        "FashionMNIST",
        28,
        "FashionMNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-*-ubyte",
    ),
    "cifar10": ("CIFAR10", 32, "cifar-10-batches-py", "data_batch_1..5, test_batch, batches.meta"),
}


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) stack with antialiasing, in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _load(cfg: DictConfig) -> Data:
    import torchvision

    if cfg.split not in ("train", "test"):
        raise DataError(f"data.split={cfg.split!r} is not valid; allowed: train, test")
    cls_name, _, folder, files = _SETS[cfg.name]
    cls = getattr(torchvision.datasets, cls_name)
    root = os.path.expanduser(str(cfg.root))
    where = os.path.join(root, folder)
    train = cfg.split == "train"
    get = (
        f"Put the files ({files}, uncompressed) in {where}, or point data.root at a folder "
        f"that has them (data.root=PATH, or the GAN_CLI_DATA environment variable). "
        f"`make demo` trains on generated data and needs no download."
    )
    try:
        ds = cls(root, train=train, download=False)
    except Exception as err:  # torchvision raises RuntimeError, ValueError... for files it cannot use
        if not (isinstance(err, RuntimeError) and "not found" in str(err).lower()):
            raise DataError(
                f"could not read {cfg.name} from {where}: the files there are truncated or corrupt ({err}).\n"
                f"Delete them and run again with data.download=true to fetch fresh copies, or replace them. "
                + get
            ) from err
        damaged = " (or its files failed their checksum)" if "corrupt" in str(err).lower() else ""
        if not cfg.download:
            raise DataError(
                f"{cfg.name} was not found in {where}{damaged} and data.download=false.\n"
                f"Run once with data.download=true (needs the internet), or copy the files there. " + get
            ) from err
        try:
            ds = cls(root, train=train, download=True)
        except Exception as down:  # URLError, OSError, RuntimeError("Error downloading ...")
            raise DataError(
                f"could not download {cfg.name} into {where} (no network?): {down}\n" + get
            ) from down
    data = ds.data
    images = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    native = int(images.shape[-1])
    if int(cfg.image_size) > native:
        log.warning(
            "%s images are %d px; data.image_size=%d resizes them up, which adds no detail and costs time "
            "(data.image_size=%d is their own size)",
            cfg.name,
            native,
            cfg.image_size,
            native,
        )
    images = resize_uint8(images.contiguous(), int(cfg.image_size))
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    if len(labels) != len(images):
        raise DataError(
            f"{cfg.name} in {where} has {len(images)} images but {len(labels)} labels: a file is truncated "
            "or from another release. Delete the files and download them again (data.download=true)"
        )
    return Data(
        kind="image",
        shape=tuple(images.shape[1:]),
        num_classes=len(ds.classes),
        tensor=images,
        labels=labels,
        class_names=list(ds.classes),
    )


for _name in _SETS:
    DATASETS.register(_name)(_load)
