"""A full disk while a run writes: every writer (checkpoints, metrics.jsonl, sample PNGs, TensorBoard,
train.log, status.json) fails with a message naming the file, keeps what it wrote before and leaves no
temporary file; metrics.jsonl is rewritten atomically on resume."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_cli import checkpoint as ckpt
from gan_cli import sweeps
from gan_cli.errors import CheckpointError, OutputError
from gan_cli.logger import JsonlLogger, LogFile, Loggers, TensorBoardLogger
from gan_cli.samples import save_png
from tests.conftest import run_cli
from tests.runs import GAUSS, load, make_cfg, records, train


def enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


class FillsUp:
    """A file whose writes fail with ENOSPC once `room` bytes are written, as on a full disk."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: Any) -> int:
        data = data if isinstance(data, str) else bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()


# metrics.jsonl is rewritten on resume (lines a killed process logged after the checkpoint are dropped).


def metrics_file(run: Path, steps: range) -> bytes:
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"step": s, "loss/D": 1.0 / s}) + "\n" for s in steps)
    (run / "metrics.jsonl").write_text(text)
    return text.encode()


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_metrics_rewrite_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    before = metrics_file(tmp_path, range(1, 7))

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).read_text().count("\n") == 3, "the temporary file is complete"
        raise failure

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError if isinstance(failure, OSError) else KeyboardInterrupt) as err:
        JsonlLogger(tmp_path, start_step=3)
    if isinstance(failure, OSError):
        assert str(tmp_path / "metrics.jsonl") in str(err.value) and "disk is full" in str(err.value)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    assert temporary_files(tmp_path) == []


def test_metrics_rewrite_is_flushed_to_disk_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_file(tmp_path, range(1, 7))
    (tmp_path / ".metrics.jsonl.tmp12345").write_text("a rewrite a killed process left\n")
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    JsonlLogger(tmp_path, start_step=4).close()
    assert calls == ["fsync", "replace"]
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4]
    assert temporary_files(tmp_path) == [], "the killed process's temporary file is removed"


# Each writer on a full disk, in-process.


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(run, "trainer.steps=2"))
    return run


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save turns the failed write into a RuntimeError; the error still says the disk is full."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    real_open = open

    def small_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(path, mode, *args, **kwargs)
        return FillsUp(file, room=5000) if ".pt.tmp" in str(path) else file

    monkeypatch.setattr("builtins.open", small_disk)
    with pytest.raises(CheckpointError) as err:
        ckpt.save_atomic(load(run), last)
    text = str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError), "what torch.save raised"
    assert f"could not write checkpoint {last}" in text and "disk is full" in text, text
    assert f"trainer.resume={run}" in text and "previous checkpoint is untouched" in text
    assert last.read_bytes() == before
    assert temporary_files(run) == []


def test_a_torch_error_that_is_no_write_error_stays_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(obj: Any, f: Any) -> None:
        f.write(b"half")
        raise RuntimeError("something inside torch")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(RuntimeError, match="something inside torch"):
        ckpt.save_atomic({"x": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == [], "no temporary file"


def test_metrics_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jsonl = JsonlLogger(tmp_path, start_step=0)
    jsonl.scalars(1, {"loss/D": 1.0})
    monkeypatch.setattr(jsonl, "_file", FillsUp(jsonl._file, room=3))
    with pytest.raises(OutputError) as err:
        jsonl.scalars(2, {"loss/D": 0.5})
    assert str(tmp_path / "metrics.jsonl") in str(err.value) and "keeps the lines written before" in str(
        err.value
    )
    assert "disk is full" in str(err.value)
    assert records(tmp_path)[0] == {"step": 1, "loss/D": 1.0}


def test_sample_png_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    picture = torch.zeros(3, 8, 8, dtype=torch.uint8)
    save_png(picture, tmp_path / "samples" / "step_000001.png")
    earlier = (tmp_path / "samples" / "step_000001.png").read_bytes()

    def half_save(self: Any, fp: Any, *args: Any, **kwargs: Any) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        enospc()

    monkeypatch.setattr(Image.Image, "save", half_save)
    path = tmp_path / "samples" / "step_000002.png"
    with pytest.raises(OutputError) as err:
        save_png(picture, path)
    assert str(path) in str(err.value) and "no partial image is left" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000001.png"]
    assert (tmp_path / "samples" / "step_000001.png").read_bytes() == earlier


def test_tensorboard_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from tensorboard.compat.tensorflow_stub.io import gfile

    tb = TensorBoardLogger(tmp_path, start_step=0)
    tb.scalars(1, {"loss/D": 1.0})
    monkeypatch.setattr(gfile.LocalFileSystem, "_write", enospc)
    with pytest.raises(OutputError) as err:
        for step in range(2, 200):  # the writer thread fails; a later call reports it
            tb.scalars(step, {"loss/D": 1.0})
            time.sleep(0.01)
    assert str(tmp_path / "tb") in str(err.value) and "disk is full" in str(err.value)
    assert "event files written before" in str(err.value)
    assert "Traceback" not in capsys.readouterr().err, "the writer thread's traceback is left out"
    Loggers([tb]).close(None)  # closing after the failure does not raise again


def test_train_log_on_a_full_disk_says_so_once(tmp_path: Path, capsys: Any) -> None:
    handler = LogFile(tmp_path / "train.log")
    logger = logging.getLogger("gan_cli.test_full_disk")
    logger.addHandler(handler)
    try:
        assert handler.stream is not None
        handler.stream = FillsUp(handler.stream, room=0)  # type: ignore[assignment]
        logger.error("first")
        logger.error("second")
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err.count(f"cannot write {tmp_path / 'train.log'}") == 1 and "Traceback" not in err


def test_status_on_a_full_disk_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(Path, "write_text", enospc)
    sweeps.write_status(tmp_path, "ok", 1.0)
    assert f"could not write {tmp_path / 'status.json'}" in caplog.text
    assert list(tmp_path.iterdir()) == []


# Through gan-train, on a small real file system.


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path, leave_kb: int) -> Path:
    """A file taking all the free space of `disk` but `leave_kb` KiB."""
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - leave_kb * 1024
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(size, 0))
    return filler


def test_full_disk_through_gan_train(small_disk: Path) -> None:
    args = [*GAUSS, "trainer.checkpoint_every=2", "hydra.run.dir=run", "logger.log_every=1"]
    first = run_cli(*args, "trainer.steps=4", cwd=small_disk)
    assert first.returncode == 0, first.stdout + first.stderr
    run = small_disk / "run"
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    filler = fill(small_disk, leave_kb=64)  # room for logs and samples, not for a checkpoint

    res = run_cli(*args, "trainer.steps=8", f"trainer.resume={run}", cwd=small_disk)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert f"could not write checkpoint {last}" in out and "disk is full" in out, out
    assert f"trainer.resume={run}" in out and "Traceback" not in out
    assert last.read_bytes() == before and load(run)["step"] == 4
    assert temporary_files(run) == []

    filler.unlink()  # space again: the run goes on from its checkpoint
    again = run_cli(*args, "trainer.steps=8", f"trainer.resume={run}", cwd=small_disk)
    assert again.returncode == 0, again.stdout + again.stderr
    assert load(run)["step"] == 8 and [r["step"] for r in records(run)] == list(range(1, 9))
