"""Checkpoints: the one training state (`TrainState`), written atomically and read with
`weights_only=True` (no code runs on load), and loading a trained generator back from one.

A checkpoint is a dict of tensors and plain Python values: the networks, both optimizers, the grad
scaler, the step, the data position, every RNG state, the resolved config and the version.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import random
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_cli import __version__
from gan_cli.datasets import Batches, Data
from gan_cli.ema import recompute_norm_stats
from gan_cli.errors import CheckpointError, GanCliError, write_advice
from gan_cli.models import build_models, label_classes
from gan_cli.step import Nets

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
    resume = ""
    if path.parent.name == "checkpoints":
        resume = f", then resume the run with trainer.resume={path.parent.parent}"
    return CheckpointError(
        f"could not write checkpoint {path}: {err.strerror or err}. "
        f"The previous checkpoint is untouched and no partial file is left; {write_advice(err)}{resume}."
    )


class _Recorder:
    """A file that remembers the OSError its write raised: torch.save reports a failed write (a full
    disk among them) as a RuntimeError that no longer says why."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self.file.write(data))
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one; a failed write
    removes the temporary file.
    """
    tmp = _tmp_name(path)
    recorder: _Recorder | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            recorder = _Recorder(f)
            torch.save(obj, recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else recorder.error if recorder is not None else None
        if cause is None:  # torch failed for another reason than the file
            raise
        raise _write_error(path, cause) from err


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
    except FileNotFoundError as err:  # removed after the check above (a running job rotates its files)
        raise CheckpointError(f"checkpoint {path} does not exist (it was removed while being read)") from err
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
    missing = [k for k in REQUIRED if k not in state]
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


REQUIRED = (
    "version",
    "config",
    "step",
    "epoch",
    "data_position",
    "data_shape",
    "num_classes",
    "G",
    "D",
    "opt_G",
    "opt_D",
    "scaler",
    "fixed_z",
    "rng",
)


MAX_SIZE = 100_000  # a noise size, width, image side or class count beyond this is a damaged file
SCALAR_STATE = ("step", "eta", "mu", "mu_product")  # optimizer state torch keeps as one number a parameter
FACTORED_STATE = ("row_var", "col_var")  # Adafactor's: the parameter's shape with one side 1
WAY_OUT = "use another checkpoint of the run (checkpoints/step_*.pt) or start afresh"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, low: int = 0, high: int = MAX_SIZE) -> bool:
    return _is_int(value) and low <= value <= high


def _is_scalar(value: Any) -> bool:
    """One finite real number: a Python one or a 0-dim tensor."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return False
        value = value.item()
    return _is_number(value)


def _tensor_dict(value: Any) -> bool:
    """A state dict: tensors by name."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def config_problems(config: Any) -> list[str]:
    """What makes a checkpoint's saved config unusable: no mapping, interpolations that do not resolve,
    a noise size or widths outside what any model builds (a width of 10^9 would allocate without end)."""
    if not isinstance(config, dict):
        return [f"config is {_describe(config)}, not a mapping"]
    try:
        plain = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception as err:  # OmegaConf's errors for odd keys, interpolations and resolvers
        return [f"config cannot be resolved ({_first_line(err)})"]
    model = plain.get("model") if isinstance(plain, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return ["config.model is missing or has no name"]
    problems = []
    if not _count(model.get("z_dim"), 1):
        problems.append(f"config.model.z_dim is {_describe(model.get('z_dim'))}, not a size in 1..{MAX_SIZE}")
    for key, value in model.items():
        values = value if isinstance(value, list) else [value]
        if key == "z_dim" or not values or not all(_is_int(v) for v in values):
            continue
        low = 1 if "width" in str(key) or "hidden" in str(key) else 0
        if not all(low <= v <= MAX_SIZE for v in values):
            problems.append(f"config.model.{key} is {value!r}, outside {low}..{MAX_SIZE}")
    return problems


def rng_problems(rng: Any) -> list[str]:
    """Whether `rng` is what `rng_state` writes, tried on throwaway generators (not the real ones)."""
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= rng.keys():
        return ["rng is not a dict of the python, numpy and torch generators' states"]
    problems = []
    try:
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))
    except Exception:  # setstate refuses a bad state with TypeError, ValueError or OverflowError
        problems.append("rng.python is not a state of Python's generator")
    try:
        kind, keys, pos, has_gauss, gauss_np = rng["numpy"]
        np.random.RandomState().set_state((kind, keys.numpy(), pos, has_gauss, gauss_np))
    except Exception:
        problems.append("rng.numpy is not a state of NumPy's generator")
    try:
        torch.Generator().set_state(rng["torch"])
    except Exception:
        problems.append("rng.torch is not a state of torch's CPU generator")
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, (list, tuple)) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 and t.numel() for t in cuda
    ):
        problems.append("rng.cuda is not a list of CUDA generator states (byte tensors)")
    return problems


def optimizer_problems(name: str, state: Any) -> list[str]:
    """Whether `state` has the structure of an optimizer's state_dict (what fits which parameter is
    checked against the run's optimizers in `TrainState.restore`)."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        return [f"{name} is not an optimizer's state (a dict of state and param_groups)"]
    groups = state.get("param_groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(i) for i in g["params"])
        for g in groups
    ):
        return [f"{name}.param_groups is not a list of groups of parameter numbers"]
    return [
        f"{name}.state[{key!r}] is {_describe(values)}, not a dict of named values"
        for key, values in state["state"].items()
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values)
    ]


def _same_kind(saved: Any, now: Any) -> bool:
    """A saved hyperparameter is of the kind this run's optimizer holds: a number, a flag, a tuple."""
    if now is None or isinstance(now, (bool, str)):
        return saved is None or isinstance(saved, (bool, str))
    if isinstance(now, (int, float, torch.Tensor)):
        return _is_scalar(saved)
    if isinstance(now, (tuple, list)):
        return (
            isinstance(saved, (tuple, list))
            and len(saved) == len(now)
            and all(_same_kind(a, b) for a, b in zip(saved, now, strict=True))
        )
    return True


def _state_problem(key: str, value: Any, param: torch.Tensor) -> str | None:
    """What is wrong with one optimizer state value of `param`, or None."""
    if key in SCALAR_STATE:
        if not _is_scalar(value) or (key == "step" and float(value) < 0):
            return f"is {_describe(value)}, not a non-negative scalar" if key == "step" else "is no scalar"
        return None
    if value is None:  # SGD's momentum buffer before its first step
        return None
    if not isinstance(value, torch.Tensor):
        return f"is {_describe(value)}, not a tensor"
    if key in FACTORED_STATE:
        fits = value.dim() == param.dim() and all(
            a in (b, 1) for a, b in zip(value.shape, param.shape, strict=True)
        )
    else:
        fits = value.shape == param.shape
    if not fits:
        return f"has shape {list(value.shape)}, its parameter {list(param.shape)}"
    if value.dtype != param.dtype:
        return f"is {value.dtype}, its parameter {param.dtype}"
    return None


def optimizer_fit(name: str, saved: dict[str, Any], opt: torch.optim.Optimizer) -> list[str]:
    """Whether optimizer state `saved` fits `opt`, before it is loaded: every state tensor of its
    parameter's shape and dtype, scalars where torch keeps scalars (`step`), hyperparameters of the
    same kinds. Fused and foreach kernels trust these shapes and write out of bounds otherwise."""
    groups = saved["param_groups"]
    if len(groups) != len(opt.param_groups):
        return [f"{name} has {len(groups)} parameter group(s), this run's optimizer {len(opt.param_groups)}"]
    params: dict[int, torch.Tensor] = {}
    problems = []
    for i, (old, live) in enumerate(zip(groups, opt.param_groups, strict=True)):
        if len(old["params"]) != len(live["params"]):
            problems.append(
                f"{name}.param_groups[{i}] holds {len(old['params'])} parameters, "
                f"this run's optimizer {len(live['params'])}"
            )
        params.update(zip(old["params"], live["params"], strict=False))
        for key, now in live.items():
            if key != "params" and key in old and not _same_kind(old[key], now):
                problems.append(f"{name}.param_groups[{i}].{key} is {_describe(old[key])}, not like {now!r}")
    for pid, values in saved["state"].items():
        param = params.get(pid)
        if param is None:
            problems.append(f"{name}.state holds parameter {pid!r}, which no parameter group has")
            continue
        for key, value in values.items():
            problem = _state_problem(key, value, param)
            if problem:
                problems.append(f"{name}.state[{pid}].{key} {problem}")
    return problems


def weights_differ(name: str, saved: dict[str, torch.Tensor], net: nn.Module) -> list[str]:
    """The tensors of state dict `saved` that `net` lacks, or has in another shape (averaged weights'
    `_` entries aside)."""
    wanted = {k: list(v.shape) for k, v in net.state_dict().items()}
    have = {k: list(v.shape) for k, v in saved.items() if not k.startswith("_")}
    found = [
        f"{name}.{k} is {have.get(k, 'absent')} in the checkpoint, {wanted.get(k, 'absent')} in this model"
        for k in sorted(wanted.keys() | have.keys())
        if wanted.get(k) != have.get(k)
    ]
    if found and "embed.weight" in have and any(k.endswith("class_gain.weight") for k in wanted):
        found.insert(
            0,
            f"{name} is a conditional generator of an earlier gan_cli, which took the label with its noise; "
            "this version's takes it in its batch norms and cannot load it: train the model again",
        )
    return found


def damaged(path: Path, problems: list[str]) -> CheckpointError:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return CheckpointError(f"checkpoint {path} is damaged: {shown}. Nothing was restored from it; {WAY_OUT}")


@dataclass
class TrainState:
    """Everything a run needs to go on exactly where it stopped: what a checkpoint holds."""

    version: str  # gan_cli's version that wrote it
    config: dict[str, Any]  # the run's resolved config
    step: int  # generator updates done
    epoch: float  # passes over the data done
    data_position: dict[str, int]  # (epoch, index) of the next batch
    data_shape: list[int]  # one example's shape: (C, H, W) or (D,)
    num_classes: int  # classes of the data set (0: unlabelled)
    G: dict[str, torch.Tensor]
    D: dict[str, torch.Tensor]
    opt_G: dict[str, Any]
    opt_D: dict[str, Any]
    scaler: dict[str, Any]
    fixed_z: torch.Tensor  # the noise of the sample grids
    rng: dict[str, Any]  # Python's, NumPy's and torch's generators
    G_ema: dict[str, torch.Tensor] | None = None  # the moving average of G, when the run keeps one
    skipped_steps: int = 0  # steps dropped by trainer.on_nan=skip
    augment: dict[str, Any] | None = None  # ADA's adaptive probability and its running counts
    data_subset: torch.Tensor | None = None  # the indices data.limit / data.classes chose
    step_held: dict[str, dict[str, float]] | None = None  # last statistics of lazy phases (R1/R2 every k)

    @classmethod
    def capture(
        cls,
        config: dict[str, Any],
        step: int,
        G: nn.Module,
        D: nn.Module,
        nets: Nets,
        batches: Batches,
        fixed_z: torch.Tensor,
        skipped_steps: int,
        step_held: dict[str, dict[str, float]] | None = None,
    ) -> TrainState:
        """The state of a run after `step` steps (G and D: the plain networks, not their wrappers)."""
        return cls(
            version=__version__,
            config=config,
            step=step,
            epoch=batches.epochs_done,
            data_position=batches.position,
            data_shape=list(batches.data.shape),
            num_classes=batches.data.num_classes,
            G=G.state_dict(),
            D=D.state_dict(),
            opt_G=nets.opt_g.state_dict(),
            opt_D=nets.opt_d.state_dict(),
            scaler=nets.scaler.state_dict(),
            fixed_z=fixed_z.cpu(),
            rng=rng_state(),
            G_ema=nets.ema.state_dict() if nets.ema is not None else None,
            skipped_steps=skipped_steps,
            augment=nets.augment.state_dict() or None,
            data_subset=batches.data.subset,
            step_held=step_held,
        )

    def to_dict(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in state.items() if v is not None or k in REQUIRED}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})

    @classmethod
    def read(cls, path: str | Path, mmap: bool = False) -> TrainState:
        state = cls.from_dict(load(path, mmap=mmap))
        state.check(Path(path))
        return state

    def problems(self) -> list[str]:
        """Every field whose type or range is not what gan-train writes."""
        found = config_problems(self.config)
        if not isinstance(self.version, str):
            found.append(f"version is {_describe(self.version)}, not a version string")
        if not _is_int(self.step) or self.step < 0:
            found.append(f"step is {_describe(self.step)}, not a non-negative integer")
        if not _is_number(self.epoch) or self.epoch < 0:
            found.append(f"epoch is {_describe(self.epoch)}, not a non-negative number")
        position = self.data_position
        if not (
            isinstance(position, dict)
            and position.keys() == {"epoch", "index"}
            and all(_is_int(v) and v >= 0 for v in position.values())
        ):
            found.append(f"data_position is {_describe(position)}, not two non-negative ints (epoch, index)")
        shape = self.data_shape
        sizes = isinstance(shape, (list, tuple)) and all(_count(v, 1) for v in shape)
        if not sizes or len(shape) not in (1, 3):
            found.append(f"data_shape is {_describe(shape)}, not (channels, height, width) or (dimensions,)")
        if not _count(self.num_classes):
            found.append(f"num_classes is {_describe(self.num_classes)}, not a count in 0..{MAX_SIZE}")
        for name in ("G", "D"):
            if not _tensor_dict(getattr(self, name)):
                found.append(f"{name} is not a dict of tensors")
        ema = self.G_ema
        if ema is not None and not (
            _tensor_dict(ema) and "_num_updates" in ema and ema["_num_updates"].dim() == 0
        ):
            found.append("G_ema is not a dict of tensors with a scalar _num_updates")
        found += optimizer_problems("opt_G", self.opt_G) + optimizer_problems("opt_D", self.opt_D)
        if not isinstance(self.scaler, dict) or not all(_is_number(v) for v in self.scaler.values()):
            found.append(f"scaler is {_describe(self.scaler)}, not a grad scaler's numbers")
        z = self.fixed_z
        z_dim = (self.config.get("model") or {}).get("z_dim") if isinstance(self.config, dict) else None
        if not (isinstance(z, torch.Tensor) and z.is_floating_point() and z.dim() == 2 and z.shape[0] >= 1):
            found.append(f"fixed_z is {_describe(z)}, not a float batch of noise (2-D)")
        elif _is_int(z_dim) and z.shape[1] != z_dim:
            found.append(f"fixed_z has {z.shape[1]} noise dimensions, config.model.z_dim is {z_dim}")
        found += rng_problems(self.rng)
        if not _is_int(self.skipped_steps) or self.skipped_steps < 0:
            found.append(f"skipped_steps is {_describe(self.skipped_steps)}, not a non-negative integer")
        held = self.step_held
        if held is not None and not (
            isinstance(held, dict)
            and all(isinstance(s, dict) and all(_is_number(v) for v in s.values()) for s in held.values())
        ):
            found.append(f"step_held is {_describe(held)}, not the statistics of lazy phases by name")
        return found

    def check(self, path: Path) -> None:
        """Refuse, naming the file and the fields, a checkpoint whose values are not of the types and
        ranges gan-train writes. Weights-only loading proves only that no code runs; a tensor of the
        wrong shape, restored, makes fused optimizers write out of bounds."""
        problems = self.problems()
        if problems:
            raise damaged(path, problems)

    def save(self, run_dir: Path, keep: int) -> Path:
        """Write checkpoints/last.pt and, with `keep` > 0, step_NNNNNN.pt (the newest `keep` kept)."""
        folder = run_dir / "checkpoints"
        last = folder / "last.pt"
        state = self.to_dict()
        save_atomic(state, last)
        if keep > 0:
            numbered = folder / f"step_{self.step:06d}.pt"
            numbered.unlink(missing_ok=True)
            try:
                numbered.hardlink_to(last)  # same bytes, no second write
            except OSError:
                save_atomic(state, numbered)
            rotate(folder, keep)
        return last

    def restore(self, path: Path, G: nn.Module, D: nn.Module, nets: Nets, batches: Batches) -> None:
        """Put a run's networks, optimizers, data position and RNGs back as they were saved at `path`,
        once the saved networks and optimizer state are known to fit this run's (else nothing is restored)."""
        nets_differ = [*weights_differ("G", self.G, G), *weights_differ("D", self.D, D)]
        if nets.ema is not None and self.G_ema is not None:
            nets_differ += weights_differ("G_ema", self.G_ema, nets.ema.model)
        if nets_differ:
            raise CheckpointError(
                f"checkpoint {path} does not match this model (another architecture, width or image size?): "
                f"{'; '.join(nets_differ[:3])} ... see the config saved in the checkpoint's run folder"
            )
        misfits = [
            *optimizer_fit("opt_G", self.opt_G, nets.opt_g),
            *optimizer_fit("opt_D", self.opt_D, nets.opt_d),
        ]
        if misfits:
            raise CheckpointError(
                f"the optimizer state in checkpoint {path} does not fit this run's optimizers (another "
                f"optimizer or model, or a damaged file): {'; '.join(misfits[:5])}. Nothing was restored; "
                f"{WAY_OUT}"
            )
        try:
            G.load_state_dict(self.G)
            D.load_state_dict(self.D)
            if nets.ema is not None and self.G_ema is not None:
                nets.ema.load_state_dict(self.G_ema)
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {path} does not match this model (another architecture, width or image size?): "
                f"{str(err).splitlines()[0]} ... see the config saved in the checkpoint's run folder"
            ) from err
        if nets.ema is not None and self.G_ema is None:  # a checkpoint written without the average
            nets.ema.model.load_state_dict(G.state_dict())
        try:
            nets.opt_g.load_state_dict(self.opt_G)
            nets.opt_d.load_state_dict(self.opt_D)
            nets.scaler.load_state_dict(self.scaler)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"the optimizer state in checkpoint {path} does not fit this run's optimizers "
                f"(another optimizer or model?): {err}"
            ) from err
        if self.augment:
            nets.augment.load_state_dict(self.augment)
        batches.seek(**self.data_position)

    def check_fits(self, path: Path, data_shape: tuple[int, ...], model_name: str) -> None:
        """Refuse, with the file and the mismatch named, a checkpoint made for other data or another model."""
        saved_model = (self.config or {}).get("model", {}).get("name")
        problems = []
        if saved_model is not None and saved_model != model_name:
            problems.append(f"it holds model={saved_model}, this run builds model={model_name}")
        if self.data_shape and tuple(self.data_shape) != tuple(data_shape):
            problems.append(
                f"it was trained on data of shape {list(self.data_shape)} (channels, height, width), "
                f"this run's data has shape {list(data_shape)}"
            )
        if problems:
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: {'; '.join(problems)}. "
                "Resume with the data and model it was made for, or start a new run"
            )


def _build_generator(file: Path, cfg: DictConfig, data: Data, weights: dict[str, torch.Tensor]) -> nn.Module:
    """G as the saved config builds it, once a copy without storage (on the meta device) showed that
    the config builds the saved weights' shapes: a config that does not fit them fails before any
    memory is allocated for it."""
    try:
        with torch.device("meta"):
            probe, _ = build_models(cfg.model, data)
    except Exception as err:  # a damaged config fails in the model's own code, in many ways
        raise CheckpointError(
            f"{file}: the config saved in it does not build a model ({_first_line(err)}); {WAY_OUT}"
        ) from err
    differ = weights_differ("G", weights, probe)
    if differ:
        raise CheckpointError(
            f"{file}: the saved generator does not match its config ({'; '.join(differ[:3])}); {WAY_OUT}"
        )
    try:
        G, _ = build_models(cfg.model, data)
    except GanCliError as err:
        raise CheckpointError(
            f"{file}: the config saved in it does not build a model ({err}); {WAY_OUT}"
        ) from err
    return G


def load_generator(
    path: str | Path, device: torch.device, use_ema: bool = True
) -> tuple[nn.Module, DictConfig, TrainState]:
    """(G in eval mode, the run's config, its state) from a run directory or a .pt file.

    With `use_ema` the averaged weights are used when the checkpoint has them, with batch-norm
    statistics of their own, as training sampled them."""
    file = find(path)
    state = TrainState.read(file)
    cfg = OmegaConf.create(state.config)
    shape = tuple(int(s) for s in state.data_shape)
    data = Data(
        kind="image" if len(shape) == 3 else "points", shape=shape, num_classes=int(state.num_classes)
    )
    averaged = use_ema and state.G_ema is not None
    weights = state.G_ema if averaged else state.G
    assert weights is not None
    weights = {k: v for k, v in weights.items() if not k.startswith("_")}
    G = _build_generator(file, cfg, data, weights)
    try:
        G.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: the saved generator does not match its config: {err}") from err
    G.to(device).eval()
    if averaged:
        recompute_norm_stats(G, int(cfg.model.z_dim), device, label_classes(cfg.model, data.num_classes))
    return G, cfg, state
