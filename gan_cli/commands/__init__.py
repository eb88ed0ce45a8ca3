"""The commands besides `gan-train`: gan-sample, gan-eval, gan-export, gan-classifier and gan-sweep-report.

Each takes a run directory (or checkpoint, or data set name) first, then `key=value` settings checked
against its dataclass, so a misspelt key fails with the list of known ones. `--help` lists the settings
with their defaults and the comments beside the dataclass fields.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import logging
import sys
import tokenize
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_cli.errors import ConfigError, GanCliError


def field_comments(schema: type) -> dict[str, str]:
    """The comment beside each field of a dataclass, read from its source, so the help and the code
    cannot disagree."""
    source = inspect.getsource(schema)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    found = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            found[node.target.id] = next((comments[n] for n in lines if n in comments), "")
    return found


def help_text(schema: type, usage: str) -> str:
    """The command's purpose (its module's docstring), usage, and every setting with its default."""
    doc = (sys.modules[schema.__module__].__doc__ or "").strip().splitlines()
    comments = field_comments(schema)
    rows = []
    for f in fields(schema):
        made = f.default_factory is not dataclasses.MISSING
        default = f.default_factory() if made else f.default  # type: ignore[operator]
        shown = f"{f.name}.KEY=VALUE" if isinstance(default, dict) else f"{f.name}={_plain(default)}"
        rows.append((shown, comments.get(f.name, "")))
    width = max(len(shown) for shown, _ in rows)
    lines = [
        *(line.replace("`", "") for line in doc[:1]),
        "",
        f"usage: {usage}",
        "",
        "settings (key=value; the default is shown):",
    ]
    lines += [f"  {shown:<{width}}  {comment}".rstrip() for shown, comment in rows]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def parse_args(argv: list[str], schema: type, usage: str) -> tuple[str, DictConfig]:
    """The first argument and the settings, checked against `schema`; `-h` or `--help` anywhere
    prints the help and exits 0."""
    if any(arg in ("-h", "--help") for arg in argv):
        sys.stdout.write(help_text(schema, usage))
        sys.exit(0)
    if not argv or "=" in argv[0]:
        raise ConfigError(f"usage: {usage} (--help lists the settings)")
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
