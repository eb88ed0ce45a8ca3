"""Seconds per epoch of the default MNIST runs (`model=mlp` and `model=dcgan`) on this machine.

Usage: python bench/epoch_time.py --data ../shared/data [--models mlp dcgan] [--epochs 1] [--overrides K=V]
Times the training loop only (data loading and start-up excluded) through the real `train(cfg, run_dir)`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile

import torch
from hydra import compose, initialize_config_module

import gan_cli.cli  # noqa: F401  (registers the schemas)
from gan_cli.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder holding MNIST/raw (torchvision layout)")
    parser.add_argument("--models", nargs="+", default=["mlp", "dcgan"])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="extra gan-train overrides, e.g. trainer.precision=32"
    )
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    for model in args.models:
        with (
            tempfile.TemporaryDirectory() as out,
            initialize_config_module("gan_cli.configs", version_base="1.3"),
        ):
            cfg = compose(
                "train",
                overrides=[
                    f"model={model}",
                    f"data.root={args.data}",
                    "data.download=false",
                    f"trainer.epochs={args.epochs}",
                    f"trainer.device={args.device}",
                    "logger.sample_every=0",
                    "logger.log_every=100",
                    "trainer.checkpoint_every=0",
                    *args.overrides,
                ],
            )
            result = train(cfg, out)
        per_epoch = result["wall_s"] / result["epoch"]
        print(
            f"model={model} {' '.join(args.overrides)}: {result['step']} steps, {result['epoch']:.3f} epochs "
            f"in {result['wall_s']:.1f} s "
            f"-> {per_epoch:.1f} s/epoch, {result['perf/images_per_s_mean']:.0f} images/s"
        )


if __name__ == "__main__":
    main()
