"""Helpers for the resume and failure tests: configs composed in-process, and reading a run's records."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import gan_cli.cli  # noqa: F401  (registers every model, loss and data set)
from gan_cli.graphs import StepFn
from gan_cli.train import train as train_run

STATS = ["loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"]

# A short run on the 8-Gaussian ring: a second or two on a CPU.
GAUSS = [
    "experiment=gaussians_demo",
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "data.num_samples=2000",
    "logger.log_every=2",
    "logger.sample_every=0",
    "logger.num_samples=16",
    "logger.progress=false",
]


@dataclass
class Setup:
    """A composed config and the folder its run writes."""

    cfg: DictConfig
    out: Path


def make_cfg(out: Path, *overrides: str, base: list[str] | None = None) -> Setup:
    """The config `gan-train` would compose, for a run writing to `out`."""
    with initialize_config_module(config_module="gan_cli.configs", version_base="1.3"):
        cfg = compose("train", overrides=[*(GAUSS if base is None else base), *overrides])
    return Setup(cfg, Path(out))


def train(setup: Setup, **kwargs: Any) -> dict[str, Any]:
    """`gan_cli.train.train` on a composed config, without Hydra."""
    return train_run(setup.cfg, setup.out, **kwargs)


class Crash(Exception):
    """Raised by `crash_after` to end a run abruptly, as a crash would."""


def crash_after(k: int) -> Callable[[StepFn], StepFn]:
    """Wraps the training step so that it trains k steps normally, then raises at step k + 1."""

    def wrap(train_step: StepFn) -> StepFn:
        calls = 0

        def step(batches: list[Any]) -> torch.Tensor:
            nonlocal calls
            calls += 1
            if calls > k:
                raise Crash(f"crash at step {calls}")
            return train_step(batches)

        return step

    return wrap


def load(run: Path, name: str = "last.pt") -> dict[str, Any]:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Bitwise equality of G and D (parameters and buffers)."""
    for net in ("G", "D"):
        if a[net].keys() != b[net].keys():
            return False
        if not all(torch.equal(a[net][k], b[net][k]) for k in a[net]):
            return False
    return True


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged(run: Path) -> list[tuple[Any, ...]]:
    """(step, the training stats) of every metrics.jsonl record: what must match across a resume."""
    return [(r["step"], *(r[k] for k in STATS)) for r in records(run)]


def tb_scalars(run: Path, tag: str = "loss/D") -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]
