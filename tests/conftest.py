"""Shared fixtures: tiny data sets in torchvision's layouts, and `run_cli`, which runs a console script.

How `run_cli` launches a command:

- By default, through a fork server (tests/cli_server.py). Each pytest process starts one server
  process on its first `run_cli`; the server imports torch, torchvision, Hydra and gan_cli's commands
  once, and for each command forks a child that sets up the working folder, environment, sys.path,
  standard streams and sys.argv a new interpreter would have, then calls the script's entry point.
  This saves the two to three seconds of start-up and imports a new interpreter spends before a
  command does anything.
- With `run_cli(..., fresh=True)`, as a new process running the installed console script
  (`subprocess.run`), as a user runs it: for tests about what a new interpreter reads when it loads
  torch (thread counts) and to keep the script file itself covered end to end.
- Every command as a new process, as with `fresh=True`, when GAN_CLI_TEST_SUBPROCESS=1 is set.

Tests that signal or kill a command, or time its start-up (tests/test_signals.py, test_kill_resume.py,
test_run_folders.py...), start a process of their own with subprocess and do not use `run_cli`.
"""

from __future__ import annotations

import atexit
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_server import ForkServer

BIN = Path(sys.executable).parent
SERVER = ForkServer()
atexit.register(SERVER.close)


def script(name: str) -> str:
    """The installed console script beside this interpreter (the one a user runs)."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}; run `make install`"
    return str(path)


def pythonpath(*folders: Path) -> str:
    """PYTHONPATH with these folders first, then this run's own entries (where gan_cli is imported
    from): for a command that imports a module the test writes."""
    return os.pathsep.join(
        [*map(str, folders), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )


def run_cli(
    *args: str,
    cwd: Path,
    name: str = "gan-train",
    timeout: float = 300,
    env: dict | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Runs console script `name` with `args` in `cwd`, stdin empty, stdout and stderr captured as text;
    `env` adds to (or replaces) this process's environment. After `timeout` seconds the command is
    killed and subprocess.TimeoutExpired raised. `fresh=True`: a new process, not a fork (see above)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("GAN_CLI_DATA", None)
    cmd = [script(name), *args]
    if fresh or os.environ.get("GAN_CLI_TEST_SUBPROCESS") == "1":
        return subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )
    return SERVER.run(cmd, cwd=cwd, env=full_env, timeout=timeout)


# A few steps on the CPU, everything logged: what the end-to-end tests run.
QUICK = [
    "trainer.device=cpu",
    "trainer.steps=4",
    "trainer.epochs=null",
    "trainer.batch_size=8",
    "logger.log_every=2",
    "logger.sample_every=2",
    "logger.num_samples=16",
    "hydra.run.dir=run",
]


def _digit_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blurry blobs whose position depends on the label: enough structure to learn from."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.zeros((n, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        cy, cx = 6 + (label // 5) * 14 + rng.normal(0, 1), 4 + (label % 5) * 5 + rng.normal(0, 1)
        images[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    return (images * 255).clip(0, 255).astype(np.uint8), labels


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 128, n_test: int = 64) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(raw, "train", *_digit_images(n_train, 28, rng))
    write_idx(raw, "t10k", *_digit_images(n_test, 28, rng))
    return root


def make_image_folder(root: Path, n_per_class: int = 8) -> Path:
    """Two classes of images with mixed sizes and modes (RGB, L, RGBA, P)."""
    rng = np.random.default_rng(1)
    modes = ["RGB", "L", "RGBA", "P"]
    for c, cls in enumerate(["cats", "dogs"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            w, h = 20 + 4 * i, 16 + 6 * (i % 3)
            arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            arr[..., c] = 255
            img = Image.fromarray(arr).convert(modes[i % 4])
            img.save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images") / "pets")


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C at its default in the commands the tests start, as a terminal gives it: a shell starts its
    background jobs (and what they run, `make` included) with SIGINT ignored, which the commands would
    inherit, and the tests that send them SIGINT would wait for nothing."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` are skipped on machines without CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
