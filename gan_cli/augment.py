"""Differentiable augmentation of D's inputs: DiffAugment (Zhao et al., 2020) with a fixed probability,
or with ADA's adaptive one (Karras et al., 2020).

The same random transform family is applied to every batch D sees, real and fake, in D's and in G's
steps; it is differentiable w.r.t. its input, so G learns through it. Each augmentation is applied to
each example independently with probability p:
  colour       brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)
  translation  a shift by whole pixels, up to 1/8 of the size each way, zero-padded
  cutout       a square of half the size, inside the image, set to zero
Randomness comes from the global torch RNG on the input's device, with fixed shapes and no host
synchronisation, so a step that augments can be captured in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from gan_cli.config import store_schema
from gan_cli.errors import ConfigError

NAMES = ("none", "diffaugment", "ada")


@dataclass
class AugmentConfig:
    name: str = MISSING  # none | diffaugment | ada
    translation: bool = MISSING  # shift by up to 1/8 of the image size, zero-padded
    cutout: bool = MISSING  # zero a square of half the image size
    color: bool = MISSING  # brightness, saturation and contrast
    p: float = MISSING  # probability of each augmentation per example: fixed (diffaugment) or initial (ada)
    target: float = MISSING  # ada: the E[sign(D(real))] that p is adjusted to keep
    interval: int = MISSING  # ada: D steps between adjustments of p
    speed_images: int = MISSING  # ada: real images over which p can move from 0 to 1


store_schema("augment", "base", AugmentConfig)


def check_config(cfg: AugmentConfig | DictConfig) -> None:
    """Refuse an unknown name or values out of range, naming the key."""
    if cfg.name not in NAMES:
        raise ConfigError(f"augment.name={cfg.name!r} is not valid; allowed: {', '.join(NAMES)}")
    if cfg.name == "none":
        return
    if not 0 <= cfg.p <= 1:
        raise ConfigError(f"augment.p={cfg.p} is not valid; it is a probability, in [0, 1]")
    if cfg.name != "ada":
        return
    if not -1 <= cfg.target <= 1:
        raise ConfigError(f"augment.target={cfg.target} is not valid; E[sign(D(real))] lies in [-1, 1]")
    for key in ("interval", "speed_images"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"augment.{key}={getattr(cfg, key)} is not valid; it must be >= 1")


def _per_example(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def brightness(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """x + offset, one offset per example (shape (B,))."""
    return x + offset.view(_per_example(x))


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance to its mean over channels scaled by the example's factor."""
    mean = x.mean(dim=1, keepdim=True)
    return x + (factor.view(_per_example(x)) - 1) * (x - mean)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each value's distance to the example's mean (over channels and pixels) scaled by its factor."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return x + (factor.view(_per_example(x)) - 1) * (x - mean)


def translate(x: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i - shift_y[b], j - shift_x[b]], zero where that falls outside.

    Shifts are integer tensors of shape (B,); every output pixel is gathered from x (or masked to
    zero), so gradients reach x."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h) - shift_y.view(b, 1)  # (B, H) source rows
    cols = torch.arange(w, device=x.device).view(1, w) - shift_x.view(b, 1)  # (B, W) source columns
    inside = ((rows >= 0) & (rows < h)).view(b, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, w)
    index = rows.clamp(0, h - 1).view(b, h, 1) * w + cols.clamp(0, w - 1).view(b, 1, w)
    out = x.flatten(2).gather(2, index.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def erase_square(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """x with the size x size square at (top[b], left[b]) set to zero in every channel."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h) - top.view(b, 1)
    cols = torch.arange(w, device=x.device).view(1, w) - left.view(b, 1)
    inside = ((rows >= 0) & (rows < size)).view(b, h, 1) & ((cols >= 0) & (cols < size)).view(b, 1, w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def translation_limits(x: torch.Tensor) -> tuple[int, int]:
    """The largest shift each way: 1/8 of the height and of the width, rounded half up (at least 1)."""
    return max(1, int(x.shape[2] / 8 + 0.5)), max(1, int(x.shape[3] / 8 + 0.5))


def cutout_size(x: torch.Tensor) -> int:
    """Half the image's (shorter) side, rounded half up."""
    return max(1, int(min(x.shape[2], x.shape[3]) / 2 + 0.5))


def diff_augment(
    x: torch.Tensor,
    p: torch.Tensor | float = 1.0,
    *,
    translation: bool = True,
    cutout: bool = True,
    color: bool = True,
) -> torch.Tensor:
    """x (B, C, H, W) with each enabled augmentation applied to each example with probability p.

    `p` may be a device tensor (e.g. AdaptiveP.p); every draw is made on x's device, whether or not it
    is used, so the work (and the RNG's use) does not depend on p."""
    n, dev, dt = x.shape[0], x.device, x.dtype

    def chosen() -> torch.Tensor:
        return torch.rand(n, device=dev) < p

    if color:
        x = brightness(x, torch.where(chosen(), torch.rand(n, device=dev, dtype=dt) - 0.5, 0.0))
        x = saturation(x, torch.where(chosen(), torch.rand(n, device=dev, dtype=dt) * 2, 1.0))
        x = contrast(x, torch.where(chosen(), torch.rand(n, device=dev, dtype=dt) + 0.5, 1.0))
    if translation:
        limit_y, limit_x = translation_limits(x)
        on = chosen()
        shift_y = torch.randint(-limit_y, limit_y + 1, (n,), device=dev) * on
        shift_x = torch.randint(-limit_x, limit_x + 1, (n,), device=dev) * on
        x = translate(x, shift_y, shift_x)
    if cutout:
        size = cutout_size(x)
        on = chosen()
        top = torch.randint(0, x.shape[2] - size + 1, (n,), device=dev)
        left = torch.randint(0, x.shape[3] - size + 1, (n,), device=dev)
        x = torch.where(on.view(n, 1, 1, 1), erase_square(x, top, left, size), x)
    return x


Reduce = Callable[[torch.Tensor], torch.Tensor]


class AdaptiveP:
    """ADA's augmentation probability, kept on the device and adjusted without host synchronisation.

    Each D step adds sign(D(real)) of its (augmented) real batch; after every `interval` steps,
    r_t = E[sign(D(real))] over them and p <- clamp(p + sign(r_t - target) * n / speed_images, 0, 1),
    n being the images seen in those steps (batch * interval): D overfitting (r_t above the target)
    raises p, and p can cross [0, 1] in `speed_images` images."""

    def __init__(
        self,
        p: float = 0.0,
        target: float = 0.6,
        interval: int = 4,
        speed_images: int = 500_000,
        device: torch.device | str = "cpu",
    ) -> None:
        self.target, self.interval, self.speed_images = float(target), int(interval), int(speed_images)
        self.p = torch.tensor(float(p), device=device)
        self.rt = torch.zeros((), device=device)  # r_t of the last adjustment (for logging)
        self._sign_sum = torch.zeros((), device=device)
        self._count = torch.zeros((), device=device)
        self._steps = torch.zeros((), dtype=torch.long, device=device)

    def accumulate(self, d_real: torch.Tensor, reduce: Reduce | None = None) -> None:
        """Add one D step's outputs on the real batch; adjusts p when `interval` steps are in.

        With several processes pass `reduce`, a sum over them (e.g. an all-reduce) of a 2-vector, so
        that all adjust p alike. Every update is in place: p keeps its storage (CUDA graphs)."""
        out = d_real.detach().float()
        signs = torch.sign(out).sum()
        stats = torch.stack([signs, torch.full_like(signs, out.numel())])
        if reduce is not None:
            stats = reduce(stats)
        self._sign_sum.add_(stats[0])
        self._count.add_(stats[1])
        self._steps.add_(1)
        due = self._steps >= self.interval
        rt = self._sign_sum / self._count.clamp_min(1)
        step = torch.sign(rt - self.target) * self._count / self.speed_images
        self.p.copy_(torch.where(due, (self.p + step).clamp(0, 1), self.p))
        self.rt.copy_(torch.where(due, rt, self.rt))
        for acc in (self._sign_sum, self._count, self._steps):
            acc.copy_(torch.where(due, torch.zeros_like(acc), acc))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "p": self.p.clone(),
            "rt": self.rt.clone(),
            "sign_sum": self._sign_sum.clone(),
            "count": self._count.clone(),
            "steps": self._steps.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore in place, onto this object's device."""
        self.p.copy_(state["p"])
        self.rt.copy_(state["rt"])
        self._sign_sum.copy_(state["sign_sum"])
        self._count.copy_(state["count"])
        self._steps.copy_(state["steps"])


class Augment:
    """What a training step calls: `augment(x)` on every batch D sees (real and fake, D's and G's
    steps), `augment.observe(d_real)` with D's outputs on each augmented real batch (ADA's feedback)."""

    def __init__(self, cfg: AugmentConfig | DictConfig, device: torch.device | str = "cpu") -> None:
        self.name = str(cfg.name)
        self.ada: AdaptiveP | None = None
        self.p = torch.zeros((), device=device)
        self.ops: dict[str, bool] = {}
        if self.name == "none":
            return
        check_config(cfg)
        self.ops = {
            "translation": bool(cfg.translation),
            "cutout": bool(cfg.cutout),
            "color": bool(cfg.color),
        }
        if self.name == "ada":
            self.ada = AdaptiveP(cfg.p, cfg.target, cfg.interval, cfg.speed_images, device)
            self.p = self.ada.p
        else:
            self.p = torch.tensor(float(cfg.p), device=device)

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return diff_augment(x, self.p, **self.ops)

    def observe(self, d_real: torch.Tensor, reduce: Reduce | None = None) -> None:
        """ADA: accumulate sign(D(real)); a no-op for the other modes."""
        if self.ada is not None:
            self.ada.accumulate(d_real, reduce)

    def state_dict(self) -> dict[str, Any]:
        return self.ada.state_dict() if self.ada is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ada is not None and state:
            self.ada.load_state_dict(state)


def no_augmentation() -> Augment:
    """What `augment=none` builds: every call returns its input."""
    return Augment(OmegaConf.create({"name": "none"}))
