"""Turning generator output into pictures: image grids, and scatter plots for 2-D points."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_cli.errors import writing


def image_grid(x: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """A batch in [-1, 1] -> one uint8 (3, H, W) grid."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    nrow = nrow or max(1, int(math.sqrt(x.shape[0])))
    grid = tile(x, nrow, padding=2, pad_value=1.0)
    return grid.mul(255).round().to(torch.uint8)


def tile(x: torch.Tensor, nrow: int, padding: int, pad_value: float) -> torch.Tensor:
    """(N, C, H, W) -> one (3, H', W') picture, `nrow` images a row with `padding` pixels between and
    around them (gray images repeated to RGB): torchvision's grid layout, without importing torchvision."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    n, c, h, w = x.shape
    if n == 1:
        return x[0]
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    cell_h, cell_w = h + padding, w + padding
    grid = x.new_full((c, rows * cell_h + padding, cols * cell_w + padding), pad_value)
    for i in range(n):
        top, left = (i // cols) * cell_h + padding, (i % cols) * cell_w + padding
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def scatter_plot(
    fake: torch.Tensor, real: torch.Tensor, size: int = 320, extent: float | None = None
) -> torch.Tensor:
    """Generated points (red) over real ones (grey) on a white square -> uint8 (3, size, size)."""
    fake_np, real_np = fake.detach().float().cpu().numpy(), real.detach().float().cpu().numpy()
    if extent is None:
        extent = float(np.abs(real_np).max()) * 1.25 + 1e-6
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    for pts, colour in ((real_np, (170, 170, 170)), (fake_np, (220, 30, 30))):
        pix = ((pts / extent + 1) / 2 * (size - 1)).round().astype(np.int64)
        cols, rows = pix[:, 0], size - 1 - pix[:, 1]
        keep = (cols >= 1) & (cols < size - 1) & (rows >= 1) & (rows < size - 1)
        cols, rows = cols[keep], rows[keep]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                canvas[rows + dr, cols + dc] = colour
    mid = size // 2
    canvas[mid, :] = np.minimum(canvas[mid, :], 225)
    canvas[:, mid] = np.minimum(canvas[:, mid], 225)
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous()


def save_gif(pictures: list[torch.Tensor], path: Path, fps: float) -> None:
    """An animated GIF, one picture a frame, looping forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pictures]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)


def save_png(picture: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) picture as a PNG: to a temporary file renamed into place, so a failed write
    (a full disk) leaves no partial image, and is an OutputError naming the file."""
    arr = picture.permute(1, 2, 0).numpy()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    kept = f"no partial image is left; the images written before in {path.parent} are kept"
    with writing(path, kept):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
