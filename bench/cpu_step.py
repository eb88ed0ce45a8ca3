"""What the default DCGAN step on MNIST reaches on a CPU, against what the CPU's matrix kernels reach.

For each variant (overrides on top of the default MNIST run) the real `train(cfg, run_dir)` runs; one step
after the warm-up is counted with torch's FLOP counter (both updates: D's, then G's; with a lazy R1 the mean
of the steps of one period, its R1 update included), then steps are timed
over a window of `--seconds`. The peak is a 2048x2048 matmul in bf16 and in fp32 with the same threads,
timed in the same process. Cases are interleaved over `--repeat` rounds; the table gives medians.

    python bench/cpu_step.py --data ../shared/data --seconds 20 --repeat 2
    python bench/cpu_step.py --data ../shared/data --cases default compile batch-256
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import UNTIL_STOPPED, Clock, Stop, compose_cfg  # noqa: E402  (the same clock as bench/throughput.py)

PLAIN = ["model.conditional=false", "loss.r1_gamma=0"]
# name -> overrides on top of the default MNIST run (batch 64, Adam 4e-4, bf16 where the CPU has it)
CASES: dict[str, list[str]] = {
    "default": [],  # class-conditional on MNIST, R1 gamma 0.3 as one more D update every 16th step
    "plain": PLAIN,  # unconditional, no R1: the default before labels and R1
    "r1-lazy": [*PLAIN, "loss.r1_gamma=1", "loss.reg_every=4"],  # R1 every 4th step
    "r1-lazy-16": [*PLAIN, "loss.r1_gamma=0.3", "loss.reg_every=16"],  # R1 every 16th step
    "conditional": ["model.conditional=true", "loss.r1_gamma=0"],  # labels in G's norms, projection D
    "conditional-r1-lazy-16": ["model.conditional=true", "loss.r1_gamma=0.3", "loss.reg_every=16"],
    "fp32": ["trainer.precision=32"],
    "channels-last": ["trainer.channels_last=true"],
    "contiguous": ["trainer.channels_last=false"],
    "compile": ["trainer.compile=true"],
    "batch-32": ["trainer.batch_size=32", "optimizer.lr=2.83e-4"],  # rate scaled by sqrt(batch ratio)
    "batch-128": ["trainer.batch_size=128", "optimizer.lr=5.66e-4"],
    "batch-256": ["trainer.batch_size=256", "optimizer.lr=8e-4"],
    "compile-batch-256": ["trainer.compile=true", "trainer.batch_size=256", "optimizer.lr=8e-4"],
    "g-first-convtranspose": [],  # the defaults, G's first layer run by torch's transposed convolution
}


@contextlib.contextmanager
def first_layer_as_convtranspose() -> Any:
    """G's first layer (DenseStart, a matrix product) computed by nn.ConvTranspose2d instead."""
    from gan_cli.models.dcgan import DenseStart

    saved = DenseStart.forward
    DenseStart.forward = torch.nn.ConvTranspose2d.forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        DenseStart.forward = saved  # type: ignore[method-assign]


# cases that change code rather than the config: name -> context manager around the run
PATCHES: dict[str, Callable[[], Any]] = {"g-first-convtranspose": first_layer_as_convtranspose}


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of an n x n matmul in `dtype` with torch's current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - t0) / 1e9


class _GlobalOnly:
    """Stands in for the FLOP counter's module tracker, whose hooks break the R1/R2 penalty's double
    backward (torch.autograd.grad refuses them); the counter then keeps only its total."""

    parents = {"Global"}

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def run_case(root: str, overrides: list[str], seconds: float, warmup: int) -> dict[str, Any]:
    """Train with `overrides` until the window is timed; return images/s, steps/s and FLOP per step."""
    from gan_cli.config import r1_gamma
    from gan_cli.logger import NullLogger
    from gan_cli.step import reg_interval
    from gan_cli.train import train

    cfg = compose_cfg(
        [
            "data=mnist",
            f"data.root={root}",
            "data.download=false",
            "trainer.device=cpu",
            *UNTIL_STOPPED,
            *overrides,
        ]
    )
    batch = int(cfg.trainer.batch_size)
    clock = Clock(torch.device("cpu"), warmup, seconds, 3, batch)
    # a lazy R1/R2 phase runs on one step in `period`: count that many steps and take their mean
    penalised = r1_gamma(cfg.loss, cfg.data) > 0 or float(cfg.loss.r2_gamma) > 0
    period = reg_interval(cfg.loss.reg_every, graphed=False) if penalised else 1
    counted: dict[str, float] = {"gflop": 0.0}
    calls = 0

    def count_once(step: Callable[..., Any]) -> Callable[..., Any]:
        def counted_step(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if not warmup <= calls < warmup + period:  # after the first-call costs, before the window
                return step(*args, **kwargs)
            flops = FlopCounterMode(display=False)
            flops.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
            with flops:
                out = step(*args, **kwargs)
            counted["gflop"] += flops.get_total_flops() / 1e9 / period
            return out

        return counted_step

    class Ticks(NullLogger):
        def advance(self, step: int) -> None:
            clock.tick(step)

    clock.start()
    # the clock ends the run (Stop) once the window is timed
    with tempfile.TemporaryDirectory() as run_dir, contextlib.suppress(Stop):
        train(cfg, run_dir, loggers=[], progress=Ticks(), wrap_step=count_once)
    steps_per_s = clock.rate / batch
    gflop = counted["gflop"] if calls >= warmup + period else float("nan")
    return {
        "batch": batch,
        "images_per_s": clock.rate,
        "steps_per_s": steps_per_s,
        "gflop_per_step": gflop,
        "gflop_per_s": gflop * steps_per_s,
        "first_step_s": clock.first_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder with MNIST/raw")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--seconds", type=float, default=20.0, help="timed window per case")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps (compile happens in the first)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the cases, interleaved")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", default=None, help="append the rows as JSON lines to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = str(Path(args.data).expanduser().resolve())
    if not (Path(root) / "MNIST" / "raw").is_dir():
        ap.error(f"{root}/MNIST/raw does not exist; pass --data pointing at a folder that holds MNIST/raw")
    import logging

    logging.getLogger("gan_cli").setLevel(logging.WARNING)
    threads = torch.get_num_threads()
    print(
        f"# {os.cpu_count()}-core CPU; torch {torch.__version__}; threads {threads}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    peak = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    print(f"# 2048x2048 matmul: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f} GFLOP/s", flush=True)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in args.cases}
    for _ in range(args.repeat):
        for name in args.cases:
            with PATCHES.get(name, contextlib.nullcontext)():
                row = run_case(root, CASES[name], args.seconds, args.warmup)
            rows[name].append(row)
            print(f"{name:<20} " + json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    print("\n| case | overrides | batch | images/s | steps/s | GFLOP/step | GFLOP/s | of bf16 peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, got in rows.items():
        med = {k: statistics.median(r[k] for r in got) for k in got[0]}
        print(
            f"| {name} | {' '.join(CASES[name]) or '(defaults)'} | {med['batch']:.0f} "
            f"| {med['images_per_s']:,.0f} "
            f"| {med['steps_per_s']:.1f} | {med['gflop_per_step']:.2f} | {med['gflop_per_s']:.0f} "
            f"| {med['gflop_per_s'] / peak['bf16']:.0%} |"
        )
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps({"case": name, "runs": got, "peak": peak, "threads": threads}) + "\n")


if __name__ == "__main__":
    main()
