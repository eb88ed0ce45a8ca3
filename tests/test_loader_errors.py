"""A streamed image folder whose file fails to decode in a loader worker: an error naming the file and an
exit, every time (the workers, which ignore SIGTERM, must never keep the process alive)."""

from __future__ import annotations

import multiprocessing
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gan_cli.datasets import Batches, build_data
from gan_cli.errors import DataError
from tests.conftest import make_image_folder, script

TRIES = 5


def folder_with_a_broken_image(root: Path) -> tuple[Path, Path]:
    """Good images and one whose pixel data is noise: its chunks (and checksums) pass the header check
    made when the folder is listed, and decoding it fails, in a loader worker."""
    make_image_folder(root, n_per_class=4)
    good, broken = root / "dogs" / "000.png", root / "dogs" / "broken.png"
    data, out, i = good.read_bytes(), bytearray(good.read_bytes()[:8]), 8
    noise = np.random.default_rng(0)
    while i < len(data):
        (n,), kind = struct.unpack(">I", data[i : i + 4]), data[i + 4 : i + 8]
        chunk = data[i + 8 : i + 8 + n]
        if kind == b"IDAT":
            chunk = noise.integers(0, 256, n, dtype=np.uint8).tobytes()
        out += struct.pack(">I", n) + kind + chunk + struct.pack(">I", zlib.crc32(kind + chunk))
        i += 12 + n
    broken.write_bytes(bytes(out))
    return root, broken


def streamed(root: Path, run_dir: str) -> list[str]:
    return [
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=8",
        "data.in_memory=false",
        "data.num_workers=2",
        "model=mlp",
        "trainer.device=cpu",
        "trainer.epochs=null",
        "trainer.steps=50",
        "trainer.batch_size=4",
        "logger.sample_every=0",
        "logger.progress=false",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.mark.slow
def test_a_file_failing_in_a_worker_ends_the_run_every_time(tmp_path: Path) -> None:
    root, broken = folder_with_a_broken_image(tmp_path / "pets")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GAN_CLI_DATA", None)
    procs = [
        subprocess.Popen(
            [script("gan-train"), *streamed(root, f"run{i}")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for i in range(TRIES)
    ]
    outputs, hung = [], 0
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=90)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append(proc.communicate()[0])
            hung += 1
    assert hung == 0, f"{hung} of {TRIES} runs never exited"
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 2, out
        assert f"cannot read image {broken}" in out and "data.on_bad_image=skip" in out
        assert "Traceback" not in out and "DataLoader worker" not in out, (
            "the message alone, not the worker's"
        )


def test_the_worker_error_names_the_file_and_stops_the_workers(tmp_path: Path) -> None:
    root, broken = folder_with_a_broken_image(tmp_path / "pets")
    cfg = {
        "name": "image_folder",
        "root": str(root),
        "image_size": 8,
        "channels": 3,
        "in_memory": "false",
        "max_memory_mb": 4096,
        "num_workers": 2,
        "on_bad_image": "error",
    }
    batches = Batches(build_data(OmegaConf.create(cfg)), 9, torch.device("cpu"), seed=0, num_workers=2)
    with pytest.raises(DataError) as err:
        batches.next()  # one batch of 9 holds every file
    assert str(err.value).startswith(f"cannot read image {broken}")
    assert batches._loader_iter is None and not multiprocessing.active_children()
