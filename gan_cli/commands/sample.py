"""`gan-sample RUN [key=value ...]`: a grid, an array or a latent walk (a grid of paths, or an animated
GIF) from a trained generator, with optional truncation of the noise."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from gan_cli.checkpoint import load_generator
from gan_cli.commands import parse_args, run_command
from gan_cli.config import check_seed
from gan_cli.device import resolve_device
from gan_cli.errors import ConfigError, GanCliError
from gan_cli.evaluation import balanced_labels, grid_labels
from gan_cli.metrics.reference import generate, run_generator, to_uint8
from gan_cli.models import label_classes
from gan_cli.samples import image_grid, save_gif, save_png

log = logging.getLogger("gan_cli")


@dataclass
class SampleArgs:
    n: int = 64  # images (a conditional grid without `label` rounds this to whole rows, one per class)
    out: str = "grid.png"  # file written: a PNG grid, an .npz array, or a GIF
    format: str = "png"  # png | npz (images as uint8 N x H x W x C, plus labels when conditional) | gif
    label: int | None = None  # conditional models: every image of this class
    interpolate: bool = False  # rows of a latent interpolation (spherical) between two noise vectors
    truncation: float = 1.0  # psi in (0, 1]: the noise is scaled by psi, toward its mean (1: plain sampling)
    frames: int = 24  # format=gif: frames of the walk (n images each, each walking its own path)
    fps: float = 12.0  # format=gif: frames per second
    seed: int = 0  # seeds the noise
    ema: bool = True  # use the moving-average generator when the checkpoint has one
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (Gaussian noise keeps its norm along the path)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega).clamp_min(1e-8)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_noise(rows: int, steps: int, z_dim: int, gen: torch.Generator) -> torch.Tensor:
    """(rows * steps, z_dim) noise: each row a spherical path between two random vectors."""
    ends = torch.randn(2, rows, z_dim, generator=gen)
    t = torch.linspace(0, 1, steps).repeat(rows)[:, None]
    return slerp(ends[0].repeat_interleave(steps, 0), ends[1].repeat_interleave(steps, 0), t)


def _labels(args: DictConfig, n: int, num_classes: int) -> torch.Tensor | None:
    if args.label is None:
        return None
    if num_classes == 0:
        raise ConfigError("label= only applies to conditional models (trained with model.conditional=true)")
    if not 0 <= args.label < num_classes:
        raise ConfigError(f"label={args.label} is not valid; this model has classes 0..{num_classes - 1}")
    return torch.full((n,), int(args.label), dtype=torch.long)


@torch.no_grad()
def sample(argv: list[str]) -> Path:
    usage = "gan-sample RUN_DIR_OR_CHECKPOINT [key=value ...], e.g. gan-sample RUN n=64 out=grid.png"
    run, args = parse_args(argv, SampleArgs, usage)
    if args.format not in ("png", "npz", "gif"):
        raise ConfigError(f"format={args.format!r} is not valid; allowed: png, npz, gif")
    if args.n < 1:
        raise ConfigError(f"n={args.n} is not valid; it must be >= 1")
    if not 0 < args.truncation <= 1:
        raise ConfigError(
            f"truncation={args.truncation} is not valid; give psi in (0, 1]: 1 samples plainly, smaller "
            "values scale the noise toward its mean (more typical images, less variety)"
        )
    if args.format == "gif" and not args.interpolate:
        raise ConfigError("format=gif draws a latent walk: add interpolate=true (or use format=png)")
    if args.format == "gif" and (args.frames < 2 or not args.fps > 0):
        raise ConfigError(f"frames={args.frames} fps={args.fps} is not valid; give frames >= 2 and fps > 0")
    check_seed(args.seed, "seed")
    device = resolve_device(args.device)
    G, cfg, state = load_generator(run, device, use_ema=args.ema)
    if len(state.data_shape) != 3:
        raise ConfigError(f"{run} was trained on points, not images; its samples are in its samples/ folder")
    num_classes = label_classes(cfg.model, int(state.num_classes))
    z_dim = int(cfg.model.z_dim)
    gen = torch.Generator().manual_seed(int(args.seed))
    n, nrow, psi = int(args.n), None, float(args.truncation)
    labels = _labels(args, n, num_classes)
    out = Path(args.out)
    if args.format == "gif":
        return walk_gif(G, args, labels, num_classes, z_dim, gen, device, out)
    if args.interpolate:
        nrow = max(2, round(math.sqrt(n)))  # images per path
        rows = max(1, n // nrow)
        z = interpolation_noise(rows, nrow, z_dim, gen) * psi
        if num_classes and labels is None:
            labels = (torch.arange(rows) % num_classes).repeat_interleave(nrow)
        labels = labels[: len(z)] if labels is not None else None
        images = torch.cat([to_uint8(x) for x in run_generator(G, _chunks(z, labels), device)])
    else:
        if num_classes and labels is None:
            labels, nrow = (
                grid_labels(n, num_classes)
                if args.format == "png"
                else (balanced_labels(n, num_classes), None)
            )
        count = len(labels) if labels is not None else n
        images = generate(G, count, z_dim, device, labels=labels, seed=int(args.seed), truncation=psi)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "npz":
            arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
            if labels is not None:
                arrays["labels"] = labels.numpy()
            np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        else:
            save_png(image_grid(images.float().div(127.5).sub(1), nrow), out)
    except OSError as err:
        raise GanCliError(
            f"cannot write out={out}: {err.strerror or err}; give a path in a folder you can write"
        ) from err
    log.info("wrote %d images to %s", len(images), out)
    return out


def walk_gif(
    G: torch.nn.Module,
    args: DictConfig,
    labels: torch.Tensor | None,
    num_classes: int,
    z_dim: int,
    gen: torch.Generator,
    device: torch.device,
    out: Path,
) -> Path:
    """An animated latent walk: every frame is a grid of `n` images, drawn as the PNG grid is, and each
    image follows its own spherical path between two noise vectors over the frames."""
    n, frames, nrow = int(args.n), int(args.frames), None
    if num_classes and labels is None:  # one row per class, as in the PNG grid
        labels, nrow = grid_labels(n, num_classes)
        n = len(labels)
    z = interpolation_noise(n, frames, z_dim, gen) * float(args.truncation)  # path after path
    y = labels.repeat_interleave(frames) if labels is not None else None
    images = torch.cat([to_uint8(x) for x in run_generator(G, _chunks(z, y), device)])
    by_frame = images.view(n, frames, *images.shape[1:]).transpose(0, 1)
    save_gif([image_grid(frame.float().div(127.5).sub(1), nrow) for frame in by_frame], out, float(args.fps))
    log.info("wrote a walk of %d frames of %d images to %s", frames, n, out)
    return out


def _chunks(
    z: torch.Tensor, labels: torch.Tensor | None, size: int = 500
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [
        (z[i : i + size], labels[i : i + size] if labels is not None else None)
        for i in range(0, len(z), size)
    ]


def main() -> None:
    run_command(sample)
