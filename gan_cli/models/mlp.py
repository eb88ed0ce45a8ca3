"""Fully connected G and D (the original GAN paper's kind), for any image size or for 2-D points."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from gan_cli.config import store_schema
from gan_cli.datasets import Data
from gan_cli.models import MODELS, activation


@dataclass
class MLPConfig:
    name: str = "mlp"
    z_dim: int = 100  # noise dimension
    g_hidden: list[int] = field(default_factory=lambda: [256])  # G's hidden layer widths
    d_hidden: list[int] = field(default_factory=lambda: [256])  # D's hidden layer widths
    g_activation: str = "relu"  # relu | leaky_relu | gelu | silu | tanh
    d_activation: str = "leaky_relu"  # relu | leaky_relu | gelu | silu | tanh


store_schema("model", "mlp", MLPConfig)


def _stack(sizes: list[int], act: str, last: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, hidden: list[int], act: str, shape: tuple[int, ...], squash: bool):
        super().__init__()
        self.z_dim, self.shape = z_dim, shape
        self.net = _stack([z_dim, *hidden, math.prod(shape)], act, nn.Tanh() if squash else None)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, hidden: list[int], act: str, shape: tuple[int, ...]):
        super().__init__()
        self.net = _stack([math.prod(shape), *hidden, 1], act, None)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


@MODELS.register("mlp")
def build(cfg: DictConfig, data: Data) -> tuple[nn.Module, nn.Module]:
    squash = data.kind == "image"  # images live in [-1, 1]; 2-D points are unbounded
    g = MLPGenerator(cfg.z_dim, list(cfg.g_hidden), cfg.g_activation, data.shape, squash)
    d = MLPDiscriminator(list(cfg.d_hidden), cfg.d_activation, data.shape)
    return g, d
