"""Choosing the training device and checking that the requested precision works on it."""

from __future__ import annotations

import torch

from gan_cli.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(
            f"trainer.device={spec!r} is not valid; allowed: auto, cpu, cuda, cuda:N, mps"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.device=cuda but CUDA is not available here; use trainer.device=cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                "trainer.device=mps but MPS is not available here; use trainer.device=cpu or auto"
            )
    elif device.type != "cpu":
        raise ConfigError(f"trainer.device={spec!r} is not supported; allowed: auto, cpu, cuda, cuda:N, mps")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `trainer.precision`, or None for full fp32 (and for `auto`, which the
    training loop resolves once it knows the model)."""
    precision = str(precision)
    if precision in ("32", "auto"):
        return None
    if precision == "16":
        if device.type != "cuda":
            raise ConfigError(
                f"trainer.precision=16 needs CUDA (the device is {device.type}); "
                "use trainer.precision=32 or bf16"
            )
        return torch.float16
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("trainer.precision=bf16 is not supported by this GPU; use 16 or 32")
        return torch.bfloat16
    raise ConfigError(f"trainer.precision={precision!r} is not valid; allowed: 32, bf16, 16, auto")
