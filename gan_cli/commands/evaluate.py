"""`gan-eval RUN [key=value ...]`: FID, KID and the other metrics of a trained generator, as JSON."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan_cli.checkpoint import load_generator
from gan_cli.commands import parse_args, run_command
from gan_cli.config import check_seed
from gan_cli.device import resolve_device
from gan_cli.errors import ConfigError, GanCliError
from gan_cli.evaluation import balanced_labels
from gan_cli.metrics import Evaluation, evaluate
from gan_cli.metrics.reference import generate, real_set
from gan_cli.models import label_classes

log = logging.getLogger("gan_cli")


@dataclass
class EvalArgs:
    metrics: list[str] = field(
        default_factory=lambda: ["fid", "kid"]
    )  # any of fid kid precision recall density coverage intra_fid classifier
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


def evaluate_run(argv: list[str]) -> dict[str, Any]:
    usage = "gan-eval RUN_DIR_OR_CHECKPOINT [key=value ...], e.g. gan-eval RUN metrics=[fid,kid] n=10000"
    run, args = parse_args(argv, EvalArgs, usage)
    if args.n < 2 or args.real < 2:
        raise ConfigError("n= and real= must be at least 2")
    check_seed(args.seed, "seed")
    device = resolve_device(args.device)
    G, cfg, state = load_generator(run, device, use_ema=args.ema)
    if len(state.data_shape) != 3:
        raise ConfigError(f"{run} was trained on points; gan-eval measures image generators")
    data_cfg = OmegaConf.merge(cfg.data, args.data)
    assert isinstance(data_cfg, DictConfig)
    num_classes = label_classes(cfg.model, int(state.num_classes))
    labels = balanced_labels(int(args.n), num_classes) if num_classes else None
    real = real_set(data_cfg, str(args.reference), int(args.real))
    log.info("generating %d images", args.n)
    fake = generate(G, int(args.n), int(cfg.model.z_dim), device, labels=labels, seed=int(args.seed))
    ev = Evaluation(fake=fake, real=real, device=device, fake_labels=labels)
    values = {k.removeprefix("metrics/"): v for k, v in evaluate(list(args.metrics), ev).items()}
    record = {
        "checkpoint": str(Path(run).resolve()),
        "step": int(state.step),
        "generator": "ema" if args.ema and state.G_ema is not None else "raw",
        "n_generated": int(args.n),
        "reference": f"{real.key} ({len(real.images)} images)",
        **values,
    }
    run_dir = Path(run) if Path(run).is_dir() else Path(run).resolve().parent.parent
    out = Path(args.out) if args.out else run_dir / "eval" / f"step_{int(state.step):06d}.json"
    width = max(len(k) for k in values)
    print(f"{'metric':<{width}}  value")  # first: a file that cannot be written does not lose them
    for k, v in values.items():
        print(f"{k:<{width}}  {v:.6g}", flush=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise GanCliError(
            f"cannot write {out}: {err.strerror or err}. The metrics are printed above; to keep them as "
            "JSON, run again with out=PATH in a folder you can write"
        ) from err
    print(f"(written to {out})")
    return record


def main() -> None:
    run_command(evaluate_run)
