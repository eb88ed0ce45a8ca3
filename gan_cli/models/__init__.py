"""Generator/discriminator pairs by name.

A builder takes the `model` config and the data's description and returns `(G, D)`:
`G(z, y)` maps noise of shape (B, G.z_dim) to a batch shaped like the data, in [-1, 1] for images;
`D(x, y)` returns one logit (or critic value) per example, shape (B,). The losses own the sigmoid.
`y` holds class labels (B,); unconditional models ignore it.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig
from torch import nn

from gan_cli.datasets import Data
from gan_cli.registry import Registry, import_submodules

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
