"""Eager against CUDA-graphed training: the same runs, step by step, must log the same numbers.

Each case trains a few steps twice from the same seed through `gan_cli.train.train`, once with
trainer.cuda_graphs=off and once with the graphed setting (logging every step), and compares every
logged scalar per step. The graphed run's first steps are its eager warm-up; the rest are replays of
the captured graph, whose noise comes from the same Philox stream as eager calls, so the two runs
differ only by floating-point reordering. cuDNN autotuning is off and cuDNN deterministic in both runs.
It also checks that the graphed run really was captured (or, for WGAN-GP, says which path it took).
Exits 1 if any comparison fails.

    python bench/compare_paths.py --data ../shared/data [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

KEYS = ["loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"]

# (name, overrides, graphed setting, must capture, relative tolerance)
CASES: list[tuple[str, list[str], str, bool, float]] = [
    ("mlp-28 fp32", ["model=mlp", "trainer.precision=32"], "on", True, 1e-3),
    ("dcgan-28 defaults (bf16, channels_last)", ["model=dcgan"], "on", True, 2e-2),
    (
        "dcgan-64 width 64 defaults",
        ["model=dcgan", "data.image_size=64", "model.g_width=64", "model.d_width=64"],
        "on",
        True,
        2e-2,
    ),
    (
        "dcgan-28 fp32 hinge, n_critic 2",
        ["model=dcgan", "loss=hinge", "loss.n_critic=2", "trainer.precision=32"],
        "on",
        True,
        1e-3,
    ),
    (
        "dcgan-28 fp32 wgan_gp (double backward)",
        ["model=dcgan", "loss=wgan_gp", "trainer.precision=32"],
        "auto",
        False,
        1e-3,
    ),
]


def compose_cfg(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def run(
    root: str, steps: int, overrides: list[str], graphs: str, device: str = "cuda"
) -> tuple[list[dict[str, Any]], list[str]]:
    from gan_cli.train import train

    messages: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    log = logging.getLogger("gan_cli")
    handler, level = Grab(logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = compose_cfg(
                [
                    "data=mnist",
                    f"data.root={root}",
                    "data.download=false",
                    f"trainer.device={device}",
                    "trainer.batch_size=64",
                    f"trainer.steps={steps}",
                    "trainer.epochs=null",
                    "trainer.cudnn_benchmark=false",
                    "trainer.checkpoint_every=0",
                    f"trainer.cuda_graphs={graphs}",
                    "logger.log_every=1",
                    "logger.sample_every=0",
                    "logger.backends=[]",
                    "logger.progress=false",
                    *overrides,
                ]
            )
            train(cfg, out)
            records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    return records, [m for m in messages if "training step" in m]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder with MNIST/raw (torchvision layout)")
    ap.add_argument("--steps", type=int, default=12, help="steps per run (3 eager warm-up, then replays)")
    ap.add_argument(
        "--device", default="cuda", help="cuda, or cpu to try the script itself (both runs eager)"
    )
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("compare_paths: CUDA is not available; nothing to compare")
        return 1
    root = str(Path(args.data).expanduser().resolve())
    torch.backends.cudnn.deterministic = True
    where = torch.cuda.get_device_name() if cuda else "cpu (no graphs: a check of the script only)"
    print(f"# eager vs graphed on {where}; torch {torch.__version__}; {args.steps} steps")
    failed = 0
    for name, overrides, graphs, must_capture, rtol in CASES:
        try:
            if not cuda:
                graphs, must_capture = "auto", False
            eager, _ = run(root, args.steps, overrides, "off", args.device)
            graphed, paths = run(root, args.steps, overrides, graphs, args.device)
        except Exception as err:  # report and go on with the next case
            traceback.print_exc()
            print(f"FAIL {name}: {type(err).__name__}: {err}")
            failed += 1
            continue
        captured = any("captured" in m for m in paths)
        worst, where = 0.0, ""
        ok = len(eager) == len(graphed) == args.steps
        for a, b in zip(eager, graphed, strict=False):
            for key in KEYS:
                x, y = float(a[key]), float(b[key])
                if not (math.isfinite(x) and math.isfinite(y)):
                    ok, where = False, f"step {a['step']} {key}: {x} vs {y}"
                    continue
                rel = abs(x - y) / max(abs(x), abs(y), 1e-3)
                if rel > worst:
                    worst, where = rel, f"step {a['step']} {key}: {x:.6g} vs {y:.6g}"
        ok = ok and worst <= rtol and (captured or not must_capture)
        failed += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {name}: max relative difference {worst:.2e} (tolerance {rtol:g}) "
            f"at {where}; graphed run: {' / '.join(paths) or 'no path logged'}"
        )
        last_e, last_g = eager[-1], graphed[-1]
        print(
            f"     last step loss/D {last_e['loss/D']:.6f} vs {last_g['loss/D']:.6f}, "
            f"loss/G {last_e['loss/G']:.6f} vs {last_g['loss/G']:.6f}"
        )
    print(f"# {len(CASES) - failed} of {len(CASES)} cases agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
