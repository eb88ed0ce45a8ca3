"""One run on several processes (GPUs) with DistributedDataParallel, set up from torchrun's environment.

`torchrun --nproc_per_node=N -m gan_cli ...` starts N copies of `gan-train`; torchrun sets RANK,
LOCAL_RANK and WORLD_SIZE. `trainer.batch_size` stays the global batch: each process takes its own
slice of every batch (and of the noise drawn for it), DDP averages the gradients, so N processes
follow the same path as one process with the whole batch. Only rank 0 writes the run folder (logs,
samples, checkpoints); its checkpoints hold the plain networks, so a run can resume on any number of
processes whose count divides the batch. Without WORLD_SIZE > 1 everything here does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gan_cli.errors import ConfigError

log = logging.getLogger("gan_cli")


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def worker_overrides(args: list[str]) -> list[str]:
    """Extra Hydra overrides for ranks other than 0: no .hydra/ folder and no log file of their own."""
    if env_world() <= 1 or env_rank() == 0 or any(a in ("-m", "--multirun") for a in args):
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


class _DDP(DistributedDataParallel):
    """DDP that runs the bare module when no gradient will reach its weights.

    G's update calls D with D's weights frozen; plain DDP would then wait for D gradients that never
    come. Sampling (no grad) needs no synchronisation either.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled() or not next(self.module.parameters()).requires_grad:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


@dataclass
class Dist:
    """This process's place among the run's processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around `module` (already on its device); buffers stay per process (rank 0's are saved)."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            return _DDP(module, device_ids=ids, forward_sync_buffers=False)
        return _DDP(module, device_ids=ids, broadcast_buffers=False)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.clone()
        torch_dist.all_reduce(t)
        return t / self.world

    def average_grads(self, module: nn.Module) -> None:
        """Average `module`'s gradients over the processes, for an update made outside DDP's hooks."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not self.enabled or not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        torch_dist.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.clone()
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return t

    def rank0(self, value: float) -> float:
        """`value` as rank 0 has it (one broadcast), so that every process acts on the same number."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch_dist.broadcast(t, src=0)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. a download), the others after it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def setup(device: torch.device, batch_size: int) -> Dist:
    """Join torchrun's process group (if WORLD_SIZE > 1) and pick this process's device."""
    world = env_world()
    if world <= 1:
        return Dist(device=device)
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if batch_size % world:
        raise ConfigError(
            f"trainer.batch_size={batch_size} (the global batch) cannot be split evenly over {world} "
            f"processes; give a multiple of {world}"
        )
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"process {rank} wants GPU {local} but only {torch.cuda.device_count()} are visible; "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"several processes need trainer.device=cuda or cpu, not {device.type}")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(torch_dist.destroy_process_group)
    if rank != 0:
        log.setLevel(logging.WARNING)
    log.info(
        "process %d of %d on %s, %d examples per process per batch", rank, world, device, batch_size // world
    )
    return Dist(rank=rank, world=world, device=device)
