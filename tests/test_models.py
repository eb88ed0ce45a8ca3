"""Every model builds for the supported image sizes and channel counts, with the right shapes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.models import MODELS, build_models
from gan_cli.models.dcgan import DenseStart, MinibatchStd, base_and_depth

OPTIONS = {"ema_decay": 0.0, "conditional": False, "spectral_norm": False}  # every model's shared keys
MODEL_CFGS = {
    "mlp": {"name": "mlp", "z_dim": 16, "g_hidden": [32], "d_hidden": [32], "g_activation": "relu",
            "d_activation": "leaky_relu", **OPTIONS},
    "dcgan": {"name": "dcgan", "z_dim": 16, "g_width": 8, "d_width": 8, "mbstd_group": 0, **OPTIONS},
}  # fmt: skip


def image_data(channels: int, size: int) -> Data:
    return Data(kind="image", shape=(channels, size, size), num_classes=10)


@pytest.mark.parametrize("name", sorted(MODEL_CFGS))
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(name: str, size: int, channels: int) -> None:
    g, d = build_models(OmegaConf.create(MODEL_CFGS[name]), image_data(channels, size))
    z = torch.randn(5, 16)
    x = g(z)
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (5,)


def test_registry_lists_the_builtin_models() -> None:
    assert {"mlp", "dcgan"} <= set(MODELS.names())


def test_dcgan_64_is_the_paper_network() -> None:
    g, d = build_models(OmegaConf.create({**MODEL_CFGS["dcgan"], "z_dim": 100, "g_width": 64, "d_width": 64}),
                        image_data(3, 64))  # fmt: skip
    widths = [m.out_channels for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 3]
    assert [m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512, 1]
    convs = [m.weight for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert abs(float(torch.cat([w.detach().flatten() for w in convs]).std()) - 0.02) < 0.002


@pytest.mark.parametrize("base", [4, 7])
def test_dense_start_is_the_transposed_convolution(base: int) -> None:
    torch.manual_seed(0)
    layer = DenseStart(6, 5, base, 1, 0, bias=False).double()
    z = torch.randn(3, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    out = layer(z)
    ref = torch.nn.functional.conv_transpose2d(z, layer.weight)
    assert out.shape == ref.shape == (3, 5, base, base)
    assert torch.allclose(out, ref, atol=1e-12)
    g_out = torch.autograd.grad(out.square().sum(), [z, layer.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [z, layer.weight])
    for a, b in zip(g_out, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize(
    "size,expected", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (128, (4, 5)), (48, (6, 3))]
)
def test_dcgan_sizes(size: int, expected: tuple[int, int]) -> None:
    assert base_and_depth(size) == expected


@pytest.mark.parametrize("size", [30, 100, 3, 6])
def test_dcgan_refuses_sizes_it_cannot_build(size: int) -> None:
    with pytest.raises(ConfigError, match=f"cannot build images of size {size}"):
        base_and_depth(size)


def test_mlp_on_points_is_unbounded() -> None:
    g, d = build_models(OmegaConf.create(MODEL_CFGS["mlp"]), Data(kind="points", shape=(2,), num_classes=8))
    assert g(torch.randn(4, 16)).shape == (4, 2)
    assert not isinstance(g.net[-1], torch.nn.Tanh)


def test_minibatch_std_matches_hand_computed_values() -> None:
    # four images of one channel, 1 x 2 pixels; groups of 2 pair image i with image i + 2
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 6.0], [0.0, 4.0]]).view(4, 1, 1, 2)
    out = MinibatchStd(2)(x)
    assert out.shape == (4, 2, 1, 2)
    assert torch.equal(out[:, :1], x)
    # images 0 and 2: pixel deviations |1 - 3| / 2 = 1 and |2 - 6| / 2 = 2, mean 1.5;
    # images 1 and 3: sqrt(0 + 1e-8) = 1e-4 and |0 - 4| / 2 = 2, mean 1.00005
    want = torch.tensor([1.5, 1.00005, 1.5, 1.00005])
    assert torch.allclose(out[:, 1, 0, 0], want, atol=1e-6) and torch.equal(out[:, 1, 0, 0], out[:, 1, 0, 1])


def test_minibatch_std_groups_by_the_largest_divisor_of_the_batch() -> None:
    x = torch.arange(6.0).view(6, 1, 1, 1)  # group 4 does not divide 6: groups of 3, {0, 2, 4} and {1, 3, 5}
    s = MinibatchStd(4)(x)[:, 1].flatten()
    assert torch.allclose(s, torch.full((6,), (8 / 3 + 1e-8) ** 0.5))
    assert torch.allclose(MinibatchStd(4)(x[:1])[:, 1].flatten(), torch.tensor([1e-4]))  # a batch of one


@pytest.mark.parametrize("size", [28, 32])
def test_dcgan_discriminator_with_minibatch_std(size: int) -> None:
    cfg = OmegaConf.create({**MODEL_CFGS["dcgan"], "mbstd_group": 4})
    g, d = build_models(cfg, image_data(3, size))
    last = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert last.in_channels == 8 * 2 ** (base_and_depth(size)[1] - 1) + 1
    x = g(torch.randn(8, 16))
    assert d(x).shape == (8,)
    # the extra feature makes each score depend on the other images of its group
    changed = x.clone()
    changed[4] = -changed[4]
    d.eval()
    assert not torch.allclose(d(x)[0], d(changed)[0])
