"""Data sets by name, and the batch sampler the training loop draws from.

A data set builder takes the `data` config and returns a `Data`: either a whole tensor (held on the
training device, batches drawn there with no DataLoader) or a torch Dataset for a DataLoader
(large image folders that do not fit in memory).
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

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
    subset: torch.Tensor | None = None  # the indices kept by data.limit / data.classes (None: all)

    def __len__(self) -> int:
        if self.tensor is not None:
            return int(self.tensor.shape[0])
        assert self.dataset is not None
        return len(self.dataset)  # type: ignore[arg-type]


DATASETS: Registry[Callable[[DictConfig], Data]] = Registry("data set")


def build_data(cfg: DictConfig) -> Data:
    data = DATASETS.get(cfg.name)(cfg)
    if cfg.get("limit") is not None or cfg.get("classes") is not None:
        data = select(data, cfg.get("limit"), cfg.get("classes"), int(cfg.get("subset_seed", 0)))
    return data


def _labels_of(data: Data) -> torch.Tensor:
    if data.labels is not None:
        return data.labels
    if data.dataset is not None and hasattr(data.dataset, "labels"):
        return torch.as_tensor(data.dataset.labels)
    if data.dataset is not None:
        return torch.as_tensor([int(data.dataset[i][1]) for i in range(len(data))])
    return torch.zeros(len(data), dtype=torch.long)


def select(data: Data, limit: int | None, classes: Any, seed: int) -> Data:
    """The examples of `classes` (all when None), then a seeded choice of `limit` of them (all when
    None): a small-data study trains on the same images on every machine."""
    keep = torch.arange(len(data))
    if classes is not None:
        wanted = [int(c) for c in classes]
        if data.num_classes == 0:
            raise DataError(
                "data.classes needs a labelled data set; this one has no classes. Set data.classes=null"
            )
        bad = [c for c in wanted if not 0 <= c < data.num_classes]
        if bad or not wanted:
            raise DataError(
                f"data.classes={wanted} is not valid; give class numbers in 0..{data.num_classes - 1}"
            )
        keep = keep[torch.isin(_labels_of(data), torch.tensor(wanted))]
    if limit is not None:
        if limit < 1:
            raise DataError(f"data.limit={limit} is not valid; give the number of images to train on (>= 1)")
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))
        keep = keep[order[: int(limit)]].sort().values
    if data.tensor is not None:
        labels = data.labels[keep] if data.labels is not None else None
        tensor: torch.Tensor | None = data.tensor[keep]
        dataset = None
    else:
        assert data.dataset is not None
        tensor, labels, dataset = None, None, Subset(data.dataset, keep.tolist())
    return dataclasses.replace(data, tensor=tensor, labels=labels, dataset=dataset, subset=keep)


def to_unit_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]; points pass through."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(127.5).sub_(1.0)
    return batch


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator seeded by (seed, epoch) alone, so a resumed run draws the same; `stream` keeps
    independent draws of one epoch apart. The seed is taken modulo 2**64, the range seeds may take."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch + stream) % 2**64)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a pure function of (seed, epoch), so a resumed run sees the same order."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch))


def epoch_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of an epoch's n positions are mirrored (data.mirror), drawn apart from the order."""
    return torch.rand(n, generator=epoch_generator(seed, epoch, stream=0x5EED_F11B)) < 0.5


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM (sent to the whole process group) to the main process,
    which stops at a step boundary with a checkpoint and then shuts the workers down."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def worker_message(err: DataError) -> str:
    """The message a DataError had in the loader worker that raised it (the main process gets it
    inside the worker's traceback)."""
    text = str(err)
    marker = f"{DataError.__module__}.{DataError.__qualname__}: "
    return text.rpartition(marker)[2].strip() if marker in text else text


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
    With `mirror` a seeded half of each epoch's images is flipped left to right (StyleGAN's x-flips:
    twice the distinct images, for data whose mirror image is as likely as the image).
    """

    def __init__(
        self,
        data: Data,
        batch_size: int,
        device: torch.device,
        seed: int,
        num_workers: int = 2,
        shard: tuple[int, int] = (0, 1),
        mirror: bool = False,
    ):
        n = len(data)
        if n < batch_size:
            raise DataError(
                f"the data set has {n} examples, fewer than trainer.batch_size={batch_size}; "
                f"lower trainer.batch_size to at most {n} or add data"
            )
        self.data, self.batch_size, self.device, self.seed = data, batch_size, device, seed
        self.num_workers, self.mirror = num_workers, mirror
        self.per_epoch = n // batch_size
        self.rank, self.world = shard
        self.local_batch = batch_size // self.world
        self.epoch, self.index = 0, 0
        self._order: torch.Tensor | None = None
        self._flips: torch.Tensor | None = None  # with mirror: which rows of this epoch's batches to flip
        self._loader_iter: Any = None
        if data.tensor is not None:
            self._images = data.tensor.to(device)
            labels = data.labels if data.labels is not None else torch.zeros(n, dtype=torch.long)
            self._labels = labels.to(device)

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, epoch: int, index: int) -> None:
        self.close()
        self.epoch, self.index = epoch, index

    def close(self) -> None:
        """Stop the loader's workers now (the next batch starts them again at the same place).

        Left to the garbage collector, an iterator that an exception's traceback still holds outlives
        the run, and at exit the workers, which ignore SIGTERM, are waited for forever."""
        loader_iter, self._order, self._loader_iter = self._loader_iter, None, None
        shutdown = getattr(loader_iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.index / self.per_epoch

    def _shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of an epoch's batch positions (all of them in a single process)."""
        if self.world == 1:
            return rows
        return rows.view(self.per_epoch, self.world, self.local_batch)[:, self.rank].reshape(-1)

    def _start_epoch(self) -> None:
        order = epoch_permutation(len(self.data), self.seed, self.epoch)
        order = self._shard(order[: self.per_epoch * self.batch_size])
        if self.mirror:
            flips = epoch_flips(self.per_epoch * self.batch_size, self.seed, self.epoch)
            self._flips = self._shard(flips).to(self.device)
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
                    generator=epoch_generator(self.seed, self.epoch),
                    worker_init_fn=_ignore_stop_signals,
                )
            )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index >= self.per_epoch:
            self.close()
            self.epoch, self.index = self.epoch + 1, 0
        if self._order is None:
            self._start_epoch()
        assert self._order is not None
        if self.data.tensor is not None:
            idx = self._order[self.index * self.local_batch : (self.index + 1) * self.local_batch]
            x, y = self._images[idx], self._labels[idx]
        else:
            try:
                x, y = next(self._loader_iter)
            except DataError as err:  # raised in a worker: the message holds the worker's traceback
                self.close()
                raise DataError(worker_message(err)) from None
            except BaseException:
                self.close()
                raise
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        if self._flips is not None:
            flip = self._flips[self.index * self.local_batch : (self.index + 1) * self.local_batch]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        self.index += 1
        return to_unit_range(x), y


import_submodules(__name__)
