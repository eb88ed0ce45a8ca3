"""The quality bar: train the default DCGAN (and the original MLP GAN for comparison) for a fixed
wall-clock budget, then measure FID/KID (Inception-v3, generated vs the test split) and the domain
classifier's metrics, beside the same figures for real training images (the floor).

    python bench/quality.py --data ../shared/data --minutes 30 --n 5000

A folder of images (`--datasets image_folder --image-folder PATH --image-size 32`) is measured
against all its images; it has no second split, so no floor is reported for it. The presets
(`--setups small_data r3gan_cifar10 sngan_cifar10`) run with the data set and size given here.

`--ema-decays 0.9995 0.9999` keeps more moving averages of G beside the configured one through the same
run and measures each (0: the raw G), so one run compares decays; `--ema-ramp 5` gives those extra
averages another warm-up ramp, min(decay, (1 + t) / (ramp + t)), in place of the default 10.
`--metrics` with no name only trains; `--samples-out DIR` keeps each run's generated images (uint8
.npz, as `gan-sample format=npz` writes them), and `--score NPZ` measures such a file later, on a
machine that has the Inception weights (bench/gpu_r3gan.sh trains on a GPU and scores here).

Both sides use the same number of images for the floor: `--n` real training images vs the test
split, exactly as `--n` generated images vs the test split. Real-set features and classifiers are
cached (GAN_CLI_CACHE, default ~/.cache/gan_cli), so a second run only pays for the generated side.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module

import gan_cli.datasets
import gan_cli.losses
import gan_cli.models  # noqa: F401  (registrations)
from gan_cli.checkpoint import load_generator
from gan_cli.ema import EMA, RAMP
from gan_cli.evaluation import balanced_labels
from gan_cli.graphs import StepFn
from gan_cli.metrics import Evaluation, RealSet, evaluate
from gan_cli.metrics.classifier import DEFAULT_EPOCHS, classifier_path, train_classifier
from gan_cli.metrics.reference import generate, real_set
from gan_cli.models import label_classes
from gan_cli.step import TrainStep
from gan_cli.train import train

METRICS = ["fid", "kid", "classifier"]
# name -> overrides: ours (the defaults) and the original MLP GAN's setting (Adam with torch's default betas)
SETUPS = {
    "dcgan (default)": [],
    "mlp (seed config)": [
        "model=mlp",
        "loss=nonsaturating",
        "loss.r1_gamma=0",
        "optimizer.lr=2e-4",
        "optimizer.betas=[0.9,0.999]",
    ],
    "small_data": ["experiment=small_data"],
    "r3gan_cifar10": ["experiment=r3gan_cifar10"],
    "sngan_cifar10": ["experiment=sngan_cifar10"],
}


def measure(
    fake: torch.Tensor,
    data_cfg: Any,
    n_real: int,
    device: torch.device,
    fake_set: RealSet | None = None,
    metrics: list[str] = METRICS,
) -> dict[str, float]:
    ev = Evaluation(fake=fake, real=real_set(data_cfg, "test", n_real), device=device, fake_set=fake_set)
    return {k.removeprefix("metrics/"): v for k, v in evaluate(metrics, ev).items()}


def against_floor(scores: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """FID as a multiple of the real-data floor's, where both were measured."""
    return {"fid_x_floor": scores["fid"] / floor["fid"]} if "fid" in floor and "fid" in scores else {}


class Averages:
    """Moving averages of G with other decays, updated after every step of a run (`--ema-decays`)."""

    def __init__(self, decays: list[float], ramp: float) -> None:
        self.decays = decays
        self.ramp = ramp
        self.G: torch.nn.Module | None = None
        self.emas: dict[float, EMA] = {}

    def wrap(self, step: StepFn) -> StepFn:
        assert isinstance(step, TrainStep)
        nets = step.nets
        self.G = nets.ema.G if nets.ema is not None else nets.G
        self.emas = {d: EMA(self.G, d, self.ramp) for d in self.decays if d > 0}

        def stepped(batches: Any) -> torch.Tensor:
            out = step(batches)
            for ema in self.emas.values():
                ema.update()
            return out

        return stepped

    def generators(self, z_dim: int, device: torch.device, classes: int) -> dict[float, torch.nn.Module]:
        """decay -> the network that samples for it (0: G itself, with its running statistics)."""
        if not self.decays:  # no --ema-decays: the run's step was not wrapped
            return {}
        assert self.G is not None, "the run has not started"
        nets = {d: ema.eval_model(z_dim, device, classes) for d, ema in self.emas.items()}
        return {0.0: self.G.eval(), **nets} if 0 in self.decays else nets


def data_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The data part of the gan-train command line for one --datasets entry."""
    if name == "image_folder":
        if not args.image_folder:
            raise SystemExit("--datasets image_folder needs --image-folder PATH (a folder of images)")
        return [
            "data=image_folder",
            f"data.root={args.image_folder}",
            f"data.image_size={args.image_size}",
            f"data.channels={args.channels}",
        ]
    return [f"data={name}", f"data.root={args.data}", "data.download=false", "data.image_size=28"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="./data", help="folder holding MNIST/ and FashionMNIST/")
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--image-folder", help="the folder --datasets image_folder trains on")
    parser.add_argument("--image-size", type=int, default=32, help="pixels a side for the folder")
    parser.add_argument("--channels", type=int, default=3, help="1 or 3 for the folder")
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per run")
    parser.add_argument("--n", type=int, default=5000, help="generated (and floor) images")
    parser.add_argument("--n-real", type=int, default=10000, help="test images in the reference")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="extra gan-train overrides for every setup"
    )
    parser.add_argument(
        "--metrics", nargs="*", default=METRICS, choices=METRICS, help="what to measure (none: only train)"
    )
    parser.add_argument("--samples-out", help="folder for each run's generated images (.npz)")
    parser.add_argument("--score", metavar="NPZ", help="measure these saved images instead of training")
    parser.add_argument(
        "--ema-decays",
        nargs="*",
        type=float,
        default=[],
        help="more moving averages of G to measure (0: raw G)",
    )
    parser.add_argument(
        "--ema-ramp",
        type=float,
        default=RAMP,
        help=f"warm-up ramp of the --ema-decays averages (default {RAMP:g})",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench/quality_runs", help="run folders and results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device(args.device)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    if "image_folder" in args.datasets and "classifier" in args.metrics:
        raise SystemExit("a folder has no train split for the domain classifier: pass --metrics fid kid")
    for name in args.datasets:
        group, *data_settings = data_overrides(name, args)
        with initialize_config_module("gan_cli.configs", version_base="1.3"):
            data_cfg = compose("train", overrides=[group, *data_settings]).data
        floor: dict[str, float] = {}
        if "classifier" in args.metrics and not classifier_path(name, 28).is_file():
            train_classifier(name, args.data, 28, device, epochs=DEFAULT_EPOCHS.get(name, 4))
        if args.score:
            images = torch.from_numpy(np.load(args.score)["images"]).permute(0, 3, 1, 2).contiguous()
            scores = measure(images, data_cfg, args.n_real, device, metrics=args.metrics)
            rows.append({"data": name, "what": f"{args.score} ({len(images)} images)", **scores})
            continue
        if "split" in data_cfg and args.metrics:
            train_set = real_set(data_cfg, "train", args.n)
            floor = measure(train_set.images, data_cfg, args.n_real, device, train_set, args.metrics)
            rows.append({"data": name, "what": f"real train images (floor), n={args.n}", **floor})
        for setup in args.setups:
            run_dir = out / f"{name}_{setup.split()[0]}"
            run_dir.mkdir(parents=True, exist_ok=True)
            overrides = [
                group,
                f"trainer.device={args.device}",
                "trainer.epochs=null",
                f"trainer.max_minutes={args.minutes}",
                "logger.progress=false",
                *SETUPS[setup],
                *data_settings,  # after the preset: its data settings give way
                *args.overrides,
            ]
            with initialize_config_module("gan_cli.configs", version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            t0 = time.perf_counter()
            averages = Averages(args.ema_decays, args.ema_ramp)
            result = train(cfg, run_dir, wrap_step=averages.wrap if args.ema_decays else None)
            minutes = (time.perf_counter() - t0) / 60
            scores = {}
            if args.metrics or args.samples_out:  # neither: no images to generate
                G, run_cfg, state = load_generator(run_dir, device)
                classes = label_classes(run_cfg.model, state.num_classes)  # conditional: every class equally
                labels = balanced_labels(args.n, classes) if classes else None
                fake = generate(G, args.n, int(run_cfg.model.z_dim), device, labels=labels, seed=1)
            if args.samples_out:
                npz = Path(args.samples_out) / f"{run_dir.name}_samples.npz"
                npz.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(npz, images=fake.permute(0, 2, 3, 1).numpy())
                logging.info("wrote %d generated images to %s", len(fake), npz)
            if args.metrics:
                scores = measure(fake, data_cfg, args.n_real, device, metrics=args.metrics)
            extras = averages.generators(int(cfg.model.z_dim), device, classes) if args.metrics else {}
            ramp = "" if args.ema_ramp == RAMP else f", ramp {args.ema_ramp:g}"
            for decay, net in extras.items():
                other = generate(net, args.n, int(cfg.model.z_dim), device, labels=labels, seed=1)
                other_scores = measure(other, data_cfg, args.n_real, device, metrics=args.metrics)
                what = " ".join([setup, *args.overrides, "(raw G)" if decay == 0 else f"(EMA {decay}{ramp})"])
                rows.append(
                    {"data": name, "what": what, **against_floor(other_scores, floor), **other_scores}
                )
            rows.append(
                {
                    "data": name,
                    "what": " ".join([setup, *args.overrides]),
                    "steps": result["step"],
                    "epochs": round(result["epoch"], 2),
                    "train_minutes": round(minutes, 1),
                    "images_per_s": round(result["perf/images_per_s_mean"], 1),  # the whole run, its end too
                    "images_per_s_last": round(result.get("perf/images_per_s", 0.0), 1),  # last logged steps
                    **against_floor(scores, floor),
                    **scores,
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    cols = ["fid", "kid", "classes_covered", "class_kl", "classifier_is", "classifier_fid"]
    print("| data | what | steps | img/s | FID | ×floor | KID | classes | class KL | clf IS | clf FID |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['fid_x_floor']:.1f}×" if "fid_x_floor" in r else ("1×" if "floor" in r["what"] else "-")
        vals = [f"{r[c]:.4g}" if c in r else "-" for c in cols]
        head = [r["data"], r["what"], r.get("steps", ""), r.get("images_per_s", ""), vals[0], ratio]
        print("| " + " | ".join(str(v) for v in [*head, *vals[1:]]) + " |")


if __name__ == "__main__":
    main()
