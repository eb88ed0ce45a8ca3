"""Hostile and broken checkpoints, and saving onto a full disk or into an unwritable folder."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_cli import checkpoint as ckpt
from gan_cli.errors import CheckpointError
from tests.conftest import QUICK, run_cli
from tests.runs import GAUSS, load, make_cfg, train


class PlantsAFile:
    """Unpickling this runs a shell command that creates a file: what a crafted checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def plant(folder: Path) -> tuple[Path, Path]:
    target = folder / "pwned"
    evil = folder / "evil.pt"
    torch.save({"G": PlantsAFile(target), "D": {}, "step": 1}, evil)
    return evil, target


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    evil, target = plant(tmp_path)
    with pytest.raises(CheckpointError) as err:
        ckpt.load(evil)
    text = str(err.value)
    assert str(evil) in text and "refusing to load" in text and "system" in text
    assert "weights_only` set to `False`" not in text, "no advice to switch the protection off"
    assert not target.exists()
    raw = tmp_path / "raw.pt"  # a plain pickle, not torch's zip format
    raw.write_bytes(pickle.dumps({"G": PlantsAFile(target)}))
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        ckpt.load(raw)
    assert not target.exists()


def test_cli_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    evil, target = plant(tmp_path)
    res = run_cli(
        *QUICK, "experiment=gaussians_demo", "trainer.steps=2", f"trainer.resume={evil}", cwd=tmp_path
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refusing to load" in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert not target.exists()
    assert not (tmp_path / "run").exists(), "a refused run leaves no run directory"


def test_truncated_and_corrupt_checkpoints_name_the_file(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "trainer.steps=2"))
    good = tmp_path / "checkpoints" / "last.pt"
    data = good.read_bytes()
    for name, content in (
        ("half.pt", data[: len(data) // 2]),
        ("noise.pt", os.urandom(4096)),
        ("empty.pt", b""),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            ckpt.load(path)
        assert str(path) in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a gan_cli checkpoint"):
        ckpt.load(other)
    torch.save({"G": {}, "D": {}}, other)
    with pytest.raises(CheckpointError, match="lacks version, config, step"):
        ckpt.load(other)


def test_a_corrupt_last_checkpoint_falls_back_to_a_numbered_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg(run, "trainer.steps=4", "trainer.checkpoint_every=2"))
    last = run / "checkpoints" / "last.pt"
    last.unlink()  # step_000004.pt, a hard link to the same bytes, stays whole
    last.write_bytes(b"broken")
    train(make_cfg(tmp_path / "b", "trainer.steps=6", f"trainer.resume={run}"))
    assert load(run)["step"] == 6


def full_disk_after(n_bytes: int) -> Any:
    real_save = torch.save

    def save(obj: Any, f: Any) -> None:
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:n_bytes])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(make_cfg(tmp_path, "trainer.steps=2"))
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    monkeypatch.setattr(ckpt.torch, "save", full_disk_after(1000))
    with pytest.raises(CheckpointError) as err:
        train(make_cfg(tmp_path, "trainer.steps=4", f"trainer.resume={tmp_path}"))
    assert "disk is full" in str(err.value) and str(last) in str(err.value)
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*tmp*")), "the partial file is removed"


def test_unwritable_output_folder_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match="could not write checkpoint") as err:
        train(make_cfg(tmp_path, "trainer.steps=2"))
    assert str(tmp_path / "checkpoints") in str(err.value)
    assert not (tmp_path / "metrics.jsonl").exists(), "refused before any training"

    real_open = open

    def denied(path: Any, *args: Any, **kwargs: Any) -> Any:
        if ".pt.tmp" in str(path) or ".write_test" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(CheckpointError, match="not writable; fix its permissions"):
        ckpt.save_atomic({"x": 1}, tmp_path / "ok" / "last.pt")
    with pytest.raises(CheckpointError, match="not writable"):
        ckpt.prepare_folder(tmp_path / "ok")


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.pt.tmp123").write_bytes(b"half")
    ckpt.prepare_folder(folder)
    assert list(folder.iterdir()) == []


def test_cli_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("not a folder")
    res = run_cli(*GAUSS, "trainer.steps=2", "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2 and "could not write checkpoint" in res.stdout + res.stderr
