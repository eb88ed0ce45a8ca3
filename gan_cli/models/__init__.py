"""Generator/discriminator pairs by name.

A builder takes the `model` config and the data's description and returns `(G, D)`:
`G(z, y)` maps noise of shape (B, G.z_dim) to a batch shaped like the data, in [-1, 1] for images;
`D(x, y)` returns one logit (or critic value) per example, shape (B,). The losses own the sigmoid.
`y` holds class labels (B,); unconditional models ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from gan_cli.datasets import Data
from gan_cli.registry import Registry, import_submodules


@dataclass
class ModelOptions:
    """Settings every architecture has (its own schema extends this)."""

    ema_decay: float = (
        MISSING  # decay of the moving average of G's weights used for samples and metrics (0: off)
    )
    conditional: Any = MISSING  # true | false | auto (see config.conditional): labels in G and D
    spectral_norm: bool = MISSING  # spectral normalisation on D's layers (it replaces D's batch norm)


LABEL_DIM = 32  # size of the label embedding a conditional G appends to its noise


def label_embedding(num_classes: int, conditional: bool) -> nn.Embedding | None:
    """G's label embedding, or None for an unconditional model; refuses unlabelled data."""
    if not conditional:
        return None
    if num_classes < 2:
        from gan_cli.errors import ConfigError

        raise ConfigError(
            "model.conditional=true needs a labelled data set (at least two classes, e.g. mnist, or an "
            "image folder with one sub-folder per class); this one has none. Set model.conditional=false"
        )
    return nn.Embedding(num_classes, LABEL_DIM)


def with_label(z: torch.Tensor, y: torch.Tensor | None, embed: nn.Embedding | None) -> torch.Tensor:
    """The generator's input: the noise, with the label's embedding appended when conditional."""
    if embed is None:
        return z
    if y is None:
        raise ValueError("this generator is conditional: call it as G(z, labels)")
    return torch.cat([z, embed(y)], dim=1)


class ClassBatchNorm2d(nn.BatchNorm2d):
    """Class-conditional batch norm (de Vries et al., 2017; the G of SNGAN and BigGAN): statistics shared
    by all classes, then the label's own gain and bias, out = (x - mean) / sqrt(var + eps) * gain[y] +
    bias[y], gains starting at 1 (the DCGAN draws them from N(1, 0.02)) and biases at 0. A conditional G
    with batch norm takes its label here rather than with its noise: a label embedding appended to z came
    to outweigh the noise after the first batch norm, and each class collapsed to nearly one image."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(channels, affine=False)
        self.class_gain = nn.Embedding(num_classes, channels)
        self.class_bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.class_gain.weight)
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, input: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("this generator is conditional: call it as G(z, labels)")
        out = super().forward(input)
        return out * self.class_gain(y)[:, :, None, None] + self.class_bias(y)[:, :, None, None]


def batch_norm(channels: int, num_classes: int = 0) -> nn.BatchNorm2d:
    """G's batch norm: class-conditional (ClassBatchNorm2d) when G is conditional, else plain."""
    return ClassBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)


def run_layers(layers: Iterable[nn.Module], x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """`x` through `layers` in turn, the labels going to the class-conditional batch norms."""
    for layer in layers:
        x = layer(x, y) if isinstance(layer, ClassBatchNorm2d) else layer(x)
    return x


def projection(embed: nn.Embedding | None, y: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
    """The projection discriminator's class term <embed(y), phi(x)> (Miyato & Koyama, 2018).

    Without labels (e.g. the gradient penalty's interpolates) only the unconditional part remains."""
    if embed is None or y is None:
        return features.new_zeros(features.shape[0])
    return (embed(y) * features).sum(1)


def spectral_norm_all(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al., 2018) on every linear, convolution and embedding layer."""
    for child in list(module.modules()):
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(child)
    return module


def configured_image_size(cfg: DictConfig) -> int:
    """The image size the data config asks for; a model that builds images refuses data without one."""
    if "image_size" not in cfg.data:
        from gan_cli.errors import ConfigError

        raise ConfigError(f"model={cfg.model.name} needs image data, not data={cfg.data.name}; use model=mlp")
    return int(cfg.data.image_size)


def square_images(data: Data, model_name: str) -> tuple[int, int]:
    """(channels, size) of data made of square images, which the convolutional models build."""
    from gan_cli.errors import ConfigError

    if data.kind != "image":
        raise ConfigError(f"model={model_name} needs image data; use model=mlp for data=gaussians")
    channels, height, width = data.shape
    if height != width:
        raise ConfigError(f"model={model_name} needs square images, got {height}x{width}")
    return channels, height


def label_classes(model_cfg: DictConfig, num_classes: int) -> int:
    """How many labels G takes: the data set's classes for a conditional model, else 0."""
    return int(num_classes) if model_cfg.get("conditional", False) else 0


ModelBuilder = Callable[[DictConfig, Data], tuple[nn.Module, nn.Module]]
MODELS: Registry[ModelBuilder] = Registry("model")


def build_models(cfg: DictConfig, data: Data) -> tuple[nn.Module, nn.Module]:
    return MODELS.get(cfg.name)(cfg, data)


# model name -> a check of the whole config (e.g. image sizes it can build), run before any work
CONFIG_CHECKS: dict[str, Callable[[DictConfig], None]] = {}


def check_model_config(cfg: DictConfig) -> None:
    """Refuse a model the data cannot feed, before data are loaded or downloaded."""
    MODELS.get(cfg.model.name)  # an unknown name fails here, with the known ones listed
    check = CONFIG_CHECKS.get(cfg.model.name)
    if check is not None:
        check(cfg)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    from gan_cli.errors import ConfigError

    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


import_submodules(__name__)
