"""model=resnet: shapes at every size, the options, fix-up initialisation, SNGAN's parameter count,
and the sizes and settings it refuses."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.losses.penalties import r1_penalty
from gan_cli.models import ClassBatchNorm2d, build_models, check_model_config
from gan_cli.models.resnet import ResBlock, ResNetConfig

TINY = {"z_dim": 8, "g_width": 8, "d_width": 8, "ema_decay": 0.0}
R3GAN_LIKE = {"block": "bottleneck", "expansion": 2, "groups": 4, "g_norm": "none", "d_norm": "none",
              "g_activation": "leaky_relu", "d_activation": "leaky_relu", "fixup_init": True}  # fmt: skip


@functools.cache
def yaml_defaults() -> DictConfig:
    """configs/model/resnet.yaml on its schema: the defaults a run starts from."""
    with initialize_config_module(config_module="gan_cli.configs", version_base="1.3"):
        cfg = compose(config_name="model/resnet").model
    assert OmegaConf.get_type(cfg) is ResNetConfig
    return cfg


def model_cfg(**overrides: Any) -> DictConfig:
    return OmegaConf.merge(yaml_defaults(), {**TINY, **overrides})


def image_data(channels: int, size: int, classes: int = 10) -> Data:
    return Data(kind="image", shape=(channels, size, size), num_classes=classes)


def build(cfg: DictConfig, channels: int = 3, size: int = 32) -> tuple[nn.Module, nn.Module]:
    return build_models(cfg, image_data(channels, size))


def check_shapes(g: nn.Module, d: nn.Module, channels: int, size: int, conditional: bool) -> None:
    y = torch.tensor([0, 3, 9]) if conditional else None
    x = g(torch.randn(3, 8), y)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, y).shape == (3,)


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes(size: int, channels: int, conditional: bool) -> None:
    g, d = build(model_cfg(conditional=conditional), channels, size)
    check_shapes(g, d, channels, size, conditional)


@pytest.mark.parametrize("size", [28, 64])
def test_r3gan_like_shapes(size: int) -> None:
    g, d = build(model_cfg(**R3GAN_LIKE, conditional=True), 3, size)
    check_shapes(g, d, 3, size, True)


def test_conditional_d_without_labels_keeps_the_unconditional_part() -> None:
    g, d = build(model_cfg(conditional=True))
    x = g(torch.randn(3, 8), torch.tensor([1, 2, 3]))
    assert d(x).shape == (3,)
    assert d.embed is not None and g.embed is None  # G's batch norms take the label
    assert any(isinstance(m, ClassBatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("g_norm", ["none", "batch"])
@pytest.mark.parametrize("d_norm", ["none", "spectral", "batch"])
def test_norm_options(g_norm: str, d_norm: str) -> None:
    g, d = build(model_cfg(g_norm=g_norm, d_norm=d_norm))
    check_shapes(g, d, 3, 32, False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == (g_norm == "batch")
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == (d_norm == "batch")
    spectral = [hasattr(m, "parametrizations") for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(spectral) if d_norm == "spectral" else not any(spectral)


def test_model_spectral_norm_replaces_d_batch_norm() -> None:
    _, d = build(model_cfg(d_norm="batch", spectral_norm=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert all(hasattr(m, "parametrizations") for m in d.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_grouped_convolutions(block: str) -> None:
    g, d = build(model_cfg(block=block, groups=4, d_norm="none"))
    check_shapes(g, d, 3, 32, False)
    # the only ungrouped 3x3 convolutions touch pixels: G's last, and D's first in basic blocks
    for net, ungrouped in ((g, 1), (d, 1 if block == "basic" else 0)):
        grouped = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert sum(m.groups == 4 for m in grouped) > 0
        assert sum(m.groups == 1 for m in grouped) == ungrouped
        assert all(
            m.groups == 1 for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
        )


def test_bottleneck_expands_then_projects() -> None:
    g, _ = build(model_cfg(block="bottleneck", expansion=3, groups=2))
    block = g.blocks[0]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in block.branch_convs()] == [
        (8, 24, (1, 1)),
        (24, 24, (3, 3)),
        (24, 8, (1, 1)),
    ]


def blocks_of(net: nn.Module) -> list[ResBlock]:
    return [m for m in net.modules() if isinstance(m, ResBlock)]


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_fixup_init_makes_every_block_its_shortcut(block: str) -> None:
    cfg = model_cfg(**{**R3GAN_LIKE, "block": block}, blocks_per_stage=2, widths=[2, 1, 1])
    g, d = build(cfg)
    for b in blocks_of(g):
        x = torch.randn(2, b.branch_convs()[0].in_channels, 4, 4)
        assert torch.equal(b(x), b.shortcut(x))
        if isinstance(b.shortcut, nn.Identity):
            assert torch.equal(b(x), x)
    assert any(isinstance(b.shortcut, nn.Identity) for b in blocks_of(g))
    for b in blocks_of(d):
        x = torch.randn(2, b.branch_convs()[0].in_channels, 8, 8)
        assert torch.equal(b(x), b.shortcut(x))


def test_fixup_scales_the_other_branch_convolutions() -> None:
    # same seed, same draws: fixup only zeroes the last convolution and rescales the others
    cfg = {**R3GAN_LIKE, "block": "bottleneck"}
    torch.manual_seed(0)
    g_fix, _ = build(model_cfg(**cfg))
    torch.manual_seed(0)
    g_plain, _ = build(model_cfg(**{**cfg, "fixup_init": False}))
    blocks = blocks_of(g_fix)
    scale = len(blocks) ** (-1 / 4)  # L = 3 blocks, m = 3 convolutions per branch: L**(-1/(2m-2))
    for fixed, plain in zip(blocks, blocks_of(g_plain), strict=True):
        *rest, last = fixed.branch_convs()
        assert not last.weight.any() and last.bias is not None and not last.bias.any()
        for a, b in zip(rest, plain.branch_convs()[:-1], strict=True):
            torch.testing.assert_close(a.weight, b.weight * scale)
        assert plain.branch_convs()[-1].weight.abs().sum() > 0


def test_sngan_cifar10_preset() -> None:
    cfg = model_cfg(z_dim=128, g_width=256, d_width=128, d_final_res=8, d_final_blocks=2)
    g, d = build(cfg)
    n_params = [sum(p.numel() for p in net.parameters()) for net in (g, d)]
    # G: linear 128 -> 4*4*256 (+bias); 3 blocks of 2 BN(256), 2 conv3x3 256->256, a 1x1 shortcut;
    #    BN(256) and conv3x3 256->3 at the end
    block = 2 * 512 + 2 * (256 * 256 * 9 + 256) + (256 * 256 + 256)
    g_count = (128 * 4096 + 4096) + 3 * block + 512 + (256 * 3 * 9 + 3)
    # D: first block conv3x3 3->128, conv3x3 128->128, 1x1 shortcut 3->128; second: 2 conv3x3 and a 1x1
    #    shortcut 128->128; two blocks of 2 conv3x3 128->128 with identity shortcuts; linear 128 -> 1
    conv = 128 * 128 * 9 + 128
    d_count = (3 * 128 * 9 + 128 + conv + 3 * 128 + 128) + (2 * conv + 128 * 128 + 128) + 4 * conv + 129
    assert n_params == [g_count, d_count]
    assert (g_count, d_count) == (4_276_739, 1_053_825)  # SNGAN's "4.3M and 1.0M" for CIFAR-10
    assert [b.shortcut[0].__class__ for b in blocks_of(g)] == [nn.Upsample] * 3
    assert [isinstance(b.branch[-1], nn.AvgPool2d) for b in blocks_of(d)] == [True, True, False, False]


def test_stage_widths_follow_the_multipliers() -> None:
    g, d = build(model_cfg(widths=[4, 2, 1]))
    assert g.fc.out_features == 32 * 4 * 4
    assert [b.branch_convs()[-1].out_channels for b in blocks_of(g)] == [32, 16, 8]
    assert [b.branch_convs()[-1].out_channels for b in blocks_of(d)] == [8, 16, 32, 32]


def test_r1_through_the_discriminator() -> None:
    g, d = build(model_cfg(**R3GAN_LIKE, conditional=True))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    penalty = r1_penalty(d, x, y)
    penalty.backward()
    assert torch.isfinite(penalty)
    assert all(p.grad is not None for p in d.blocks[0].parameters())


def full_cfg(size: int, **model: Any) -> DictConfig:
    return OmegaConf.create({"data": {"name": "cifar10", "image_size": size},
                             "model": OmegaConf.merge(model_cfg(**model), {})})  # fmt: skip


@pytest.mark.parametrize("size", [16, 30, 48, 256])
def test_unsupported_size_names_the_sizes_allowed(size: int) -> None:
    with pytest.raises(
        ConfigError, match=f"cannot build images of size {size}; it builds sizes 28, 32, 64, 128"
    ):
        check_model_config(full_cfg(size))
    with pytest.raises(ConfigError, match="it builds sizes 28, 32, 64, 128"):
        build(model_cfg(), 3, size)


@pytest.mark.parametrize(
    "model,message",
    [
        ({"g_norm": "spectral"}, "model.g_norm='spectral' is not valid; allowed: none, batch"),
        ({"d_norm": "layer"}, "model.d_norm='layer' is not valid; allowed: none, spectral, batch"),
        ({"block": "dense"}, "model.block='dense' is not valid; allowed: basic, bottleneck"),
        ({"d_activation": "swish"}, "unknown activation 'swish'"),
        ({"widths": [1, 2]}, "model.widths has 2 entries, but images of size 32 are made in 3 stages"),
        ({"widths": [1, 0.01, 1]}, "need >= 1"),
        ({"groups": 3}, "model.groups=3 must divide"),
        ({"d_final_res": 32}, "model.d_final_res=32 is not valid for images of size 32; allowed: 4, 8, 16"),
        ({"blocks_per_stage": 0}, "model.blocks_per_stage=0 is not valid"),
        ({"fixup_init": True}, "model.fixup_init=true zeroes convolutions"),
        ({"fixup_init": True, "d_norm": "none", "spectral_norm": True}, "model.fixup_init=true"),
    ],
)
def test_bad_settings_are_refused_before_any_work(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_model_config(full_cfg(32, **model))


def test_28_pixels_start_from_7() -> None:
    g, d = build(model_cfg(d_final_res=14), 1, 28)
    assert g.fc.out_features == 8 * 7 * 7
    assert sum(isinstance(b.branch[-1], nn.AvgPool2d) for b in blocks_of(d)) == 1
    assert math.prod(g(torch.randn(2, 8)).shape[1:]) == 28 * 28


def test_needs_square_image_data() -> None:
    with pytest.raises(ConfigError, match="needs image data"):
        build_models(model_cfg(), Data(kind="points", shape=(2,), num_classes=0))
    with pytest.raises(ConfigError, match="needs square images"):
        build_models(model_cfg(), Data(kind="image", shape=(3, 32, 64), num_classes=0))
    with pytest.raises(ConfigError, match="needs a labelled data set"):
        build_models(model_cfg(conditional=True), image_data(3, 32, classes=0))
