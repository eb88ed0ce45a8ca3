"""Turning generator output into pictures: image grids, and scatter plots for 2-D points."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from gan_cli.errors import writing


def image_grid(x: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """A batch in [-1, 1] -> one uint8 (3, H, W) grid."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    nrow = nrow or max(1, int(math.sqrt(x.shape[0])))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    return grid.mul(255).round().to(torch.uint8)


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
