"""Fully connected G and D (the original GAN paper's kind), for any image size or for 2-D points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from gan_cli.config import store_schema
from gan_cli.datasets import Data
from gan_cli.models import (
    LABEL_DIM,
    MODELS,
    ModelOptions,
    activation,
    label_embedding,
    projection,
    spectral_norm_all,
    with_label,
)


@dataclass
class MLPConfig(ModelOptions):
    name: str = MISSING
    z_dim: int = MISSING  # noise dimension
    g_hidden: list[int] = MISSING  # G's hidden layer widths
    d_hidden: list[int] = MISSING  # D's hidden layer widths
    g_activation: str = MISSING  # relu | leaky_relu | gelu | silu | tanh
    d_activation: str = MISSING  # relu | leaky_relu | gelu | silu | tanh


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
    def __init__(
        self,
        z_dim: int,
        hidden: list[int],
        act: str,
        shape: tuple[int, ...],
        squash: bool,
        num_classes: int = 0,
    ):
        super().__init__()
        self.z_dim, self.shape = z_dim, shape
        self.embed = label_embedding(num_classes, num_classes > 0)
        width_in = z_dim + (LABEL_DIM if self.embed else 0)
        self.net = _stack([width_in, *hidden, math.prod(shape)], act, nn.Tanh() if squash else None)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(with_label(z, y, self.embed)).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """With `num_classes` the logit gains a projection term on the last hidden layer."""

    def __init__(
        self,
        hidden: list[int],
        act: str,
        shape: tuple[int, ...],
        num_classes: int = 0,
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.net = _stack([math.prod(shape), *hidden, 1], act, None)
        features = hidden[-1] if hidden else math.prod(shape)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            spectral_norm_all(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.net[:-1](x.flatten(1))
        out = self.net[-1](features).squeeze(1)
        if self.embed is None:
            return out
        return out + projection(self.embed, y, features)


@MODELS.register("mlp")
def build(cfg: DictConfig, data: Data) -> tuple[nn.Module, nn.Module]:
    squash = data.kind == "image"  # images live in [-1, 1]; 2-D points are unbounded
    classes = data.num_classes if cfg.conditional else 0
    label_embedding(data.num_classes, cfg.conditional)  # refuses unlabelled data
    g = MLPGenerator(cfg.z_dim, list(cfg.g_hidden), cfg.g_activation, data.shape, squash, classes)
    d = MLPDiscriminator(list(cfg.d_hidden), cfg.d_activation, data.shape, classes, cfg.spectral_norm)
    return g, d
