"""Training throughput of gan-train against two plain PyTorch loops, in one process on one device.

Baselines, written here as the plain loops they are:
  seed-mlp        the original MLP GAN script: DataLoader over torchvision MNIST with per-image
                  ToTensor/Normalize (no workers), G 100-256-784 tanh, D 784-256-1 sigmoid, BCELoss,
                  Adam 2e-4 with default betas, loss values read back every 100 steps.
  examples-dcgan  pytorch/examples' dcgan/main.py at 64x64 on MNIST: DataLoader with 2 workers and
                  per-image Resize(64)/ToTensor/Normalize, ngf = ndf = 64, BCELoss on sigmoid outputs,
                  label tensors, Adam 2e-4 betas (0.5, 0.999), five `.item()` reads every step.
Project runs call the real `gan_cli.train.train(cfg, run_dir)` (data resident on the device, the step chosen
by trainer.cuda_graphs / precision / channels_last defaults) with model=mlp or model=dcgan (widths 64,
the same network as pytorch/examples) at 28 and 64 pixels.

Every loop is timed the same way: the first step is timed from the start (data set, loader, models;
for the project the whole of train() up to its first step), then `--warmup` steps run untimed, then
steps are timed until `--seconds` have passed (and at least `--min-steps`), with a device sync at
both ends of the window. Peak memory per case: torch.cuda.max_memory_allocated on CUDA, the process's
peak RSS (VmHWM, reset before each case) on the CPU; DataLoader workers are separate processes and
not counted.

    python bench/throughput.py --data ../shared/data [--device cuda] [--batch-sizes 64 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


class Stop(Exception):
    """Raised by the clock to end a run once its timing window is complete."""


@dataclass
class Clock:
    """Times the first step from `start()`, then a window of steady-state steps after the warm-up."""

    device: torch.device
    warmup: int
    seconds: float
    min_steps: int
    images_per_step: int
    t0: float = 0.0
    first_s: float = math.nan
    t_window: float = 0.0
    window_start: int = 0
    rate: float = math.nan
    cpu_rate: float = math.nan  # images per second of this process's CPU time (robust to other load)
    steps: int = 0
    c_window: float = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def tick(self, step: int) -> None:
        """Call after every step (1-based); raises Stop when the window is done."""
        if step == 1:
            self.sync()
            self.first_s = time.perf_counter() - self.t0
        if step == 1 + self.warmup:
            self.sync()
            self.t_window, self.window_start = time.perf_counter(), step
            self.c_window = time.process_time()
            return
        if step > 1 + self.warmup:
            n = step - self.window_start
            if n >= self.min_steps and time.perf_counter() - self.t_window >= self.seconds:
                self.sync()
                self.steps = n
                self.rate = n * self.images_per_step / (time.perf_counter() - self.t_window)
                self.cpu_rate = n * self.images_per_step / max(time.process_time() - self.c_window, 1e-9)
                raise Stop


@dataclass
class Result:
    name: str
    batch: int
    size: int
    images_per_s: float = math.nan
    images_per_cpu_s: float = math.nan
    first_step_s: float = math.nan
    peak_mb: float = math.nan
    path: str = ""
    steps: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Baseline 1: the seed's MLP GAN script.


def seed_mlp_loop(root: str, batch: int, device: torch.device, clock: Clock) -> str:
    import torchvision
    import torchvision.transforms as T

    clock.start()
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    dataset = torchvision.datasets.MNIST(root, train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
    G = nn.Sequential(nn.Linear(100, 256), nn.ReLU(), nn.Linear(256, 784), nn.Tanh()).to(device)
    D = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid()).to(device)
    criterion = nn.BCELoss()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
    step = 0
    while True:
        for real, _ in loader:
            real = real.view(-1, 784).to(device)
            b = real.size(0)
            ones = torch.ones(b, 1, device=device)
            zeros = torch.zeros(b, 1, device=device)
            fake = G(torch.randn(b, 100, device=device))
            loss_d = criterion(D(real), ones) + criterion(D(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = criterion(D(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            step += 1
            if step % 100 == 0:
                _ = f"step {step} loss_D {loss_d.item():.4f} loss_G {loss_g.item():.4f}"
            clock.tick(step)


# ----------------------------------------------------------------------------------------------------
# Baseline 2: pytorch/examples dcgan/main.py (64x64, nc=1 for MNIST).


class ExamplesGenerator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ExamplesDiscriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def examples_weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)  # type: ignore[arg-type]
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)  # type: ignore[arg-type]
        nn.init.zeros_(m.bias)  # type: ignore[arg-type]


def examples_dcgan_loop(root: str, batch: int, device: torch.device, clock: Clock, workers: int = 2) -> str:
    import torchvision
    import torchvision.transforms as T

    clock.start()
    torch.backends.cudnn.benchmark = True
    dataset = torchvision.datasets.MNIST(
        root,
        train=True,
        download=False,
        transform=T.Compose([T.Resize(64), T.ToTensor(), T.Normalize((0.5,), (0.5,))]),
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    nz = 100
    netG = ExamplesGenerator(nz).to(device)
    netG.apply(examples_weights_init)
    netD = ExamplesDiscriminator().to(device)
    netD.apply(examples_weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = 0
    for epoch in range(1_000_000):
        for i, data in enumerate(loader, 0):
            netD.zero_grad()
            real_cpu = data[0].to(device)
            batch_size = real_cpu.size(0)
            label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(batch_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            _ = "[%d][%d/%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f D(G(z)): %.4f / %.4f" % (  # noqa: UP031  (as the original prints it)
                epoch,
                i,
                len(loader),
                errD.item(),
                errG.item(),
                D_x,
                D_G_z1,
                D_G_z2,
            )
            step += 1
            clock.tick(step)
    return "eager"


# ----------------------------------------------------------------------------------------------------
# The project: gan_cli.train.train(cfg, run_dir), timed through its per-step progress call.


# a run that trains until the clock stops it, spending its time on steps only (no logs, samples, checkpoints)
UNTIL_STOPPED = [
    "trainer.steps=100000000",
    "trainer.epochs=null",
    "trainer.checkpoint_every=0",
    "logger.log_every=100000000",
    "logger.sample_every=0",
    "logger.backends=[]",
    "logger.progress=false",
]


def compose_cfg(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def project_loop(
    root: str, batch: int, device: torch.device, clock: Clock, model: str, size: int, extra: list[str]
) -> str:
    import logging

    from gan_cli.logger import NullLogger
    from gan_cli.train import train

    class Ticks(NullLogger):
        """Told of every step: the clock counts the steps since the run started."""

        def __init__(self) -> None:
            self.first: int | None = None

        def advance(self, step: int) -> None:
            if self.first is None:
                self.first = step - 1
            clock.tick(step - self.first)

    widths = ["model.g_width=64", "model.d_width=64"] if model == "dcgan" else []
    messages: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Grab(logging.INFO)
    logger = logging.getLogger("gan_cli")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg(
            [
                "data=mnist",
                f"data.root={root}",
                "data.download=false",
                f"data.image_size={size}",
                f"model={model}",
                *widths,
                f"trainer.device={device}",
                f"trainer.batch_size={batch}",
                *UNTIL_STOPPED,
                *extra,
            ]
        )
        clock.start()
        try:
            train(cfg, out, loggers=[], progress=Ticks())
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
    steps = [m.split("training step: ", 1)[1] for m in messages if "training step: " in m]
    return "; ".join(steps)


# ----------------------------------------------------------------------------------------------------


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


DEFAULT_BACKENDS: dict[str, bool] = {}


def restore_backends() -> None:
    """Every case starts from torch's defaults (the project sets TF32 and cuDNN autotuning itself)."""
    torch.backends.cuda.matmul.allow_tf32 = DEFAULT_BACKENDS["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = DEFAULT_BACKENDS["cudnn_tf32"]
    torch.backends.cudnn.benchmark = DEFAULT_BACKENDS["cudnn_benchmark"]


def run_case(
    name: str, size: int, batch: int, device: torch.device, args: argparse.Namespace, body: Callable[..., str]
) -> Result:
    res = Result(name, batch, size)
    restore_backends()
    torch.manual_seed(0)
    reset_peak(device)
    warmup = args.warmup if args.warmup is not None else (8 if device.type == "cuda" else 2)
    clock = Clock(device, warmup, args.seconds, args.min_steps, batch)
    try:
        res.path = body(clock) or ""
        res.error = "the loop ended before its timing window was complete"
    except Stop:
        pass
    except Exception as err:  # one failing case must not stop the others
        res.error = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    if not res.error:
        res.images_per_s, res.images_per_cpu_s, res.steps = clock.rate, clock.cpu_rate, clock.steps
    res.first_step_s = clock.first_s
    res.peak_mb = peak_mb(device)
    return res


# Runs gan-train and writes its peak RSS (VmHWM of its own address space) to $PEAK_FILE at exit. The
# kernel's ru_maxrss of a child would also count the parent's memory at the fork before exec.
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open('/proc/self/status') as f:
        kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(os.environ['PEAK_FILE'], 'w') as out:
        out.write(kb)
atexit.register(_peak)
sys.argv = ['gan-train', *sys.argv[1:]]
runpy.run_module('gan_cli.cli', run_name='__main__')
"""


def default_rss_run(root: str, device: str) -> dict[str, Any]:
    """Peak RSS of a default `gan-train` MNIST run (default model, batch and precision; 30 steps),
    in a child process of its own (Linux: read from /proc)."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"data.root={root}",
            "data.download=false",
            f"trainer.device={device}",
            "trainer.steps=30",
            "trainer.epochs=null",
        ]
        peak_file = Path(out) / "peak_kb"
        env = {**os.environ, "PEAK_FILE": str(peak_file)}
        t0 = time.perf_counter()
        # cwd: a folder without a gan_cli/ in it, so the installed package is imported
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, *overrides, f"hydra.run.dir={out}/run"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=out,
            env=env,
        )
        wall = time.perf_counter() - t0
        peak = int(peak_file.read_text()) / 1024 if peak_file.is_file() else math.nan
    return {
        "command": "gan-train " + " ".join(overrides),
        "returncode": proc.returncode,
        "peak_rss_mb": peak,
        "wall_s": wall,
        "stderr_tail": (proc.stdout + proc.stderr)[-600:] if proc.returncode else "",
    }


def fmt(x: float, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder with MNIST/raw (torchvision layout)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="default: 64 1024 (CUDA), 64 (CPU)"
    )
    ap.add_argument(
        "--seconds", type=float, default=None, help="timed window per case (default 3 CUDA, 4 CPU)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (8 CUDA, 2 CPU)")
    ap.add_argument("--min-steps", type=int, default=3, help="fewest timed steps per case")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="seed-mlp examples-dcgan mlp-28 mlp-64 dcgan-28 dcgan-64 dcgan-64-eager32 "
        "(default: all on CUDA; on the CPU all but the 64-pixel DCGANs, which take minutes)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="run the cases this many times, interleaved")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of examples-dcgan")
    ap.add_argument(
        "--rss-run",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure peak RSS of a default gan-train MNIST run in a child process",
    )
    ap.add_argument("--json", default=None, help="append the results as JSON lines to this file")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cuda = device.type == "cuda"
    args.seconds = args.seconds if args.seconds is not None else (3.0 if cuda else 4.0)
    batches = args.batch_sizes or ([64, 1024] if cuda else [64])
    all_cases = ["seed-mlp", "examples-dcgan", "mlp-28", "mlp-64", "dcgan-28", "dcgan-64", "dcgan-64-eager32"]
    cases = args.cases or (all_cases if cuda else ["seed-mlp", "mlp-28", "mlp-64", "dcgan-28"])
    unknown = set(cases) - set(all_cases)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {all_cases}")
    root = str(Path(args.data).expanduser().resolve())
    if not (Path(root) / "MNIST" / "raw").is_dir():
        ap.error(f"{root}/MNIST/raw does not exist; pass --data pointing at a folder that holds MNIST/raw")
    DEFAULT_BACKENDS.update(
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_tf32=torch.backends.cudnn.allow_tf32,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
    )

    gpu = torch.cuda.get_device_name(device) if cuda else f"{os.cpu_count()}-core CPU ({platform.machine()})"
    header = (
        f"# throughput on {gpu}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; seconds/case {args.seconds}"
    )
    print(header, flush=True)

    bodies: dict[str, tuple[int, Callable[[int], Callable[[Clock], str]]]] = {
        "seed-mlp": (28, lambda b: lambda c: seed_mlp_loop(root, b, device, c)),
        "examples-dcgan": (64, lambda b: lambda c: examples_dcgan_loop(root, b, device, c, args.workers)),
        "mlp-28": (28, lambda b: lambda c: project_loop(root, b, device, c, "mlp", 28, [])),
        "mlp-64": (64, lambda b: lambda c: project_loop(root, b, device, c, "mlp", 64, [])),
        "dcgan-28": (28, lambda b: lambda c: project_loop(root, b, device, c, "dcgan", 28, [])),
        "dcgan-64": (64, lambda b: lambda c: project_loop(root, b, device, c, "dcgan", 64, [])),
        "dcgan-64-eager32": (
            64,
            lambda b: (
                lambda c: project_loop(
                    root,
                    b,
                    device,
                    c,
                    "dcgan",
                    64,
                    ["trainer.cuda_graphs=off", "trainer.precision=32", "trainer.channels_last=false"],
                )
            ),
        ),
    }
    results: list[Result] = []
    print(
        f"{'case':<18}{'batch':>6}{'images/s':>12}{'img/CPU-s':>12}{'first step s':>14}{'peak MB':>10}  path",
        flush=True,
    )
    for batch in batches:
        for _rep in range(args.repeat):
            for name in cases:
                size, make = bodies[name]
                res = run_case(name, size, batch, device, args, make(batch))
                results.append(res)
                line = (
                    f"{name:<18}{batch:>6}{fmt(res.images_per_s):>12}{fmt(res.images_per_cpu_s):>12}"
                    f"{fmt(res.first_step_s, '.2f'):>14}"
                    f"{fmt(res.peak_mb):>10}  {res.path}"
                )
                print(line + (f"  ERROR {res.error}" if res.error else ""), flush=True)

    def rate(name: str, batch: int, key: str = "images_per_s") -> float:
        """The median over the repeats (the repeats interleave the cases, so load shifts hit all)."""
        values = [getattr(r, key) for r in results if r.name == name and r.batch == batch]
        values = sorted(v for v in values if not math.isnan(v))
        return statistics.median(values) if values else math.nan

    if args.repeat > 1:
        print(f"\n# medians of {args.repeat} interleaved repeats")
        for batch in batches:
            for name in cases:
                cpu = rate(name, batch, "images_per_cpu_s")
                print(f"{name:<18}{batch:>6}{fmt(rate(name, batch)):>12}{fmt(cpu):>12}")

    print("\n# ratios (same run)")
    for batch in batches:
        for proj, base in (
            ("mlp-28", "seed-mlp"),
            ("dcgan-64", "examples-dcgan"),
            ("dcgan-64", "dcgan-64-eager32"),
        ):
            a, b = rate(proj, batch), rate(base, batch)
            if not (math.isnan(a) or math.isnan(b)):
                ca, cb = rate(proj, batch, "images_per_cpu_s"), rate(base, batch, "images_per_cpu_s")
                print(f"{proj} / {base} at batch {batch}: {a / b:.2f}x (per CPU-second: {ca / cb:.2f}x)")

    targets: list[tuple[str, float, float]] = []  # (what, value, threshold)
    if cuda:
        targets = [
            (
                "dcgan-64 / examples-dcgan at batch 64 >= 5x",
                rate("dcgan-64", 64) / rate("examples-dcgan", 64),
                5,
            ),
            ("dcgan-64 at batch 64 >= 25,000 images/s", rate("dcgan-64", 64), 25_000),
            ("mlp-28 / seed-mlp at batch 64 >= 30x", rate("mlp-28", 64) / rate("seed-mlp", 64), 30),
            ("dcgan-64 at batch 1024 >= 65,000 images/s", rate("dcgan-64", 1024), 65_000),
        ]
    else:
        targets = [("mlp-28 / seed-mlp at batch 64 >= 1.5x", rate("mlp-28", 64) / rate("seed-mlp", 64), 1.5)]

    rss: dict[str, Any] | None = None
    if args.rss_run:
        try:
            rss = default_rss_run(root, str(device))
            print(
                f"\n# default MNIST run ({rss['command']}): peak RSS {fmt(rss['peak_rss_mb'])} MB, "
                f"wall {rss['wall_s']:.1f} s, exit {rss['returncode']} {rss['stderr_tail']}"
            )
            if not cuda:
                targets.append(("default MNIST run peak RSS <= 2 GB (MB)", rss["peak_rss_mb"], -2048))
        except Exception as err:  # keep the throughput results even if this fails
            print(f"\n# default MNIST run failed: {type(err).__name__}: {err}")

    print("\n# targets")
    for what, value, threshold in targets:
        if math.isnan(value):
            verdict = "not measured"
        elif threshold < 0:
            verdict = "met" if value <= -threshold else "NOT met"
        else:
            verdict = "met" if value >= threshold else "NOT met"
        print(f"{what}: {fmt(value, ',.2f')} -> {verdict}")

    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps({"header": header, **r.__dict__}) + "\n")
            if rss is not None:
                f.write(json.dumps({"header": header, "default_run": rss}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
