"""One process writes a run folder at a time.

A run holds an OS lock (flock) on `RUN/.lock`: it dies with the process, so a crash or SIGKILL never
leaves a folder locked, and the file names the process that holds it, for the message a second
process gets when it is refused. `gan-train` locks Hydra's folder before Hydra writes in it (the
`LockFolders` callback): a default name already taken (two runs started in the same second) becomes the
next free one, `NAME-2`, `NAME-3`...; a folder named with `hydra.run.dir` or `hydra.sweep.dir` is used as
named, or refused while another process holds it. A sweep locks its sweep folder, each of its jobs the
job's folder, and a resumed run the folder it writes on in (cli.py). Only rank 0 of a torchrun run
writes, so only it locks.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gan_cli import distributed
from gan_cli.errors import GanCliError

try:
    import fcntl
except ImportError:  # Windows: no flock, folders go unlocked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (open lock file, times acquired) in this process


class FolderInUse(GanCliError):
    """Another process holds the run folder's lock."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    pid, _, host = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
    return f"process {pid} on {host}" if pid else "another process"


def acquire(folder: Path) -> None:
    """Lock `folder` (made if missing) for this process, or raise FolderInUse naming the holder."""
    folder = folder.absolute()
    if folder in _held:
        fd, count = _held[folder]
        _held[folder] = (fd, count + 1)
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUse(
                f"{folder} is in use by another gan-train ({holder}); wait for it to end or stop it, "
                "or write elsewhere (another hydra.run.dir, or trainer.resume of another run)"
            ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    _held[folder] = (fd, 1)


def release(folder: Path) -> None:
    folder = folder.absolute()
    fd, count = _held.pop(folder)
    if count > 1:
        _held[folder] = (fd, count - 1)
    else:
        os.close(fd)  # the lock goes with the file description; the file stays, harmless


@contextlib.contextmanager
def hold(folder: Path, take: bool = True) -> Iterator[None]:
    """`folder` locked inside the block (nothing happens when not `take`)."""
    if not take:
        yield
        return
    acquire(folder)
    try:
        yield
    finally:
        release(folder)


def held_elsewhere(folder: Path) -> bool:
    """Whether another process holds `folder`'s lock now."""
    path = folder.absolute() / LOCK_FILE
    if folder.absolute() in _held or fcntl is None or not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def claim(base: Path) -> Path:
    """The first of `base`, `base-2`, `base-3`... that did not exist, made and locked by this process."""
    for n in itertools.count(1):
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            folder.mkdir(parents=True)
            acquire(folder)
        except (FileExistsError, FolderInUse):
            continue
        return folder
    raise AssertionError("unreachable")


def discard(folder: Path) -> None:
    """Let go of `folder` and remove its lock file: the folder itself is about to go (a resumed run's
    fresh folder, folded into the run it continues)."""
    folder = folder.absolute()
    while folder in _held:
        release(folder)
    (folder / LOCK_FILE).unlink(missing_ok=True)


def _named(config: DictConfig, key: str) -> bool:
    """Whether the command line gave `key` (hydra.run.dir, hydra.sweep.dir) itself."""
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def _lock_or_exit(config: DictConfig, mode: str) -> None:
    """Lock the folder of `hydra.<mode>.dir` (mode: run or sweep), renamed to a free one unless the
    command line named it; a refusal ends the process with status 2, before Hydra writes anything."""
    if distributed.env_rank() != 0:
        return
    key, node = f"hydra.{mode}.dir", config.hydra[mode]
    folder = Path(str(node.dir))
    try:
        if _named(config, key):
            acquire(folder)
            return
        free = claim(folder)
    except FolderInUse as err:
        sys.stderr.write(f"gan-train: error: {err}\n")
        sys.exit(2)
    if free == folder:
        return
    # The pattern with the suffix, so that it still reads as the pattern (resume=auto searches under its
    # fixed part); ${now:...} resolves to the same time again. A sweep's jobs compose it from the overrides.
    pattern = f"{OmegaConf.to_container(node, resolve=False)['dir']}{free.name[len(folder.name) :]}"  # type: ignore[index,call-overload]
    with read_write(node):
        node.dir = pattern
    with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
        config.hydra.overrides.hydra.append(f"{key}={pattern}")


class LockFolders(Callback):
    """Hydra callback: lock a run's folder, or a sweep's, before Hydra writes in it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _lock_or_exit(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _lock_or_exit(config, "sweep")
