"""Data sets by name, and the batch sampler the training loop draws from.

A data set builder takes the `data` config and returns a `Data`: either a whole tensor (held on the
training device, batches drawn there with no DataLoader) or a torch Dataset for a DataLoader
(large image folders that do not fit in memory).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from gan_cli.errors import DataError
from gan_cli.registry import Registry, import_submodules


@dataclass
class Data:
    """What a data set builder returns.

    `tensor` holds uint8 images (N, C, H, W) or float points (N, D); `dataset` is used instead for
    image folders too large for memory and yields (uint8 image, label) pairs.
    """

    kind: str  # "image" or "points"
    shape: tuple[int, ...]  # one example's shape: (C, H, W) or (D,)
    num_classes: int  # 0 when unlabelled
    tensor: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    dataset: Dataset[Any] | None = None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        if self.tensor is not None:
            return int(self.tensor.shape[0])
        assert self.dataset is not None
        return len(self.dataset)  # type: ignore[arg-type]


DATASETS: Registry[Callable[[DictConfig], Data]] = Registry("data set")


def build_data(cfg: DictConfig) -> Data:
    return DATASETS.get(cfg.name)(cfg)


def to_unit_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]; points pass through."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(127.5).sub_(1.0)
    return batch


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a pure function of (seed, epoch), so a resumed run sees the same order."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)  # the range seeds may take
    return torch.randperm(n, generator=gen)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM (sent to the whole process group) to the main process,
    which stops at a step boundary with a checkpoint and then shuts the workers down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class _OffsetSampler(Sampler[int]):
    def __init__(self, order: torch.Tensor) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


class Batches:
    """An endless stream of (images in [-1, 1], labels) batches on the training device.

    Batches are full (the last partial batch of an epoch is dropped) so shapes stay static.
    `position` (epoch, batch index) is all the state needed to continue the same order after a resume.
    With `shard=(rank, world)` (several processes) `batch_size` is the global batch and this process
    gets rows [rank * b, (rank + 1) * b) of each, b = batch_size // world: disjoint shards of one order.
    """

    def __init__(
        self,
        data: Data,
        batch_size: int,
        device: torch.device,
        seed: int,
        num_workers: int = 2,
        shard: tuple[int, int] = (0, 1),
    ):
        n = len(data)
        if n < batch_size:
            raise DataError(
                f"the data set has {n} examples, fewer than trainer.batch_size={batch_size}; "
                f"lower trainer.batch_size to at most {n} or add data"
            )
        self.data, self.batch_size, self.device, self.seed = data, batch_size, device, seed
        self.num_workers = num_workers
        self.per_epoch = n // batch_size
        self.rank, self.world = shard
        self.local_batch = batch_size // self.world
        self.epoch, self.index = 0, 0
        self._order: torch.Tensor | None = None
        self._loader_iter: Any = None
        if data.tensor is not None:
            self._images = data.tensor.to(device)
            labels = data.labels if data.labels is not None else torch.zeros(n, dtype=torch.long)
            self._labels = labels.to(device)

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, epoch: int, index: int) -> None:
        self.epoch, self.index = epoch, index
        self._order, self._loader_iter = None, None

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.index / self.per_epoch

    def _start_epoch(self) -> None:
        order = epoch_permutation(len(self.data), self.seed, self.epoch)
        order = order[: self.per_epoch * self.batch_size]
        if self.world > 1:
            order = order.view(self.per_epoch, self.world, self.local_batch)[:, self.rank].reshape(-1)
        if self.data.tensor is not None:
            self._order = order.to(self.device)
        else:
            start = order[self.index * self.local_batch :]
            self._order = order
            self._loader_iter = iter(
                DataLoader(
                    self.data.dataset,  # type: ignore[arg-type]
                    batch_size=self.local_batch,
                    sampler=_OffsetSampler(start),
                    num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda",
                    drop_last=True,
                    persistent_workers=False,
                    # its own seed source, so the global RNG (and a resume) does not depend on
                    # where in an epoch the loader was started
                    generator=torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**64),
                    worker_init_fn=_ignore_stop_signals,
                )
            )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index >= self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
            self._order, self._loader_iter = None, None
        if self._order is None:
            self._start_epoch()
        assert self._order is not None
        if self.data.tensor is not None:
            idx = self._order[self.index * self.local_batch : (self.index + 1) * self.local_batch]
            x, y = self._images[idx], self._labels[idx]
        else:
            x, y = next(self._loader_iter)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        self.index += 1
        return to_unit_range(x), y


import_submodules(__name__)
