"""Hostile and broken checkpoints, and saving onto a full disk or into an unwritable folder."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_cli import checkpoint as ckpt
from gan_cli import resume
from gan_cli.errors import CheckpointError
from tests.conftest import QUICK, run_cli
from tests.runs import GAUSS, load, make_cfg, train


class PlantsAFile:
    """Unpickling this runs a shell command that creates a file: what a crafted checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def plant(folder: Path) -> tuple[Path, Path]:
    target = folder / "pwned"
    evil = folder / "evil.pt"
    torch.save({"G": PlantsAFile(target), "D": {}, "step": 1}, evil)
    return evil, target


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    evil, target = plant(tmp_path)
    with pytest.raises(CheckpointError) as err:
        ckpt.load(evil)
    text = str(err.value)
    assert str(evil) in text and "refusing to load" in text and "system" in text
    assert "weights_only` set to `False`" not in text, "no advice to switch the protection off"
    assert not target.exists()
    raw = tmp_path / "raw.pt"  # a plain pickle, not torch's zip format
    raw.write_bytes(pickle.dumps({"G": PlantsAFile(target)}))
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        ckpt.load(raw)
    assert not target.exists()


def test_cli_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    evil, target = plant(tmp_path)
    res = run_cli(
        *QUICK, "experiment=gaussians_demo", "trainer.steps=2", f"trainer.resume={evil}", cwd=tmp_path
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refusing to load" in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert not target.exists()
    assert not (tmp_path / "run").exists(), "a refused run leaves no run directory"


def test_truncated_and_corrupt_checkpoints_name_the_file(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "trainer.steps=2"))
    good = tmp_path / "checkpoints" / "last.pt"
    data = good.read_bytes()
    for name, content in (
        ("half.pt", data[: len(data) // 2]),
        ("noise.pt", os.urandom(4096)),
        ("empty.pt", b""),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            ckpt.load(path)
        assert str(path) in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a gan_cli checkpoint"):
        ckpt.load(other)
    torch.save({"G": {}, "D": {}}, other)
    with pytest.raises(CheckpointError, match="lacks version, config, step"):
        ckpt.load(other)


def test_a_corrupt_last_checkpoint_falls_back_to_a_numbered_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_cfg(run, "trainer.steps=4", "trainer.checkpoint_every=2"))
    last = run / "checkpoints" / "last.pt"
    last.unlink()  # step_000004.pt, a hard link to the same bytes, stays whole
    last.write_bytes(b"broken")
    train(make_cfg(tmp_path / "b", "trainer.steps=6", f"trainer.resume={run}"))
    assert load(run)["step"] == 6


def full_disk_after(n_bytes: int) -> Any:
    real_save = torch.save

    def save(obj: Any, f: Any) -> None:
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:n_bytes])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(make_cfg(tmp_path, "trainer.steps=2"))
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    monkeypatch.setattr(ckpt.torch, "save", full_disk_after(1000))
    with pytest.raises(CheckpointError) as err:
        train(make_cfg(tmp_path, "trainer.steps=4", f"trainer.resume={tmp_path}"))
    assert "disk is full" in str(err.value) and str(last) in str(err.value)
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*tmp*")), "the partial file is removed"


def test_unwritable_output_folder_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match="could not write checkpoint") as err:
        train(make_cfg(tmp_path, "trainer.steps=2"))
    assert str(tmp_path / "checkpoints") in str(err.value)
    assert not (tmp_path / "metrics.jsonl").exists(), "refused before any training"

    real_open = open

    def denied(path: Any, *args: Any, **kwargs: Any) -> Any:
        if ".pt.tmp" in str(path) or ".write_test" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(CheckpointError, match="not writable; fix its permissions"):
        ckpt.save_atomic({"x": 1}, tmp_path / "ok" / "last.pt")
    with pytest.raises(CheckpointError, match="not writable"):
        ckpt.prepare_folder(tmp_path / "ok")


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.pt.tmp123").write_bytes(b"half")
    ckpt.prepare_folder(folder)
    assert list(folder.iterdir()) == []


def test_cli_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("not a folder")
    res = run_cli(*GAUSS, "trainer.steps=2", "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2 and "could not write checkpoint" in res.stdout + res.stderr


# Damaged fields: checkpoints that weights-only loading accepts but whose values are not what gan-train
# writes. Each is a real checkpoint with one field edited.


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step run on the 8-Gaussian ring, with numbered checkpoints."""
    run = tmp_path_factory.mktemp("good") / "run"
    train(make_cfg(run, "trainer.steps=2", "trainer.checkpoint_every=1"))
    return run


def edited(run: Path, folder: Path, edit: Any, name: str = "bad.pt") -> Path:
    """A copy of the run's last checkpoint with `edit(state)` applied."""
    state = load(run)
    edit(state)
    path = folder / name
    torch.save(state, path)
    return path


def set_path(*keys: Any, value: Any) -> Any:
    def edit(state: dict[str, Any]) -> None:
        node = state
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


DAMAGED = {
    "step-negative": (set_path("step", value=-1), "step is -1"),
    "step-float": (set_path("step", value=2.5), "step is 2.5"),
    "epoch-text": (set_path("epoch", value="one"), "epoch is 'one'"),
    "epoch-nan": (set_path("epoch", value=float("nan")), "epoch is nan"),
    "position-one-key": (set_path("data_position", value={"epoch": 0}), "data_position"),
    "position-negative": (set_path("data_position", "index", value=-4), "data_position"),
    "data-shape-zero": (set_path("data_shape", value=[2, 0]), "data_shape"),
    "data-shape-two-dims": (set_path("data_shape", value=[28, 28]), "data_shape"),
    "num-classes": (set_path("num_classes", value=-3), "num_classes is -3"),
    "version": (set_path("version", value=7), "version is 7"),
    "fixed-z-int": (set_path("fixed_z", value=torch.zeros(4, 16, dtype=torch.long)), "fixed_z"),
    "fixed-z-1d": (set_path("fixed_z", value=torch.zeros(16)), "fixed_z"),
    "fixed-z-dim": (set_path("fixed_z", value=torch.zeros(4, 7)), "fixed_z has 7 noise dimensions"),
    "rng-torch": (set_path("rng", "torch", value=torch.zeros(10, dtype=torch.uint8)), "rng.torch"),
    "rng-numpy": (set_path("rng", "numpy", 1, value=torch.zeros(3)), "rng.numpy"),
    "rng-python": (set_path("rng", "python", value=(3, (1, 2), None)), "rng.python"),
    "rng-missing": (set_path("rng", value={"torch": torch.zeros(1)}), "rng is not"),
    "ema-values": (set_path("G_ema", value={"net.0.weight": 1.0}), "G_ema"),
    "ema-no-count": (lambda s: s["G_ema"].pop("_num_updates"), "G_ema"),
    "G-not-tensors": (set_path("G", value=[1, 2]), "G is not a dict of tensors"),
    "opt-structure": (set_path("opt_D", "state", value=3), "opt_D is not an optimizer's state"),
    "opt-groups": (set_path("opt_G", "param_groups", 0, "params", value=["a"]), "opt_G.param_groups"),
    "scaler": (set_path("scaler", value={"scale": "big"}), "scaler"),
    "skipped": (set_path("skipped_steps", value=-1), "skipped_steps is -1"),
    "config-not-a-dict": (set_path("config", value=[1]), "config is [1]"),
    "config-interpolation": (set_path("config", "model", "z_dim", value="${nowhere}"), "cannot be resolved"),
    "config-resolver": (set_path("config", "model", "name", value="${oc.env:GAN_CLI_UNSET_VAR}"), "resolved"),
    "z-dim-huge": (set_path("config", "model", "z_dim", value=10**6), "config.model.z_dim is 1000000"),
    "z-dim-zero": (set_path("config", "model", "z_dim", value=0), "config.model.z_dim is 0"),
    "width-huge": (set_path("config", "model", "g_hidden", value=[10**9]), "config.model.g_hidden"),
    "width-negative": (set_path("config", "model", "d_hidden", value=[-5]), "config.model.d_hidden"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_fields_are_refused_naming_the_file_and_field(
    good_run: Path, tmp_path: Path, case: str
) -> None:
    edit, field = DAMAGED[case]
    bad = edited(good_run, tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        ckpt.TrainState.read(bad)
    text = str(err.value)
    assert f"checkpoint {bad} is damaged" in text and field in text, text
    assert "checkpoints/step_*.pt" in text and "start afresh" in text, "the way out"


def test_a_real_checkpoint_passes_every_check(good_run: Path) -> None:
    for path in [good_run / "checkpoints" / "last.pt", *ckpt.numbered(good_run / "checkpoints")]:
        assert ckpt.TrainState.read(path).problems() == []


def test_a_damaged_last_checkpoint_resumes_from_a_numbered_one(good_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for path in (good_run / "checkpoints").iterdir():
        (run / "checkpoints" / path.name).write_bytes(path.read_bytes())
    edited(good_run, run / "checkpoints", set_path("fixed_z", value=torch.zeros(3)), name="last.pt")
    path, state = resume.load_run(run)
    assert path.name == "step_000002.pt" and state.step == 2


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            set_path("opt_G", "state", 0, "exp_avg", value=torch.zeros(3)),
            "opt_G.state[0].exp_avg has shape [3]",
        ),
        (set_path("opt_D", "state", 1, "step", value=torch.zeros(1000)), "opt_D.state[1].step is"),
    ],
    ids=["exp-avg-shape", "step-not-scalar"],
)
def test_cli_refuses_optimizer_state_that_does_not_fit(
    good_run: Path, tmp_path: Path, edit: Any, field: str
) -> None:
    """Fused Adam on the CPU writes out of bounds with such state (the process dies of a segfault)."""
    bad = edited(good_run, tmp_path, edit)
    res = run_cli(*GAUSS, "trainer.steps=6", "hydra.run.dir=run", f"trainer.resume={bad}", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert str(bad) in out and field in out and "checkpoints/step_*.pt" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "run").exists(), "refused before anything was written"


def adam_for(*shapes: tuple[int, ...], **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(s)) for s in shapes], **kwargs)


def stepped(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The state dict of `opt` after one step."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def test_optimizer_state_is_checked_against_the_run_optimizers() -> None:
    saved = stepped(adam_for((4, 3), (3,)))
    assert ckpt.optimizer_fit("opt_G", saved, adam_for((4, 3), (3,))) == []
    problems = ckpt.optimizer_fit("opt_G", saved, adam_for((4, 3), (5,)))
    assert problems and all("opt_G.state[1]" in p and "[3], its parameter [5]" in p for p in problems)
    assert ckpt.optimizer_fit("opt_G", saved, adam_for((4, 3)))[0].startswith(
        "opt_G.param_groups[0] holds 2 parameters"
    )
    wrong_dtype = stepped(adam_for((4, 3), (3,)))
    wrong_dtype["state"][0]["exp_avg_sq"] = wrong_dtype["state"][0]["exp_avg_sq"].double()
    assert ckpt.optimizer_fit("o", wrong_dtype, adam_for((4, 3), (3,))) == [
        "o.state[0].exp_avg_sq is torch.float64, its parameter torch.float32"
    ]
    text_lr = stepped(adam_for((3,)))
    text_lr["param_groups"][0]["lr"] = "fast"
    assert "o.param_groups[0].lr is 'fast'" in ckpt.optimizer_fit("o", text_lr, adam_for((3,)))[0]
    stray = stepped(adam_for((3,)))
    stray["state"][7] = {"step": torch.tensor(1.0)}
    assert "parameter 7, which no parameter group has" in ckpt.optimizer_fit("o", stray, adam_for((3,)))[0]


def test_other_optimizers_state_layouts_fit() -> None:
    """Scalars under torch's scalar names, SGD's empty momentum, Adafactor's factored statistics."""
    shapes = [(4, 3), (3,)]
    for make in (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        lambda ps: torch.optim.NAdam(ps),
        lambda ps: torch.optim.ASGD(ps),
        lambda ps: torch.optim.RMSprop(ps, momentum=0.5),
        lambda ps: torch.optim.Adafactor(ps),
    ):
        saved = stepped(make([torch.nn.Parameter(torch.zeros(s)) for s in shapes]))
        fresh = make([torch.nn.Parameter(torch.zeros(s)) for s in shapes])
        assert ckpt.optimizer_fit("o", saved, fresh) == [], type(fresh).__name__


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """A two-step DCGAN run on the tiny MNIST fixture (gan-sample and gan-eval need images)."""
    run = tmp_path_factory.mktemp("image") / "run"
    base = [
        "debug=tiny",
        "model=dcgan",
        f"data.root={mnist_root}",
        "data.download=false",
        "logger.sample_every=0",
    ]
    train(make_cfg(run, "trainer.steps=2", base=base))
    return run


@pytest.mark.parametrize(
    ("command", "edit", "words"),
    [
        ("gan-sample", set_path("config", "model", "z_dim", value=10**6), ["config.model.z_dim is 1000000"]),
        ("gan-sample", set_path("config", "model", "g_width", value="${nowhere}"), ["cannot be resolved"]),
        ("gan-sample", set_path("config", "model", "g_width", value=50_000), ["does not match its config"]),
        ("gan-eval", set_path("fixed_z", value=torch.zeros(2, 3, 4)), ["fixed_z"]),
    ],
    ids=["z-dim-huge", "interpolation", "width-for-other-weights", "eval-fixed-z"],
)
def test_sample_and_eval_refuse_damaged_checkpoints(
    image_run: Path, tmp_path: Path, command: str, edit: Any, words: list[str]
) -> None:
    bad = edited(image_run, tmp_path, edit)
    res = run_cli(str(bad), "n=4", "device=cpu", name=command, cwd=tmp_path, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert str(bad) in out and all(w in out for w in words), out
    assert "Traceback" not in out
