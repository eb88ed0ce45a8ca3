"""Errors a user can fix: the CLI prints their message without a traceback and exits non-zero."""

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


class GanCliError(Exception):
    """A problem with the user's input (config, data, checkpoint) that the message explains."""


class ConfigError(GanCliError):
    pass


class DataError(GanCliError):
    pass


class CheckpointError(GanCliError):
    pass


class OutputError(GanCliError):
    """A run's outputs cannot be written (a full disk, a folder that is not writable)."""


def write_advice(err: OSError) -> str:
    """What to do about a failed write, from its errno."""
    if err.errno == errno.ENOSPC:
        return "the disk is full; free some space"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable; fix its permissions or choose another folder (hydra.run.dir=...)"
    return "check that the folder exists and is writable, and that the disk has space"


@contextlib.contextmanager
def writing(path: Path, kept: str) -> Iterator[None]:
    """Turn a failed write of `path` (a full disk, a folder not writable) into an OutputError that says
    what is kept and what to do."""
    try:
        yield
    except OSError as err:
        raise OutputError(
            f"could not write {path}: {err.strerror or err}. {kept}; {write_advice(err)}"
        ) from err
