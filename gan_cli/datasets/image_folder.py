"""Any folder of images: resized and center-cropped, converted to 1 or 3 channels.

Sub-folders become class labels (as in torchvision's ImageFolder); a flat folder is one class.
Folders that fit in `data.max_memory_mb` are decoded once and held as a tensor; larger ones are
read by a DataLoader with workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from gan_cli.config import Switch, choice, store_schema
from gan_cli.datasets import DATASETS, Data
from gan_cli.errors import DataError

log = logging.getLogger(__name__)

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_BAD_IMAGE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


@dataclass
class ImageFolderConfig:
    name: str = MISSING
    root: str = MISSING  # the folder of images (searched recursively)
    image_size: int = MISSING  # shorter side resized to this, then center-cropped square
    channels: int = MISSING  # 1 (grayscale) or 3 (RGB); other modes are converted
    in_memory: Any = MISSING  # auto | true | false: decode once and hold as a tensor
    max_memory_mb: int = MISSING  # with in_memory=auto, larger folders use a DataLoader
    num_workers: int = MISSING  # DataLoader workers when not in memory
    on_bad_image: str = MISSING  # error | skip: what to do with a file that cannot be read
    limit: Any = MISSING  # train on a seeded subset of this many images (null: all)
    classes: Any = MISSING  # train on these class numbers only (null: all)
    labels_are_classes: bool = MISSING  # the sub-folders are classes: model.conditional=auto uses them
    subset_seed: int = MISSING  # seeds the choice of data.limit images
    mirror: bool = MISSING  # flip a seeded half of each epoch's images left to right


store_schema("data", "image_folder", ImageFolderConfig)


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode, convert mode, resize the shorter side and center-crop; returns uint8 (C, size, size)."""
    with Image.open(path) as opened:
        img: Image.Image = opened
        if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit gray: scale to 8 bits, don't clip
            img = _to_8bit(img)
        if img.mode in ("P", "LA", "RGBA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img.alpha_composite(rgba)
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit (I;16*, I) or float (F) gray image as 8-bit L, scaled by its type's range."""
    arr = np.asarray(img).astype(np.float64)
    top = 1.0 if img.mode == "F" and arr.max(initial=0) <= 1 else 255.0 if img.mode == "F" else 65535.0
    return Image.fromarray((arr / top * 255).clip(0, 255).round().astype(np.uint8), mode="L")


def find_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    classes = sorted({p.parent.relative_to(root).parts[0] for p in files if p.parent != root})
    if classes and any(p.parent == root for p in files):
        classes = []  # a mix of loose files and sub-folders: treat as unlabelled
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[p.relative_to(root).parts[0]] if classes else 0 for p in files]
    return files, labels, classes


class FolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images decoded on demand. A file that passed the header check but fails to decode is an
    error, or (on_bad_image=skip) replaced by the next readable one so batches keep their size."""

    def __init__(self, files: list[Path], labels: list[int], size: int, channels: int, on_bad: str = "error"):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.on_bad = on_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for j in range(i, i + len(self.files)):
            path = self.files[j % len(self.files)]
            try:
                arr = load_image(path, self.size, self.channels)
                return torch.from_numpy(arr.copy()), self.labels[j % len(self.files)]
            except _BAD_IMAGE as err:
                _bad(path, err, self.on_bad)
        raise DataError(f"none of the {len(self.files)} images could be read")


def _bad(path: Path, err: Exception, mode: str) -> None:
    if mode == "skip":
        log.warning("skipping unreadable image %s: %s", path, err)
        return
    raise DataError(
        f"cannot read image {path}: {err}\n"
        "Remove or fix the file, or set data.on_bad_image=skip to skip such files."
    )


@DATASETS.register("image_folder")
def image_folder(cfg: DictConfig) -> Data:
    root = Path(os.path.expanduser(str(cfg.root)))
    if cfg.channels not in (1, 3):
        raise DataError(f"data.channels={cfg.channels} is not valid; allowed: 1, 3")
    if cfg.on_bad_image not in ("error", "skip"):
        raise DataError(f"data.on_bad_image={cfg.on_bad_image!r} is not valid; allowed: error, skip")
    if cfg.image_size < 1:
        raise DataError(f"data.image_size={cfg.image_size} is not valid; it must be >= 1")
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; point data.root at a folder of images")
    files, labels, classes = find_images(root)
    if not files:
        raise DataError(
            f"no images found under {root} (looked for {', '.join(sorted(EXTENSIONS))}); "
            "point data.root at a folder of images"
        )
    size, channels = int(cfg.image_size), int(cfg.channels)
    in_memory = choice(cfg.in_memory, Switch, "data.in_memory").name
    fits = len(files) * channels * size * size <= cfg.max_memory_mb * 2**20
    shape = (channels, size, size)
    if in_memory == "true" or (in_memory == "auto" and fits):
        arrays, kept = [], []
        for path, label in zip(files, labels, strict=True):
            try:
                arrays.append(load_image(path, size, channels))
                kept.append(label)
            except _BAD_IMAGE as err:
                _bad(path, err, cfg.on_bad_image)
        if not arrays:
            raise DataError(f"none of the {len(files)} images under {root} could be read")
        tensor = torch.from_numpy(np.stack(arrays))
        return Data(
            "image", shape, len(classes), tensor=tensor, labels=torch.tensor(kept), class_names=classes
        )
    good_files, good_labels = [], []
    for path, label in zip(files, labels, strict=True):
        try:
            with Image.open(path) as img:
                img.verify()
            good_files.append(path)
            good_labels.append(label)
        except _BAD_IMAGE as err:
            _bad(path, err, cfg.on_bad_image)
    if not good_files:
        raise DataError(f"none of the {len(files)} images under {root} could be read")
    dataset = FolderDataset(good_files, good_labels, size, channels, cfg.on_bad_image)
    return Data("image", shape, len(classes), dataset=dataset, class_names=classes)
