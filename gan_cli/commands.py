"""The `gan-sample` and `gan-eval` commands: a trained run (or checkpoint) in, pictures or numbers out.

Both take the run directory or checkpoint first, then `key=value` settings (checked against the
dataclasses below, so a misspelt key fails with the list of known ones).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_cli.device import resolve_device
from gan_cli.errors import ConfigError, GanCliError
from gan_cli.checkpoint import load_generator as generator_from_checkpoint
from gan_cli.evaluation import balanced_labels, grid_labels
from gan_cli.models import label_classes
from gan_cli.metrics import Evaluation, evaluate
from gan_cli.metrics.reference import generate, real_set, to_uint8
from gan_cli.samples import image_grid, save_png

log = logging.getLogger("gan_cli")


@dataclass
class SampleArgs:
    n: int = 64  # images (a conditional grid without `label` rounds this to whole rows, one per class)
    out: str = "grid.png"  # file written: a PNG grid, or an .npz array with format=npz
    format: str = "png"  # png | npz (images as uint8 N x H x W x C, plus labels when conditional)
    label: int | None = None  # conditional models: every image of this class
    interpolate: bool = False  # rows of a latent interpolation (spherical) between two noise vectors
    seed: int = 0  # seeds the noise
    ema: bool = True  # use the moving-average generator when the checkpoint has one
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


@dataclass
class EvalArgs:
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid"])  # fid | kid | precision | recall | ...
    n: int = 10000  # generated images
    reference: str = "test"  # test | train: the real split they are compared with
    real: int = 10000  # real images in the reference set (at most the split's size)
    out: str | None = None  # JSON written (default: eval/step_NNNNNN.json in the run directory)
    seed: int = 0  # seeds the noise
    ema: bool = True  # use the moving-average generator when the checkpoint has one
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    data: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of the run's data config, e.g. data.root=PATH


def parse_args(argv: list[str], schema: type, usage: str) -> tuple[str, DictConfig]:
    if not argv or argv[0] in ("-h", "--help") or "=" in argv[0]:
        raise ConfigError(f"usage: {usage}")
    try:
        args = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv[1:]))
    except OmegaConfBaseException as err:
        known = ", ".join(f.name for f in fields(schema))
        raise ConfigError(f"{str(err).splitlines()[0]}; known settings: {known}") from err
    assert isinstance(args, DictConfig)
    return argv[0], args


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
    usage = (
        "gan-sample RUN_DIR_OR_CHECKPOINT [n=64] [out=grid.png] [format=png|npz] [label=K] "
        "[interpolate=true] [seed=0]"
    )
    run, args = parse_args(argv, SampleArgs, usage)
    if args.format not in ("png", "npz"):
        raise ConfigError(f"format={args.format!r} is not valid; allowed: png, npz")
    if args.n < 1:
        raise ConfigError(f"n={args.n} is not valid; it must be >= 1")
    device = resolve_device(args.device)
    G, cfg, state = generator_from_checkpoint(run, device, use_ema=args.ema)
    if len(state["data_shape"]) != 3:
        raise ConfigError(f"{run} was trained on points, not images; its samples are in its samples/ folder")
    num_classes = label_classes(cfg.model, int(state.get("num_classes", 0)))
    z_dim = int(cfg.model.z_dim)
    gen = torch.Generator().manual_seed(int(args.seed))
    n, nrow = int(args.n), None
    labels = _labels(args, n, num_classes)
    if args.interpolate:
        nrow = max(2, round(math.sqrt(n)))  # images per path
        rows = max(1, n // nrow)
        z = interpolation_noise(rows, nrow, z_dim, gen)
        if num_classes and labels is None:
            labels = (torch.arange(rows) % num_classes).repeat_interleave(nrow)
        labels = labels[: len(z)] if labels is not None else None
        images = torch.cat(
            [to_uint8(G(c.to(device), None if y is None else y.to(device))) for c, y in _chunks(z, labels)]
        )
    else:
        if num_classes and labels is None:
            labels, nrow = (
                grid_labels(n, num_classes)
                if args.format == "png"
                else (balanced_labels(n, num_classes), None)
            )
        images = generate(
            G, len(labels) if labels is not None else n, z_dim, device, labels=labels, seed=int(args.seed)
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "npz":
        arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    else:
        save_png(image_grid(images.float().div(127.5).sub(1), nrow), out)
    log.info("wrote %d images to %s", len(images), out)
    return out


def _chunks(
    z: torch.Tensor, labels: torch.Tensor | None, size: int = 500
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [
        (z[i : i + size], labels[i : i + size] if labels is not None else None)
        for i in range(0, len(z), size)
    ]


def evaluate_run(argv: list[str]) -> dict[str, Any]:
    usage = (
        "gan-eval RUN_DIR_OR_CHECKPOINT [metrics=[fid,kid]] [n=10000] [reference=test] [out=FILE.json] "
        "[data.root=PATH]; metrics: fid kid precision recall density coverage intra_fid classifier"
    )
    run, args = parse_args(argv, EvalArgs, usage)
    if args.n < 2 or args.real < 2:
        raise ConfigError("n= and real= must be at least 2")
    device = resolve_device(args.device)
    G, cfg, state = generator_from_checkpoint(run, device, use_ema=args.ema)
    if len(state["data_shape"]) != 3:
        raise ConfigError(f"{run} was trained on points; gan-eval measures image generators")
    data_cfg = OmegaConf.merge(cfg.data, args.data)
    assert isinstance(data_cfg, DictConfig)
    num_classes = label_classes(cfg.model, int(state.get("num_classes", 0)))
    labels = balanced_labels(int(args.n), num_classes) if num_classes else None
    real = real_set(data_cfg, str(args.reference), int(args.real))
    log.info("generating %d images", args.n)
    fake = generate(G, int(args.n), int(cfg.model.z_dim), device, labels=labels, seed=int(args.seed))
    ev = Evaluation(fake=fake, real=real, device=device, fake_labels=labels)
    values = {k.removeprefix("metrics/"): v for k, v in evaluate(list(args.metrics), ev).items()}
    record = {
        "checkpoint": str(Path(run).resolve()),
        "step": int(state["step"]),
        "generator": "ema" if args.ema and "G_ema" in state else "raw",
        "n_generated": int(args.n),
        "reference": f"{real.key} ({len(real.images)} images)",
        **values,
    }
    run_dir = Path(run) if Path(run).is_dir() else Path(run).resolve().parent.parent
    out = Path(args.out) if args.out else run_dir / "eval" / f"step_{int(state['step']):06d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    width = max(len(k) for k in values)
    print(f"{'metric':<{width}}  value")
    for k, v in values.items():
        print(f"{k:<{width}}  {v:.6g}")
    print(f"(written to {out})")
    return record


@dataclass
class ClassifierArgs:
    root: str = "./data"  # folder holding the data set in torchvision's layout
    image_size: int = 28  # resolution (use the generator's: its images are resized to this)
    epochs: int | None = None  # passes over the training split (default: 2 for mnist, 4 otherwise)
    seed: int = 0  # seeds the initialisation and the batch order
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out: str | None = None  # file written (default: the cache, where the classifier metrics look)


def classifier(argv: list[str]) -> dict[str, Any]:
    from gan_cli.metrics.classifier import DEFAULT_EPOCHS, train_classifier

    usage = "gan-classifier mnist|fashion_mnist|cifar10 [root=./data] [image_size=28] [epochs=2]"
    dataset, args = parse_args(argv, ClassifierArgs, usage)
    if dataset not in ("mnist", "fashion_mnist", "cifar10"):
        raise ConfigError(f"no domain classifier for {dataset!r}; allowed: mnist, fashion_mnist, cifar10")
    result = train_classifier(
        dataset,
        str(args.root),
        int(args.image_size),
        resolve_device(args.device),
        epochs=int(args.epochs) if args.epochs is not None else DEFAULT_EPOCHS.get(dataset, 4),
        seed=int(args.seed),
        out=args.out,
    )
    print(f"{dataset}: test accuracy {result['test_accuracy']:.4f}, saved to {result['path']}")
    return result


def _main(fn: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        fn(sys.argv[1:])
    except GanCliError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def sample_main() -> None:
    _main(sample)


def eval_main() -> None:
    _main(evaluate_run)


def classifier_main() -> None:
    _main(classifier)
