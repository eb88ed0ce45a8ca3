"""Stopping on request: Ctrl-C (SIGINT) and SIGTERM (sent by SLURM and others before preemption).

The first signal only sets a flag; the loop sees it at the next step boundary, saves a checkpoint and
returns. A second Ctrl-C ends the process at once, without saving (the last checkpoint stays whole,
because checkpoints are written atomically).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("gan_cli")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """A context in which SIGINT and SIGTERM ask for a stop instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            sys.stderr.write("\nsecond interrupt: exiting now without saving a checkpoint\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: stopping after this step, with a checkpoint (Ctrl-C again to quit at once)",
                signal.Signals(signum).name,
            )

    def install(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.uninstall()
