"""Checkpoints: the one training state (`TrainState`), written atomically and read with
`weights_only=True` (no code runs on load), and loading a trained generator back from one.

A checkpoint is a dict of tensors and plain Python values: the networks, both optimizers, the grad
scaler, the step, the data position, every RNG state, the resolved config and the version.
"""

from __future__ import annotations

import contextlib
import errno
import logging
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
from gan_cli.errors import CheckpointError
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
    if err.errno == errno.ENOSPC:
        why = "the disk is full; free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable; fix its permissions or choose another output_dir"
    else:
        why = "check that the folder exists and is writable, and that the disk has space"
    return CheckpointError(
        f"could not write checkpoint {path}: {err.strerror or err}. "
        f"The previous checkpoint is untouched; {why}."
    )


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _write_error(path, err) from err


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
        return cls.from_dict(load(path, mmap=mmap))

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
        """Put a run's networks, optimizers, data position and RNGs back as they were saved at `path`."""
        try:
            G.load_state_dict(self.G)
            D.load_state_dict(self.D)
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {path} does not match this model (another architecture, width or image size?): "
                f"{str(err).splitlines()[0]} ... see the config saved in the checkpoint's run folder"
            ) from err
        if nets.ema is not None and self.G_ema is not None:
            nets.ema.load_state_dict(self.G_ema)
        elif nets.ema is not None:  # a checkpoint written without the average: start it from G
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
    G, _ = build_models(cfg.model, data)
    averaged = use_ema and state.G_ema is not None
    weights = state.G_ema if averaged else state.G
    assert weights is not None
    weights = {k: v for k, v in weights.items() if not k.startswith("_")}
    try:
        G.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{file}: the saved generator does not match its config: {err}") from err
    G.to(device).eval()
    if averaged:
        recompute_norm_stats(G, int(cfg.model.z_dim), device, label_classes(cfg.model, data.num_classes))
    return G, cfg, state
