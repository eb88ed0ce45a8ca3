"""The console scripts. Each imports its command (torch and Hydra take seconds to import) inside the
guard that runs it, so Ctrl-C during start-up ends with one line and exit status 130 (128 + SIGINT),
as it does once the command runs, instead of a traceback."""

from __future__ import annotations

import importlib
import os
import sys

INTERRUPTED = 130


def _run(module: str, function: str) -> None:
    try:
        getattr(importlib.import_module(module), function)()
    except KeyboardInterrupt:
        print(f"{os.path.basename(sys.argv[0])}: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(INTERRUPTED)


def train() -> None:
    _run("gan_cli.cli", "train_main")


def sample() -> None:
    _run("gan_cli.commands.sample", "main")


def evaluate() -> None:
    _run("gan_cli.commands.evaluate", "main")


def classifier() -> None:
    _run("gan_cli.commands.classifier", "main")


def sweep_report() -> None:
    _run("gan_cli.commands.sweep_report", "main")


def export() -> None:
    _run("gan_cli.commands.export", "main")
