"""`gan-export RUN [format=torchscript|onnx] [out=FILE] [ema=true] [device=cpu]`: a trained generator as
one self-contained file that plain torch (`torch.jit.load`) or onnxruntime runs, without gan_cli.

The generator is the one `gan-sample` uses (the moving average with its own batch-norm statistics, or the
raw G with ema=false), traced in eval mode, so batch norm applies its running statistics and the batch
size stays free. Inputs: `z` (batch, z_dim) float32, and `y` (batch,) int64 labels for a conditional
model. Before the command returns, the file is loaded back and checked against the eager generator at a
batch size other than the traced one.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan_cli.checkpoint import load_generator
from gan_cli.commands import parse_args, run_command
from gan_cli.device import resolve_device
from gan_cli.errors import ConfigError, GanCliError
from gan_cli.models import label_classes

log = logging.getLogger("gan_cli")

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-4  # largest difference from the eager generator the check accepts


@dataclass
class ExportArgs:
    format: str = "torchscript"  # torchscript | onnx
    out: str | None = None  # file written (default: generator.pt, or generator.onnx)
    ema: bool = True  # the moving-average generator when the checkpoint has one (false: the raw G)
    device: str = "cpu"  # where the file's weights live and the trace runs (cpu loads anywhere)


class Sampler(nn.Module):
    """What a TorchScript file holds: images = G(z), with the noise width as an attribute (G.z_dim)."""

    def __init__(self, traced: nn.Module, z_dim: int) -> None:
        super().__init__()
        self.G = traced
        self.z_dim = z_dim
        self.num_classes = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)


class ConditionalSampler(nn.Module):
    """images = G(z, y) for labels y in 0..num_classes-1, with z_dim and num_classes as attributes."""

    def __init__(self, traced: nn.Module, z_dim: int, num_classes: int) -> None:
        super().__init__()
        self.G = traced
        self.z_dim = z_dim
        self.num_classes = num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.G(z, y)


class ExportError(GanCliError):
    pass


def example_inputs(n: int, z_dim: int, num_classes: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(n)
    z = torch.randn(n, z_dim, generator=gen).to(device)
    if not num_classes:
        return (z,)
    return z, (torch.arange(n) % num_classes).to(device)


def to_torchscript(
    G: nn.Module, inputs: tuple[torch.Tensor, ...], z_dim: int, num_classes: int, out: Path
) -> None:
    with warnings.catch_warnings():  # recent torch deprecates TorchScript; the file is what was asked for
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(G, inputs)
        wrapper = ConditionalSampler(traced, z_dim, num_classes) if num_classes else Sampler(traced, z_dim)
        torch.jit.save(torch.jit.script(wrapper), str(out))


def to_onnx(G: nn.Module, inputs: tuple[torch.Tensor, ...], out: Path) -> None:
    """torch.onnx's TorchScript-based exporter, with the batch dimension of every input and output free."""
    try:
        importlib.import_module("onnx")
    except ImportError as err:
        raise ConfigError(
            f"format=onnx needs the onnx package ({err}): pip install 'gan-cli[export]'"
        ) from err
    names = ["z", "y"][: len(inputs)]
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        G,
        inputs,
        str(out),
        input_names=names,
        output_names=["images"],
        dynamic_axes={name: {0: "batch"} for name in [*names, "images"]},
        **options,  # type: ignore[arg-type]
    )


def exported_outputs(fmt: str, out: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """What the written file computes for `inputs`, or None when onnxruntime is missing (no check)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():  # recent torch deprecates TorchScript; the file is what was asked for
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(out), map_location=inputs[0].device)(*inputs)
    try:
        import onnxruntime
    except ImportError:
        log.warning("onnxruntime is not installed, so %s was not checked: pip install 'gan-cli[export]'", out)
        return None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {name: x.cpu().numpy() for name, x in zip(["z", "y"], inputs, strict=False)}
    return torch.from_numpy(np.asarray(session.run(None, feed)[0]))


@torch.no_grad()
def export(argv: list[str]) -> Path:
    usage = "gan-export RUN_DIR_OR_CHECKPOINT [format=torchscript|onnx] [out=FILE] [ema=true] [device=cpu]"
    run, args = parse_args(argv, ExportArgs, usage)
    if args.format not in FORMATS:
        raise ConfigError(f"format={args.format!r} is not valid; allowed: {', '.join(FORMATS)}")
    device = resolve_device(args.device)
    G, cfg, state = load_generator(run, device, use_ema=args.ema)
    z_dim = int(cfg.model.z_dim)
    num_classes = label_classes(cfg.model, int(state.num_classes))
    out = Path(args.out or f"generator{FORMATS[args.format]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    traced_with = example_inputs(2, z_dim, num_classes, device)
    if args.format == "torchscript":
        to_torchscript(G, traced_with, z_dim, num_classes, out)
    else:
        to_onnx(G, traced_with, out)
    check = example_inputs(3, z_dim, num_classes, device)
    advice = (
        "its forward depends on the batch size or on Python control flow, which tracing cannot record; "
        "make it use -1 in reshapes and tensor operations for choices"
    )
    try:
        got = exported_outputs(args.format, out, check)
    except Exception as err:  # a size baked into the trace fails at another batch size
        out.unlink(missing_ok=True)
        raise ExportError(f"the export fails at batch size 3 (traced at 2): {err}; {advice}") from err
    if got is not None:
        gap = (got.float().cpu() - G(*check).float().cpu()).abs().max().item()
        if not gap <= TOLERANCE:
            out.unlink(missing_ok=True)
            raise ExportError(
                f"the export computes other images than the generator (largest difference {gap:.3g} at "
                f"batch size 3, traced at 2): {advice}"
            )
    inputs = f"z (batch, {z_dim}) float32" + (
        f", y (batch,) int64 in 0..{num_classes - 1}" if num_classes else ""
    )
    generator = "moving-average" if args.ema and state.G_ema is not None else "raw"
    log.info(
        "wrote the %s generator of %s (step %d) to %s; inputs: %s", generator, run, state.step, out, inputs
    )
    return out


def main() -> None:
    run_command(export)
