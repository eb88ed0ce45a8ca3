"""Residual G and D: the ResNets of SNGAN (Miyato et al., 2018) and R3GAN-like bottleneck networks
(Huang et al., 2024) from one description.

An image of size b * 2**n (28 = 7 * 2**2, 32 = 4 * 2**3, 64 = 4 * 2**4, 128 = 4 * 2**5) is made in n
stages. G: a linear layer maps z to a b x b map; stage k (k = 0 from the b x b end) doubles the
resolution by nearest upsampling in its first block and has g_width * widths[k] channels; then norm,
activation, a 3x3 convolution to the image's channels, tanh. A conditional G's batch norms take the
label's own gain and bias (ClassBatchNorm2d); one without batch norm (g_norm=none) takes the label's
embedding with its noise. D mirrors G: each stage halves the resolution by average pooling in its first
block, down to d_final_res (by default b), with d_width * widths[k] channels; d_final_blocks blocks
without resampling follow, then activation, global sum pooling and a linear layer (plus the projection
term).

Blocks are pre-activation residual blocks, out = shortcut(x) + branch(x), the shortcut a 1x1
convolution (with the resampling) when the block resamples or changes the width:
  basic       branch = norm, act, 3x3 conv, norm, act, 3x3 conv (SNGAN)
  bottleneck  branch = norm, act, 1x1 conv to expansion * C, norm, act, grouped 3x3 conv, norm, act,
              1x1 conv back to C (R3GAN's inverted bottleneck)
`groups` splits the 3x3 convolutions (all but D's very first) into groups. D's first block sees raw
pixels: no norm or activation before its first convolution.

Weights: Xavier-uniform, gain sqrt(2) in the branches (SNGAN), zero biases. `fixup_init` zeroes each
branch's last convolution, so every block starts as its shortcut (the identity when it neither resamples
nor changes width), and scales the branch's other convolutions by L**(-1 / (2m - 2)) for L blocks in the
network and m convolutions per branch (Fixup; R3GAN).

Presets (32 px):
  SNGAN CIFAR-10: z_dim=128 g_width=256 d_width=128 block=basic g_norm=batch d_norm=spectral
      g_activation=relu d_activation=relu d_final_res=8 d_final_blocks=2
  R3GAN-like: block=bottleneck expansion=2 groups=16 g_norm=none d_norm=none g_activation=leaky_relu
      d_activation=leaky_relu fixup_init=true (with loss=rpgan and the R1/R2 penalties)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import MISSING, DictConfig
from torch import nn

from gan_cli.config import store_schema
from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.models import (
    CONFIG_CHECKS,
    LABEL_DIM,
    MODELS,
    ModelOptions,
    activation,
    batch_norm,
    configured_image_size,
    label_embedding,
    projection,
    run_layers,
    spectral_norm_all,
    square_images,
    with_label,
)


@dataclass
class ResNetConfig(ModelOptions):
    name: str = MISSING
    z_dim: int = MISSING  # noise dimension
    g_width: int = MISSING  # G's channels per stage (times the stage's multiplier)
    d_width: int = MISSING  # D's channels per stage (times the stage's multiplier)
    widths: list[float] = MISSING  # stage multipliers from the lowest resolution; []: 1
    blocks_per_stage: int = MISSING  # residual blocks per stage; the first one resamples
    block: str = MISSING  # basic | bottleneck
    expansion: int = MISSING  # bottleneck blocks: inner channels = expansion * the block's channels
    groups: int = MISSING  # groups of the 3x3 convolutions
    g_norm: str = MISSING  # none | batch
    d_norm: str = MISSING  # none | spectral | batch (model.spectral_norm=true also means spectral)
    g_activation: str = MISSING  # relu | leaky_relu | gelu | silu | tanh
    d_activation: str = MISSING  # relu | leaky_relu | gelu | silu | tanh
    d_final_res: int | None = MISSING  # resolution D stops halving at (null: G's starting one, 4 or 7)
    d_final_blocks: int = MISSING  # D's blocks without resampling at d_final_res, before the pooling
    fixup_init: bool = MISSING  # each residual branch's last convolution starts at zero


store_schema("model", "resnet", ResNetConfig)

SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5)}  # image size -> (starting size b, stages n)
G_NORMS = ("none", "batch")
D_NORMS = ("none", "spectral", "batch")
BLOCKS = ("basic", "bottleneck")

Factory = Callable[..., nn.Module]


def base_and_stages(size: int) -> tuple[int, int]:
    if size not in SIZES:
        raise ConfigError(
            f"model=resnet cannot build images of size {size}; it builds sizes "
            f"{', '.join(map(str, SIZES))} (set data.image_size to one of them, or use model=dcgan)"
        )
    return SIZES[size]


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"model.{key}={value!r} is not valid; allowed: {', '.join(allowed)}")


def _multipliers(cfg: DictConfig, stages: int, size: int) -> list[float]:
    widths = [float(m) for m in cfg.widths]
    if not widths:
        return [1.0] * stages
    if len(widths) != stages:
        raise ConfigError(
            f"model.widths has {len(widths)} entries, but images of size {size} are made in {stages} "
            f"stages: give {stages} multipliers (from the lowest resolution up), or [] for 1 each"
        )
    return widths


def stage_channels(cfg: DictConfig, width: int, size: int) -> list[int]:
    """Channels of each stage, from the lowest resolution, for a network of base `width`."""
    _, stages = base_and_stages(size)
    channels = [round(width * m) for m in _multipliers(cfg, stages, size)]
    for c in channels:
        if c < 1:
            raise ConfigError(f"model.widths={list(cfg.widths)} gives a stage {c} channels wide; need >= 1")
        grouped = c * cfg.expansion if cfg.block == "bottleneck" else c
        if grouped % cfg.groups:
            raise ConfigError(
                f"model.groups={cfg.groups} must divide the channels of every grouped convolution, "
                f"but one has {grouped}; choose widths that are multiples of the groups"
            )
    return channels


def d_uses_spectral_norm(cfg: DictConfig) -> bool:
    return bool(cfg.d_norm == "spectral" or cfg.spectral_norm)


def d_downsamplings(cfg: DictConfig, size: int) -> int:
    """How many of D's stages halve the resolution (down to d_final_res)."""
    base, stages = base_and_stages(size)
    if cfg.d_final_res is None:
        return stages
    allowed = [base * 2**k for k in range(stages)]
    if cfg.d_final_res not in allowed:
        raise ConfigError(
            f"model.d_final_res={cfg.d_final_res} is not valid for images of size {size}; allowed: "
            f"{', '.join(map(str, allowed))} (or null for {base})"
        )
    return stages - allowed.index(int(cfg.d_final_res))


def check_options(cfg: DictConfig, size: int) -> None:
    """Every setting of the `model` group, for images of `size` pixels."""
    base_and_stages(size)
    _choice(cfg.block, BLOCKS, "block")
    _choice(cfg.g_norm, G_NORMS, "g_norm")
    _choice(cfg.d_norm, D_NORMS, "d_norm")
    activation(cfg.g_activation)
    activation(cfg.d_activation)
    for key, low in (("z_dim", 1), ("g_width", 1), ("d_width", 1), ("blocks_per_stage", 1), ("groups", 1),
                     ("expansion", 1), ("d_final_blocks", 0)):  # fmt: skip
        if cfg[key] < low:
            raise ConfigError(f"model.{key}={cfg[key]} is not valid; it must be >= {low}")
    stage_channels(cfg, cfg.g_width, size)
    stage_channels(cfg, cfg.d_width, size)
    d_downsamplings(cfg, size)
    if cfg.fixup_init and d_uses_spectral_norm(cfg):
        raise ConfigError(
            "model.fixup_init=true zeroes convolutions, which have no spectral norm to divide by: "
            "use it with model.d_norm=none or batch and model.spectral_norm=false"
        )


def _norm(kind: str, num_classes: int = 0) -> Factory:
    if kind != "batch":
        return lambda _channels: nn.Identity()
    return lambda channels: batch_norm(channels, num_classes)


def _conv(cin: int, cout: int, kernel: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups)


class ResBlock(nn.Module):
    """out = shortcut(x) + branch(x); `resample` is "up" (nearest, x2), "down" (average pool, /2) or None."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        resample: str | None,
        block: str,
        norm: Factory,
        act: Callable[[], nn.Module],
        groups: int = 1,
        expansion: int = 2,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        up: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if resample == "up" else []
        down: list[nn.Module] = [nn.AvgPool2d(2)] if resample == "down" else []
        layers: list[nn.Module] = [norm(cin), act()] if preactivate else []
        if block == "basic":
            layers += [*up, _conv(cin, cout, 3, groups if preactivate else 1), norm(cout), act()]
            layers += [_conv(cout, cout, 3, groups)]
        else:
            mid = cout * expansion
            layers += [_conv(cin, mid, 1), norm(mid), act(), *up]
            layers += [_conv(mid, mid, 3, groups), norm(mid), act(), _conv(mid, cout, 1)]
        self.branch = nn.Sequential(*layers, *down)
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or resample is not None:
            self.shortcut = nn.Sequential(*up, _conv(cin, cout, 1), *down)

    def branch_convs(self) -> list[nn.Conv2d]:
        return [m for m in self.branch if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.shortcut(x) + run_layers(self.branch, x, y)


def init_weights(net: nn.Module, fixup: bool) -> None:
    """Xavier-uniform weights (gain sqrt(2) inside residual branches), zero biases; with `fixup`, each
    branch's last convolution zeroed and its others scaled by L**(-1 / (2m - 2))."""
    blocks = [m for m in net.modules() if isinstance(m, ResBlock)]
    in_branch = {id(conv) for b in blocks for conv in b.branch_convs()}
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2) if id(m) in in_branch else 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if not fixup:
        return
    with torch.no_grad():
        for b in blocks:
            *rest, last = b.branch_convs()
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
            for conv in rest:
                conv.weight.mul_(len(blocks) ** (-1 / (2 * len(rest))))


class ResNetGenerator(nn.Module):
    def __init__(self, cfg: DictConfig, channels: int, size: int, num_classes: int = 0) -> None:
        super().__init__()
        base, stages = base_and_stages(size)
        widths = stage_channels(cfg, cfg.g_width, size)
        self.z_dim, self.base, self.width0 = int(cfg.z_dim), base, widths[0]
        self.embed = label_embedding(num_classes, num_classes > 0 and cfg.g_norm != "batch")
        self.fc = nn.Linear(self.z_dim + (LABEL_DIM if self.embed else 0), widths[0] * base * base)
        norm, act = _norm(cfg.g_norm, num_classes), lambda: activation(cfg.g_activation)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for k in range(stages):
            for i in range(cfg.blocks_per_stage):
                blocks.append(
                    ResBlock(cin, widths[k], resample="up" if i == 0 else None, block=cfg.block, norm=norm,
                             act=act, groups=cfg.groups, expansion=cfg.expansion)
                )  # fmt: skip
                cin = widths[k]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(norm(cin), act(), _conv(cin, channels, 3), nn.Tanh())
        init_weights(self, cfg.fixup_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(with_label(z, y, self.embed)).view(-1, self.width0, self.base, self.base)
        for block in self.blocks:
            h = block(h, y)
        return run_layers(self.head, h, y)


class ResNetDiscriminator(nn.Module):
    """With `num_classes` the output gains the projection term on the pooled features."""

    def __init__(self, cfg: DictConfig, channels: int, size: int, num_classes: int = 0) -> None:
        super().__init__()
        _, stages = base_and_stages(size)
        widths = stage_channels(cfg, cfg.d_width, size)
        spectral = d_uses_spectral_norm(cfg)
        norm, act = _norm("none" if spectral else cfg.d_norm), lambda: activation(cfg.d_activation)
        blocks: list[nn.Module] = []
        cin = channels
        for k in range(stages - 1, stages - 1 - d_downsamplings(cfg, size), -1):
            for i in range(cfg.blocks_per_stage):
                blocks.append(
                    ResBlock(cin, widths[k], resample="down" if i == 0 else None, block=cfg.block, norm=norm,
                             act=act, groups=cfg.groups, expansion=cfg.expansion, preactivate=bool(blocks))
                )  # fmt: skip
                cin = widths[k]
        for _ in range(cfg.d_final_blocks):
            blocks.append(
                ResBlock(cin, cin, resample=None, block=cfg.block, norm=norm, act=act, groups=cfg.groups,
                         expansion=cfg.expansion)
            )  # fmt: skip
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(norm(cin), act())
        self.fc = nn.Linear(cin, 1)
        self.embed = nn.Embedding(num_classes, cin) if num_classes else None
        init_weights(self, cfg.fixup_init)
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)
        if spectral:
            spectral_norm_all(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.out(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        out = self.fc(features).squeeze(1)
        if self.embed is None:
            return out
        return out + projection(self.embed, y, features)


def check_config(cfg: DictConfig) -> None:
    """Image data of a size the ResNets can build, and valid model settings, from the config alone."""
    check_options(cfg.model, configured_image_size(cfg))


CONFIG_CHECKS["resnet"] = check_config


@MODELS.register("resnet")
def build(cfg: DictConfig, data: Data) -> tuple[nn.Module, nn.Module]:
    channels, height = square_images(data, "resnet")
    check_options(cfg, height)
    classes = data.num_classes if cfg.conditional else 0
    label_embedding(data.num_classes, cfg.conditional)  # refuses unlabelled data
    g = ResNetGenerator(cfg, channels, height, classes)
    return g, ResNetDiscriminator(cfg, channels, height, classes)
