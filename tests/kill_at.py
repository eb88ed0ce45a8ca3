"""Run gan-train in this process and SIGKILL it at a chosen moment (used by the crash tests).

KILL_AT=log:K      right after the scalars of step K are written (KILL_JOB=N: in sweep job N only)
KILL_AT=write:N    halfway through writing the Nth checkpoint's temporary file
KILL_AT=replace:N  after the Nth checkpoint's temporary file is complete, before it is renamed

Tests call `run_killed`, which runs this file as a script and checks that it died by SIGKILL.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_killed(cwd: Path, *args: str, **kill: str) -> None:
    """Run gan-train with `args` in a process of this script, `kill` (KILL_AT=..., KILL_JOB=...) saying
    when it SIGKILLs itself; fail unless it died that way."""
    env = {**os.environ, **kill, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("GAN_CLI_DATA", None)
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr + proc.stdout


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def this_job() -> bool:
    """Whether the running job is the one KILL_JOB names (any job when it is not set)."""
    if "KILL_JOB" not in os.environ:
        return True
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().job.num) == int(os.environ["KILL_JOB"])


def main() -> None:
    kind, _, n_text = os.environ["KILL_AT"].partition(":")
    n = int(n_text)
    from gan_cli import checkpoint, logger

    if kind == "log":
        scalars = logger.JsonlLogger.scalars

        def log_then_die(self: Any, step: int, values: dict[str, float], epoch: float | None = None) -> None:
            scalars(self, step, values, epoch)
            if step == n and this_job():
                die()

        logger.JsonlLogger.scalars = log_then_die  # type: ignore[method-assign]
    else:
        calls = 0
        save, replace = checkpoint.torch.save, os.replace

        def half_save(obj: Any, f: Any) -> None:
            nonlocal calls
            calls += 1
            if kind == "write" and calls == n:
                buf = io.BytesIO()
                save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()
            save(obj, f)

        def replace_or_die(src: Any, dst: Any) -> None:
            if kind == "replace" and calls == n:
                die()
            replace(src, dst)

        checkpoint.torch.save = half_save  # type: ignore[assignment]
        checkpoint.os.replace = replace_or_die  # type: ignore[assignment]

    from gan_cli.cli import train_main

    sys.argv = ["gan-train", *sys.argv[1:]]
    train_main()


if __name__ == "__main__":
    main()
