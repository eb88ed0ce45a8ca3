"""DCGAN (Radford et al., 2016): transposed convolutions with batch norm and ReLU in G, strided
convolutions with LeakyReLU(0.2) in D, weights drawn from N(0, 0.02).

Built for any square size b * 2**n with a base b in 4..7 (28 = 7*4, 32 = 4*8, 64, 128, ...):
G starts from a b x b map and doubles n times; D mirrors it. At 64 pixels and width 64 this is
exactly the network of the paper and of pytorch/examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from gan_cli.config import store_schema
from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.models import (
    CONFIG_CHECKS,
    MODELS,
    ClassBatchNorm2d,
    ModelOptions,
    batch_norm,
    configured_image_size,
    label_embedding,
    projection,
    run_layers,
    spectral_norm_all,
    square_images,
)


@dataclass
class DCGANConfig(ModelOptions):
    name: str = MISSING
    z_dim: int = MISSING  # noise dimension
    g_width: int = MISSING  # G's channels at full resolution (doubled at each halving)
    d_width: int = MISSING  # D's channels after its first convolution
    mbstd_group: int = MISSING  # minibatch standard deviation over groups of this many images (0: off)


store_schema("model", "dcgan", DCGANConfig)


def base_and_depth(size: int) -> tuple[int, int]:
    """Split size into b * 2**n with 4 <= b <= 7 and n >= 1, or raise with the sizes that work."""
    base, depth = size, 0
    while base % 2 == 0 and base // 2 >= 4:
        base, depth = base // 2, depth + 1
    if not (4 <= base <= 7 and depth >= 1):
        raise ConfigError(
            f"model=dcgan cannot build images of size {size}: it needs b * 2**n with b in 4..7 and n >= 1 "
            "(e.g. 8, 16, 28, 32, 48, 64, 128, 256); set data.image_size to one of these or use model=mlp"
        )
    return base, depth


def init_dcgan(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, ClassBatchNorm2d):
        nn.init.normal_(module.class_gain.weight, 1.0, 0.02)
        nn.init.zeros_(module.class_bias.weight)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DenseStart(nn.ConvTranspose2d):
    """G's first layer: a transposed convolution (stride 1, no padding, no bias) of a 1x1 input, computed
    as the matrix product it equals, out[b, o, i, j] = sum_c z[b, c] W[c, o, i, j]. The parameter is the
    ConvTranspose2d's, so checkpoints are the same. On a CPU the product is faster: oneDNN's transposed
    convolution spends longer copying this weight than computing."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        out = input.flatten(1) @ self.weight.flatten(1)
        return out.view(input.shape[0], self.out_channels, *self.kernel_size)


class DCGANGenerator(nn.Module):
    """With `num_classes` every batch norm takes the label's own gain and bias (ClassBatchNorm2d)."""

    def __init__(self, z_dim: int, width: int, channels: int, size: int, num_classes: int = 0):
        super().__init__()
        base, depth = base_and_depth(size)
        self.z_dim = z_dim
        ch = width * 2 ** (depth - 1)
        layers: list[nn.Module] = [
            DenseStart(z_dim, ch, base, 1, 0, bias=False),
            batch_norm(ch, num_classes),
            nn.ReLU(True),
        ]
        for _ in range(depth - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                batch_norm(ch // 2, num_classes),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return run_layers(self.net, z[:, :, None, None], y)


class MinibatchStd(nn.Module):
    """Appends one feature map to (N, C, H, W): for each image, s = mean over c, h, w of
    sqrt(Var_group[x] + 1e-8), the variance taken over the images of its group (biased), so that D can
    see how varied a batch is (Karras et al., 2018). Image i belongs to group i mod (N / g), where g, the
    group size, is the largest divisor of N up to `group` (a batch of 1 gives the constant 1e-4)."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(k for k in range(1, min(self.group, n) + 1) if n % k == 0)
        groups = x.float().reshape(g, n // g, c, h, w)
        s = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3)).repeat(g)
        return torch.cat([x, s.to(x.dtype).view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)


class DCGANDiscriminator(nn.Module):
    """With `num_classes` the logit gains a projection term on the last feature map (flattened);
    with `spectral_norm` every layer is spectrally normalised and batch norm is left out; with
    `mbstd_group` the last feature map gains the minibatch standard deviation (MinibatchStd)."""

    def __init__(
        self,
        width: int,
        channels: int,
        size: int,
        num_classes: int = 0,
        spectral_norm: bool = False,
        mbstd_group: int = 0,
    ):
        super().__init__()
        base, depth = base_and_depth(size)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(depth - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                nn.Identity() if spectral_norm else nn.BatchNorm2d(ch * 2),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        if mbstd_group:
            layers.append(MinibatchStd(mbstd_group))
            ch += 1
        layers.append(nn.Conv2d(ch, 1, base, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.embed = nn.Embedding(num_classes, ch * base * base) if num_classes else None
        self.apply(init_dcgan)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            spectral_norm_all(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.net[:-1](x)
        out = self.net[-1](features).flatten()
        if self.embed is None:
            return out
        return out + projection(self.embed, y, features.flatten(1))


def check_config(cfg: DictConfig) -> None:
    """Image data of a size DCGAN can build, known from the config alone."""
    base_and_depth(configured_image_size(cfg))


CONFIG_CHECKS["dcgan"] = check_config


@MODELS.register("dcgan")
def build(cfg: DictConfig, data: Data) -> tuple[nn.Module, nn.Module]:
    channels, height = square_images(data, "dcgan")
    if cfg.g_width < 1 or cfg.d_width < 1 or cfg.z_dim < 1:
        raise ConfigError("model.g_width, model.d_width and model.z_dim must be >= 1")
    classes = data.num_classes if cfg.conditional else 0
    label_embedding(data.num_classes, cfg.conditional)  # refuses unlabelled data
    mbstd = int(cfg.get("mbstd_group", 0))  # checkpoints saved before the option have no key
    return (
        DCGANGenerator(cfg.z_dim, cfg.g_width, channels, height, classes),
        DCGANDiscriminator(cfg.d_width, channels, height, classes, cfg.spectral_norm, mbstd),
    )
