"""The commands besides `gan-train`: gan-sample, gan-eval, gan-classifier and gan-sweep-report.

Each takes a run directory (or checkpoint, or data set name) first, then `key=value` settings checked
against its dataclass, so a misspelt key fails with the list of known ones.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_cli.errors import ConfigError, GanCliError


def parse_args(argv: list[str], schema: type, usage: str) -> tuple[str, DictConfig]:
    if not argv or argv[0] in ("-h", "--help") or "=" in argv[0]:
        raise ConfigError(f"usage: {usage}")
    try:
        args = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv[1:]))
    except OmegaConfBaseException as err:
        known = ", ".join(f.name for f in fields(schema))
        raise ConfigError(f"{str(err).splitlines()[0]}; known settings: {known}") from err
    assert isinstance(args, DictConfig)
    return argv[0], args


def run_command(fn: Callable[[list[str]], Any]) -> None:
    """Run a command with gan-train's exit codes: 2 for input it cannot use (the message, no
    traceback); Ctrl-C is 130 (gan_cli.entry)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        fn(sys.argv[1:])
    except GanCliError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
