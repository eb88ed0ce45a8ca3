"""Full-state checkpoints: written atomically, read with `weights_only=True` (no code runs on load).

A checkpoint is a dict of tensors and plain Python values: the networks, both optimizers, the grad
scaler, the step, the data position, every RNG state, the resolved config and the version.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_cli.errors import CheckpointError

log = logging.getLogger("gan_cli")


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _write_error(path: Path, err: OSError) -> CheckpointError:
    if err.errno == errno.ENOSPC:
        why = "the disk is full; free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable; fix its permissions or choose another output_dir"
    else:
        why = "check that the folder exists and is writable, and that the disk has space"
    return CheckpointError(
        f"could not write checkpoint {path}: {err.strerror or err}. "
        f"The previous checkpoint is untouched; {why}."
    )


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _write_error(path, err) from err


def prepare_folder(folder: Path) -> None:
    """Create the checkpoint folder, prove it is writable, and drop temporary files a killed run left.

    Called before training so that an unwritable output folder fails at once, not hours later.
    """
    probe = folder / f".write_test{os.getpid()}"
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        if created:  # made again by the first save; a run refused before then leaves no folder behind
            folder.rmdir()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise _write_error(folder, err) from err
    for stale in folder.glob(".*.pt.tmp*"):
        log.info("removing %s, a checkpoint a stopped run did not finish writing", stale)
        stale.unlink(missing_ok=True)


def _refusal(err: Exception) -> str:
    """What the weights-only unpickler refused, without its advice to turn the protection off."""
    found = re.search(r"(Unsupported (?:global|operand)[^\n]*|unsupported GLOBAL [^\n]*)", str(err), re.I)
    return found.group(1).strip() if found else _first_line(err)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: a file that would run code is refused, and nothing runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not re.search(r"global", str(err), re.I):  # not a refused object: bytes that are no pickle
            raise CheckpointError(
                f"checkpoint {path} cannot be read: it is truncated or corrupt, or was not written by "
                f"gan-train ({_refusal(err)}); nothing in it was run. Resume from another checkpoint "
                "(checkpoints/step_*.pt of the same run) or start afresh"
            ) from err
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain values "
            f"({_refusal(err)}). "
            "Checkpoints are read in weights-only mode so that no code in a file can run; "
            "use a checkpoint written by gan-train, and do not load files from sources you do not trust."
        ) from err
    except Exception as err:  # damaged bytes fail in many ways (EOFError, IndexError, BadZipFile...)
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read ({_first_line(err)}); "
            "resume from another checkpoint (checkpoints/step_*.pt of the same run) or start afresh"
        ) from err
    if not isinstance(state, dict) or "G" not in state or "D" not in state:
        raise CheckpointError(f"{path} is not a gan_cli checkpoint (no generator/discriminator state in it)")
    missing = [k for k in ("step", "config", "opt_G", "opt_D", "rng", "data_position") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a full gan_cli checkpoint: it lacks {', '.join(missing)}")
    return state


def find(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's checkpoints/last.pt."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if candidate.is_file():
            return candidate
        raise CheckpointError(
            f"{path} is a folder without checkpoints/last.pt; give a run directory or a .pt file"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def checkpoint_step(path: Path) -> int:
    """The step in a numbered checkpoint's name (step_000120.pt -> 120), or -1."""
    found = re.fullmatch(r"step_(\d+)\.pt", path.name)
    return int(found.group(1)) if found else -1


def numbered(folder: Path) -> list[Path]:
    """The numbered checkpoints in `folder`, oldest step first."""
    return sorted((p for p in folder.glob("step_*.pt") if checkpoint_step(p) >= 0), key=checkpoint_step)


def rotate(folder: Path, keep: int) -> None:
    """Keep the newest `keep` numbered checkpoints (step_NNNNNN.pt, by step), delete older ones."""
    files = numbered(folder)
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)
