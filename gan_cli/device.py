"""The device policy: which device a run uses, what it computes in (precision), its memory layout,
its fused optimizer kernels and its backend switches. Every `auto` of these is decided here."""

from __future__ import annotations

import os

import torch

from gan_cli.config import Precision, Switch
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (elsewhere bf16 autocast is emulated and slow)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def auto_precision(device: torch.device, conv: bool) -> Precision:
    """What `trainer.precision=auto` means: bf16 autocast for convolutional models on a CUDA device
    that has bf16 (where it roughly doubles convolution speed) and on a CPU with bf16 instructions
    (AVX512-BF16 or AMX, where oneDNN's bf16 convolutions are faster); full fp32 everywhere else."""
    if not conv:
        return Precision.fp32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    if device.type == "cpu" and cpu_has_bf16():
        return Precision.bf16
    return Precision.fp32


def autocast_dtype(precision: Precision, device: torch.device, conv: bool) -> torch.dtype | None:
    """The autocast dtype for `trainer.precision` on `device`, or None for full fp32."""
    if precision is Precision.auto:
        precision = auto_precision(device, conv)
    if precision is Precision.fp16:
        if device.type != "cuda":
            raise ConfigError(
                f"trainer.precision=16 needs CUDA (the device is {device.type}); "
                "use trainer.precision=32 or bf16"
            )
        return torch.float16
    if precision is Precision.bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("trainer.precision=bf16 is not supported by this GPU; use 16 or 32")
        return torch.bfloat16
    return None


def precision_summary(
    precision: Precision, dtype: torch.dtype | None, device: torch.device, conv: bool
) -> str:
    """What `trainer.precision` chose, and why, for the log (`auto` decides for the user)."""
    name = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(dtype, "fp32")  # type: ignore[arg-type]
    if precision is not Precision.auto:
        given = {Precision.fp32: "32", Precision.fp16: "16"}.get(precision, precision.name)
        return f"{name} (trainer.precision={given})"
    if not conv:
        why = "not a convolutional model"
    elif device.type == "cuda":
        why = "a convolutional model on a GPU " + ("with bf16" if dtype is not None else "without bf16")
    elif device.type == "cpu":
        has = "with" if dtype is not None else "without"
        why = f"a convolutional model on a CPU {has} bf16 instructions (AVX512-BF16 or AMX)"
    else:
        why = f"a convolutional model on {device.type}"
    return f"{name} (trainer.precision=auto: {why})"


def check_precision(precision: Precision, device: torch.device) -> None:
    """Refuse a precision the device cannot run, before data or models are built."""
    if precision is not Precision.auto:
        autocast_dtype(precision, device, conv=True)


def channels_last(switch: Switch, device: torch.device, conv: bool) -> bool:
    """NHWC layout for convolutional models: on CUDA under `auto`, wherever asked with `true`."""
    if not conv:
        return False
    return device.type == "cuda" if switch is Switch.auto else switch is Switch.true


def fused_by_default(device: torch.device) -> bool:
    """What `optimizer.fused=auto` means: fused (or foreach) optimizer kernels wherever this torch has
    them (CUDA; the CPU since torch 2.4, where fused Adam is several times faster than its per-tensor
    loop on small networks)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # older torch: fused kernels on CUDA only
        return device.type == "cuda"


def use_fused(switch: Switch, device: torch.device) -> bool:
    return fused_by_default(device) if switch is Switch.auto else switch is Switch.true


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: what taskset, SLURM or a container
    allow), which can be fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # macOS and Windows: no affinity mask


def cpu_threads(setting: object, jobs_at_once: int = 1) -> tuple[int, str]:
    """What `trainer.threads` means, and why: a number is used as given; `auto` takes OMP_NUM_THREADS
    when it is set (the golden tests and torchrun set it), else the usable cores shared among the jobs
    a local launcher runs at once, so parallel runs do not fight over the same cores."""
    if setting != "auto":
        return int(setting), f"trainer.threads={setting}"  # type: ignore[call-overload]
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), f"auto: OMP_NUM_THREADS={omp}"
    cores = usable_cores()
    if jobs_at_once > 1:
        return max(1, cores // jobs_at_once), f"auto: {cores} usable cores / {jobs_at_once} jobs at once"
    return cores, f"auto: {cores} usable cores"


def configure_backends(device: torch.device, cudnn_benchmark: bool, tf32: bool) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)
