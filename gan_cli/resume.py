"""Resuming a run: which checkpoint to continue, whether its config still fits, and where to write.

`trainer.resume=auto` looks for the newest run with the same config under a search root (the fixed
part of Hydra's run-directory pattern, which the CLI works out);
`trainer.resume=PATH` takes a checkpoint file or a run directory. A resumed run keeps writing in the
run directory it continues (TensorBoard, metrics.jsonl, samples, checkpoints), so it reads as one run
(the CLI folds the fresh directory Hydra made for the invocation into it).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_cli import checkpoint as ckpt
from gan_cli.errors import CheckpointError, ConfigError

log = logging.getLogger("gan_cli")

# Keys a resumed run may change without changing what is trained: limits, logging, paths and
# speed switches. A key listed here covers every key below it (`logger` covers `logger.log_every`).
# trainer.threads changes no setting of the run, but on a CPU another thread count can sum floats in
# another order: a run resumed with other threads is no longer bit-identical to the uninterrupted one.
SAFE_KEYS = (
    "logger",
    "trainer.steps",
    "trainer.epochs",
    "trainer.max_minutes",
    "trainer.resume",
    "trainer.resume_force",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.device",
    "trainer.threads",
    "trainer.on_nan",
    "trainer.compile",
    "trainer.cuda_graphs",
    "trainer.channels_last",
    "trainer.cudnn_benchmark",
    "trainer.tf32",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.in_memory",
    "data.max_memory_mb",
    "data.labels_are_classes",  # acts only through model.conditional=auto, whose answer is compared
)
ABSENT = "<absent>"
SEARCH_DEPTH = 5  # folder levels below the output root searched by resume=auto


def is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in SAFE_KEYS)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def config_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The keys outside SAFE_KEYS whose values differ: (key, checkpoint's value, this run's value)."""
    old, new = flatten(saved), flatten(now)
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if a != b and not is_safe(key):
            diffs.append((key, a, b))
    return diffs


def describe(diffs: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{key}: {a!r} in the checkpoint, {b!r} now" for key, a, b in diffs)


@dataclass
class ResumePoint:
    """The checkpoint a run continues from."""

    path: Path  # the checkpoint file
    state: ckpt.TrainState  # its contents
    run_dir: Path | None  # the run directory it belongs to; None when the file is outside one


def run_dir_of(path: Path) -> Path | None:
    """RUN/checkpoints/x.pt -> RUN; a file anywhere else belongs to no run directory."""
    return path.parent.parent if path.parent.name == "checkpoints" else None


def load_run(run_dir: Path) -> tuple[Path, ckpt.TrainState]:
    """The newest readable checkpoint of a run: last.pt, else its numbered ones, newest first."""
    folder = run_dir / "checkpoints"
    candidates = [folder / "last.pt", *reversed(ckpt.numbered(folder))]
    first_error: CheckpointError | None = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return path, ckpt.TrainState.read(path)
        except CheckpointError as err:
            log.warning("%s", err)
            first_error = first_error or err
    if first_error is not None:
        raise first_error
    raise CheckpointError(
        f"{run_dir} holds no checkpoint (no checkpoints/last.pt or checkpoints/step_*.pt); "
        "give a run directory of gan-train or a .pt file"
    )


def check_config(path: Path, state: ckpt.TrainState, now: dict[str, Any], force: bool) -> None:
    diffs = config_diff(state.config or {}, now)
    if not diffs:
        return
    if force:
        log.warning("resuming from %s with a changed config (resume_force): %s", path, describe(diffs))
        return
    raise CheckpointError(
        f"refusing to resume from {path}: the config differs in {len(diffs)} key(s) that change what is "
        f"trained: {describe(diffs)}. Run with the checkpoint's values, or pass trainer.resume_force=true "
        f"to resume anyway. Keys that may change freely: {', '.join(SAFE_KEYS)}"
    )


def _checkpoints(run: Path) -> list[Path]:
    """A run's checkpoints, newest first: last.pt, then the numbered ones by step."""
    folder = run / "checkpoints"
    return [p for p in [folder / "last.pt", *reversed(ckpt.numbered(folder))] if p.is_file()]


def _newest_write(run: Path) -> float:
    """When a run last wrote a checkpoint. A run still training rotates its numbered checkpoints, so a
    file listed a moment ago may be gone: it is skipped."""
    times = []
    for path in _checkpoints(run):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times, default=0.0)


def run_dirs(root: Path) -> Iterator[Path]:
    """Folders under `root` (and root itself) that hold checkpoints, without descending into runs."""
    if not root.is_dir():
        return
    top = len(root.parts)
    for folder, subdirs, _ in os.walk(root):
        here = Path(folder)
        if _checkpoints(here):
            subdirs[:] = []
            yield here.absolute()
        elif len(here.parts) - top >= SEARCH_DEPTH:
            subdirs[:] = []
        else:
            subdirs[:] = [d for d in subdirs if d not in ("tb", "samples", ".hydra", "checkpoints")]


def saved_config(run: Path) -> dict[str, Any] | None:
    """The config of a run's newest readable checkpoint (only that is read), or None when none reads."""
    for path in _checkpoints(run):
        try:
            config = ckpt.load(path, mmap=True).get("config")
        except CheckpointError as err:
            log.warning("resume=auto: %s", err)
            continue
        return config if isinstance(config, dict) else {}
    return None


def auto_run(root: Path, now: dict[str, Any]) -> tuple[Path | None, int]:
    """The newest run under `root` whose config matches this one (safe keys aside), or None; and how
    many runs there have another config.

    A run whose last.pt is damaged is judged by its newest readable numbered checkpoint, so it is
    continued from there rather than started afresh beside it."""
    found = sorted(run_dirs(root), key=_newest_write)
    found.reverse()  # newest first
    differing = 0
    for run in found:
        saved = saved_config(run)
        if saved is None:
            log.warning("resume=auto: skipping %s: none of its checkpoints can be read", run)
        elif config_diff(saved, now):
            differing += 1
        else:
            return run, differing
    return None, differing


def find_auto(root: Path, now: dict[str, Any]) -> ResumePoint | None:
    """The newest run under `root` whose config matches this one, at its newest readable checkpoint."""
    run, differing = auto_run(root, now)
    if run is None:
        more = f" ({differing} run(s) there have another config)" if differing else ""
        log.info("resume=auto: no earlier run with this config under %s%s; starting afresh", root, more)
        return None
    path, state = load_run(run)
    return ResumePoint(path, state, run)


def target(spec: str | None, root: Path, now: dict[str, Any]) -> Path | None:
    """The run directory `trainer.resume=spec` continues (None: a fresh run, or a checkpoint outside a
    run), worked out without reading more than configs."""
    if not spec:
        return None
    if str(spec) == "auto":
        return auto_run(root, now)[0]
    given = Path(str(spec)).expanduser().absolute()
    return given if given.is_dir() else run_dir_of(given)


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds a run's records: checkpoints or metrics.jsonl."""
    return (folder / "metrics.jsonl").is_file() or bool(_checkpoints(folder))


def refuse_earlier_run(folder: Path, continues: Path | None) -> None:
    """Refuse to write a run into `folder` when that holds another run's records and this run does not
    continue that one (`continues`: the run directory it resumes; None for a fresh run)."""
    if continues is not None and os.path.abspath(continues) == os.path.abspath(folder):
        return
    if holds_run(folder):
        raise ConfigError(
            f"{folder} already holds a run (checkpoints or metrics.jsonl), which this run would overwrite; "
            f"nothing in it was changed. Resume that run with trainer.resume={folder}, or write this one "
            "to another folder with hydra.run.dir=..."
        )


def resolve(spec: str | None, force: bool, root: Path, now: dict[str, Any]) -> ResumePoint | None:
    """What `trainer.resume` points at, checked against this run's resolved config `now`; `auto`
    searches under `root`."""
    if not spec:
        return None
    if str(spec) == "auto":
        return find_auto(root, now)
    given = Path(str(spec)).expanduser()
    if given.is_dir():
        path, state = load_run(given)
    elif given.is_file():
        path, state = given, ckpt.TrainState.read(given)
    else:
        raise CheckpointError(
            f"trainer.resume={spec}: no such checkpoint or run directory; give a .pt file, a run directory "
            "(outputs/<date>/<time>_...), or auto"
        )
    check_config(path, state, now, force)
    return ResumePoint(path, state, run_dir_of(path.absolute()))


def hydra_value(path: str) -> str:
    """`path` as a value Hydra's override parser reads back unchanged: quoted when it holds characters
    such as `=`, `,` or `|` (a sweep job's folder name has them)."""
    if "/" in path and re.fullmatch(r"[\w./@%+:-]+", path):
        return path
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", path)  # backslashes before a quote double
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + "'"


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell, in double quotes when that reads better and means the same."""
    quoted = shlex.quote(word)
    if quoted != word and "'" in word and not re.search(r'["$`\\!]', word):
        return f'"{word}"'
    return quoted


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command that continues this run, to paste into a shell: the same overrides (as Hydra wrote
    them, so they parse again) plus trainer.resume=RUN."""
    kept = [o for o in overrides if not o.startswith("trainer.resume=")]
    words = ["gan-train", *kept, f"trainer.resume={hydra_value(str(run_dir))}"]
    return " ".join(shell_word(w) for w in words)
