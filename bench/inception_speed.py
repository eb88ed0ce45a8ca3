"""Throughput of the FID feature network (Inception-v3 at 299x299) on this machine: how long an
evaluation of N images will take. Run: python bench/inception_speed.py --images 200 --device cpu"""

from __future__ import annotations

import argparse
import time

import torch

from gan_cli.metrics import FEATURES
from gan_cli.metrics.base import extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    net = FEATURES.get("inception")(device)
    load = time.perf_counter() - t0
    images = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8)
    extract(net, images[: net.batch_size], device)  # warm-up
    t0 = time.perf_counter()
    extract(net, images, device)
    seconds = time.perf_counter() - t0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}: load {load:.1f} s, "
        f"{args.images} images of 28x28 in {seconds:.1f} s = {seconds / args.images * 1000:.0f} ms/image"
    )


if __name__ == "__main__":
    main()
