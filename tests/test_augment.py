"""Differentiable augmentation: each transform against hand computation, the per-example probability,
gradients to the input, ADA's update rule on hand-made D outputs, and the YAML group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from gan_cli.augment import (
    AdaptiveP,
    Augment,
    brightness,
    check_config,
    contrast,
    cutout_size,
    diff_augment,
    erase_square,
    saturation,
    translate,
    translation_limits,
)
from gan_cli.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "augment"


def AugmentConfig(name: str = "ada", **overrides: object) -> DictConfig:
    """The augment config as configs/augment/<name>.yaml gives it (ada's keys for an unknown name),
    with `overrides`."""
    path = CONFIGS / f"{name}.yaml"
    base = OmegaConf.load(path if path.exists() else CONFIGS / "ada.yaml")
    base.pop("defaults")
    merged = OmegaConf.merge(base, {"name": name, **overrides})
    assert isinstance(merged, DictConfig)
    return merged


def images(b: int = 6, c: int = 3, size: int = 16) -> torch.Tensor:
    """Positive, all-distinct values, so a zero can only come from padding or cutout."""
    return torch.arange(1, b * c * size * size + 1, dtype=torch.float32).view(b, c, size, size)


def shifted_by_hand(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_p_zero_is_the_identity() -> None:
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(diff_augment(x, 0.0), x)
    assert torch.equal(diff_augment(x, torch.tensor(0.0)), x)
    assert torch.equal(Augment(AugmentConfig(name="ada", p=0.0))(x), x)
    assert Augment(AugmentConfig(name="none"))(x) is x


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-2, 2), (1, 0)])
def test_translate_by_hand(dy: int, dx: int) -> None:
    x = images(2)
    out = translate(x, torch.tensor([dy, 0]), torch.tensor([dx, 0]))
    assert torch.equal(out[0], shifted_by_hand(x[0], dy, dx))
    assert torch.equal(out[1], x[1])


def test_random_translation_moves_by_whole_pixels_and_pads_zeros() -> None:
    torch.manual_seed(0)
    x = images(32)
    out = diff_augment(x, 1.0, translation=True, cutout=False, color=False)
    limit = translation_limits(x)
    assert limit == (2, 2)  # 16 / 8
    shifts = []
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], shifted_by_hand(x[i], dy, dx))
        ]
        assert len(matches) == 1, f"example {i} is not a whole-pixel shift of at most 2"
        shifts.append(matches[0])
    assert len(set(shifts)) > 5  # shifts are drawn per example


def test_erase_square_by_hand() -> None:
    x = torch.ones(2, 3, 8, 8)
    out = erase_square(x, torch.tensor([1, 4]), torch.tensor([2, 0]), 4)
    expected = torch.ones(2, 3, 8, 8)
    expected[0, :, 1:5, 2:6] = 0
    expected[1, :, 4:8, 0:4] = 0
    assert torch.equal(out, expected)


@pytest.mark.parametrize("size", [16, 28, 32])
def test_random_cutout_zeroes_exactly_a_square_of_half_the_size(size: int) -> None:
    torch.manual_seed(1)
    x = images(16, size=size)
    out = diff_augment(x, 1.0, translation=False, cutout=True, color=False)
    side = cutout_size(x)
    assert side == size // 2
    corners = set()
    for i in range(len(x)):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # every channel
        rows, cols = zero[0].nonzero(as_tuple=True)
        assert len(rows) == side * side
        top, left = int(rows.min()), int(cols.min())
        assert (int(rows.max()) - top + 1, int(cols.max()) - left + 1) == (side, side)
        assert torch.equal(out[i][~zero], x[i][~zero])  # the rest untouched
        corners.add((top, left))
    assert len(corners) > 4


def test_colour_ops_by_hand() -> None:
    grey = torch.full((2, 3, 4, 4), 0.25)
    assert torch.allclose(
        brightness(grey, torch.tensor([0.5, -0.25])), torch.tensor([0.75, 0.0]).view(2, 1, 1, 1)
    )
    # a constant grey image has no saturation or contrast to scale
    assert torch.equal(saturation(grey, torch.tensor([2.0, 0.0])), grey)
    assert torch.equal(contrast(grey, torch.tensor([1.5, 0.5])), grey)
    # channels (0.2, 0.4, 0.6) everywhere: channel mean 0.4, scaled distances 0.5 * (-0.2, 0, 0.2)
    colour = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = saturation(colour, torch.tensor([0.5]))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.3, 0.4, 0.5]))
    # half the pixels 0, half 1: mean 0.5; contrast 1.5 moves them to -0.25 and 1.25
    half = torch.zeros(1, 1, 2, 2)
    half[..., 0, :] = 1
    assert torch.allclose(contrast(half, torch.tensor([1.5])), torch.tensor([[1.25, 1.25], [-0.25, -0.25]]))


def test_random_colour_on_a_constant_image_is_a_brightness_offset_per_example() -> None:
    torch.manual_seed(2)
    grey = torch.full((64, 3, 8, 8), 0.25)
    out = diff_augment(grey, 1.0, translation=False, cutout=False, color=True)
    offsets = out[:, 0, 0, 0] - 0.25
    assert torch.allclose(out, (0.25 + offsets).view(-1, 1, 1, 1).expand_as(out), atol=1e-6)
    assert offsets.min() >= -0.5 and offsets.max() < 0.5
    assert offsets.std() > 0.2  # uniform on [-0.5, 0.5] has sd 0.29: drawn per example


def test_each_example_is_augmented_with_probability_p() -> None:
    torch.manual_seed(3)
    x = images(2000, c=1, size=8)
    changed = (diff_augment(x, 0.3, translation=True, cutout=False, color=False) != x).flatten(1).any(1)
    # shifted with probability 0.3, by (0, 0) one time in 9 (at 8 px the limit is 1: 3 x 3 shifts)
    assert changed.float().mean().item() == pytest.approx(0.3 * (1 - 1 / 9), abs=0.04)


def test_gradients_flow_to_the_input() -> None:
    torch.manual_seed(4)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, 1.0)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # G's parameters get gradients through the augmented fakes
    g = torch.nn.Linear(4, 3 * 16 * 16)
    fake = g(torch.randn(2, 4)).view(2, 3, 16, 16)
    diff_augment(fake, torch.tensor(1.0)).square().sum().backward()
    assert g.weight.grad is not None and g.weight.grad.abs().sum() > 0


def test_same_seed_same_augmentation() -> None:
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(5)
    a = diff_augment(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(diff_augment(x, 0.5), a)


def test_adaptive_p_rises_above_the_target_and_falls_below() -> None:
    ada = AdaptiveP(p=0.5, target=0.6, interval=2, speed_images=100)
    confident = torch.tensor([1.0, 2.0, 0.5, 3.0])  # r_t = 1 > 0.6
    ada.accumulate(confident)
    assert ada.p.item() == 0.5  # not yet: one step of the interval
    ada.accumulate(confident)
    assert ada.p.item() == pytest.approx(0.5 + 8 / 100)  # 2 steps x 4 images
    assert ada.rt.item() == 1.0
    unsure = torch.tensor([1.0, -1.0, -2.0, 0.5])  # r_t = 0 < 0.6
    ada.accumulate(unsure)
    ada.accumulate(unsure)
    assert ada.p.item() == pytest.approx(0.5)
    assert ada.rt.item() == 0.0
    # r_t averages over the whole interval: (4 - 2) / 8 = 0.25 < 0.6
    ada.accumulate(confident)
    ada.accumulate(torch.tensor([-1.0, -1.0, -1.0, 1.0]))
    assert ada.rt.item() == pytest.approx(0.25)
    assert ada.p.item() == pytest.approx(0.42)


def test_adaptive_p_clamps_to_the_unit_interval() -> None:
    ada = AdaptiveP(p=0.0, target=0.6, interval=1, speed_images=10)
    ada.accumulate(-torch.ones(8))
    assert ada.p.item() == 0.0
    for _ in range(3):
        ada.accumulate(torch.ones(8))
    assert ada.p.item() == 1.0


def test_adaptive_p_default_speed_crosses_in_500k_images() -> None:
    ada = AdaptiveP(p=0.0, interval=4)
    batch = torch.ones(64)
    for _ in range(4 * 10):
        ada.accumulate(batch)
    assert ada.p.item() == pytest.approx(10 * 4 * 64 / 500_000)


def test_adaptive_p_reduces_over_processes() -> None:
    ada = AdaptiveP(p=0.5, target=0.6, interval=1, speed_images=100)
    ada.accumulate(torch.ones(4), reduce=lambda t: t * 2)  # as if two processes saw the same
    assert ada.p.item() == pytest.approx(0.5 + 8 / 100)


def test_p_keeps_its_storage_and_survives_a_checkpoint() -> None:
    aug = Augment(AugmentConfig(name="ada", p=0.2, interval=2, speed_images=50))
    storage = aug.p.data_ptr()
    for _ in range(3):
        aug.observe(torch.ones(5))
    assert aug.ada is not None and aug.p is aug.ada.p and aug.p.data_ptr() == storage
    state = aug.state_dict()
    restored = Augment(AugmentConfig(name="ada", p=0.0, interval=2, speed_images=50))
    restored.load_state_dict(state)
    assert restored.p.item() == pytest.approx(0.2 + 10 / 50)
    # the half-finished interval carries over too: one more step completes it in both
    aug.observe(torch.ones(5))
    restored.observe(torch.ones(5))
    assert restored.p.item() == aug.p.item() == pytest.approx(0.2 + 20 / 50)


def test_diffaugment_has_a_fixed_p_and_no_state() -> None:
    aug = Augment(AugmentConfig(name="diffaugment", p=1.0))
    aug.observe(torch.ones(4))
    assert aug.p.item() == 1.0 and aug.state_dict() == {}
    x = torch.randn(4, 3, 16, 16)
    assert not torch.equal(aug(x), x)


@pytest.mark.parametrize(
    "cfg,message",
    [
        (AugmentConfig(name="ada2"), "augment.name='ada2' is not valid; allowed: none, diffaugment, ada"),
        (AugmentConfig(p=1.5), "augment.p=1.5 is not valid"),
        (AugmentConfig(target=2.0), "augment.target=2.0 is not valid"),
        (AugmentConfig(interval=0), "augment.interval=0 is not valid"),
        (AugmentConfig(speed_images=0), "augment.speed_images=0 is not valid"),
    ],
)
def test_bad_settings_are_refused(cfg: AugmentConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def compose_augment(option: str, *overrides: str) -> DictConfig:
    with initialize_config_module(config_module="gan_cli.configs", version_base="1.3"):
        return compose(config_name=f"augment/{option}", overrides=list(overrides)).augment


@pytest.mark.parametrize("option", ["none", "diffaugment", "ada"])
def test_yaml_options_compose_on_the_schema(option: str) -> None:
    node = compose_augment(option)
    assert OmegaConf.get_type(node).__name__ == "AugmentConfig" and node.name == option
    assert Augment(node).name == option
    if option == "ada":
        assert (node.p, node.target, node.interval, node.speed_images) == (0.0, 0.6, 4, 500_000)
    if option == "diffaugment":
        assert node.p == 1.0 and node.translation and node.cutout and node.color


@pytest.mark.parametrize("override", ["augment.interval=often", "augment.intervall=3"])
def test_yaml_keys_are_typed(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_augment("ada", override)
