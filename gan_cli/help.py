"""`gan-train --help`: the config groups to choose from, and every setting of the composed config with
its default and the comment beside it in its YAML file (the YAML files are the one place defaults and
their meaning are written). Hydra's help template, configs/hydra/help/gan_train.yaml, calls the two
resolvers registered here; `gan-train model=mlp --help` shows the settings of that choice."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*)\s*:(.*)$")


def _walk(text: str) -> list[tuple[int, str, str]]:
    """(line number, dotted key, what follows the colon) for each `key:` line of YAML text."""
    stack: list[tuple[int, str]] = []
    found = []
    for number, line in enumerate(text.splitlines()):
        match = KEY_LINE.match(line)
        if match is None:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        found.append((number, ".".join(k for _, k in stack), rest))
    return found


def yaml_comments(text: str, prefix: str = "") -> dict[str, str]:
    """Dotted key -> the comment on its line, for `key: value  # comment` lines."""
    out = {}
    for _, key, rest in _walk(text):
        _, hash_sign, comment = rest.partition(" #")
        if hash_sign and comment.strip():
            out[prefix + key] = comment.strip()
    return out


def _config_text(sources: Any, name: str) -> str:
    """The text of `name` (e.g. "model/dcgan.yaml") from the first config source that has it."""
    for source in sources:
        try:
            if source.schema == "pkg":
                path = importlib.resources.files(str(source.path)).joinpath(name)
                if path.is_file():
                    return path.read_text(encoding="utf-8")
            elif source.schema == "file" and (Path(str(source.path)) / name).is_file():
                return (Path(str(source.path)) / name).read_text(encoding="utf-8")
        except (ModuleNotFoundError, OSError):
            continue
    return ""


def settings(_root_: DictConfig) -> str:
    """The composed config as YAML (interpolations as written), each key with its YAML comment."""
    hc = _root_.hydra
    sources = hc.runtime.config_sources
    comments = yaml_comments(_config_text(sources, f"{hc.job.config_name}.yaml"))
    for group, option in hc.runtime.choices.items():
        if option is not None and "/" not in str(group):
            comments.update(yaml_comments(_config_text(sources, f"{group}/{option}.yaml"), f"{group}."))
    task = OmegaConf.masked_copy(_root_, [str(k) for k in _root_ if k != "hydra"])
    lines = OmegaConf.to_yaml(task).splitlines()
    for number, key, _ in _walk("\n".join(lines)):
        if key in comments:
            lines[number] += f"  # {comments[key]}"
    return _escaped("\n".join(lines))


def groups(_root_: DictConfig) -> str:
    """`group: option, option...` for each group of configs/train.yaml's defaults list: the choices a
    user makes (not the schema/* and debug/model groups the configs use inside, nor Hydra's own)."""
    from hydra.core.global_hydra import GlobalHydra

    hydra_app = GlobalHydra.instance().hydra
    assert hydra_app is not None
    chosen = {str(group) for group in _root_.hydra.runtime.choices if "/" not in str(group)}
    return _escaped(hydra_app.format_config_groups(lambda group: group in chosen))


def _escaped(text: str) -> str:
    """Hydra passes the template through string.Template: a literal $ is written $$."""
    return text.replace("$", "$$")


OmegaConf.register_new_resolver("gan_help_settings", settings, replace=True)
OmegaConf.register_new_resolver("gan_help_groups", groups, replace=True)
