"""Every model builds for the supported image sizes and channel counts, with the right shapes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gan_cli.checkpoint import weights_differ
from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.models import MODELS, ClassBatchNorm2d, build_models
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


def test_class_batch_norm_matches_hand_computed_values() -> None:
    torch.manual_seed(0)
    norm = ClassBatchNorm2d(3, num_classes=4).double()
    with torch.no_grad():
        norm.class_gain.weight.copy_(torch.arange(12, dtype=torch.float64).view(4, 3))
        norm.class_bias.weight.copy_(-torch.arange(12, dtype=torch.float64).view(4, 3) / 10)
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    gain = torch.arange(12, dtype=torch.float64).view(4, 3)[y][:, :, None, None]
    expected = (x - mean) / torch.sqrt(var + norm.eps) * gain - gain / 10
    assert torch.allclose(norm(x, y), expected, atol=1e-12)
    assert not norm.affine and norm.weight is None  # the class gains replace batch norm's own
    with pytest.raises(ValueError, match="conditional"):
        norm(x)


def test_conditional_dcgan_takes_the_label_in_its_batch_norms() -> None:
    torch.manual_seed(0)
    cfg = OmegaConf.create({**MODEL_CFGS["dcgan"], "conditional": True})
    g, _ = build_models(cfg, image_data(1, 28))
    first = g.net[0]
    assert isinstance(first, DenseStart) and first.in_channels == 16  # the noise alone
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, ClassBatchNorm2d) for m in norms)
    gains = torch.cat([m.class_gain.weight.detach().flatten() for m in norms])
    assert abs(float(gains.mean()) - 1) < 0.01 and abs(float(gains.std()) - 0.02) < 0.005  # N(1, 0.02)
    z = torch.randn(8, 16)
    zeros, ones = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    assert torch.equal(g(z, zeros), g(z, zeros)) and not torch.allclose(g(z, zeros), g(z, ones))


def test_an_earlier_conditional_dcgan_checkpoint_is_refused_with_the_reason() -> None:
    cfg = OmegaConf.create({**MODEL_CFGS["dcgan"], "conditional": True})
    g, _ = build_models(cfg, image_data(1, 28))
    saved = {k: v for k, v in g.state_dict().items() if "class_" not in k}
    saved["embed.weight"] = torch.zeros(10, 32)  # the earlier layout: a label embedding joined the noise
    saved["net.0.weight"] = torch.zeros(16 + 32, 32, 7, 7)
    found = weights_differ("G", saved, g)
    assert "earlier gan_cli" in found[0] and "train the model again" in found[0]
    assert any("G.embed.weight is [10, 32] in the checkpoint, absent in this model" in f for f in found)
