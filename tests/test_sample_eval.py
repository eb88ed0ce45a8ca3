"""`gan-sample`, `gan-eval` and `gan-classifier` through the installed scripts, on tiny trained runs."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_cli.commands.classifier import ClassifierArgs
from gan_cli.commands.evaluate import EvalArgs
from gan_cli.commands.sample import SampleArgs
from tests.conftest import QUICK, run_cli, script


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> dict[str, Path]:
    """A four-step unconditional MLP run and a conditional DCGAN run on the tiny MNIST fixture, trained
    once per pytest run: the tests only read them, so pytest-xdist workers share them (the first to
    take the lock trains them)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this pytest run's folder, above each worker's own
    folder = shared / "sample_eval_runs"
    out = {name: folder / name / "run" for name in ("plain", "cond")}
    with open(shared / "sample_eval_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "trained").is_file():
            for name, extra in (
                ("plain", ["model=mlp"]),
                ("cond", ["model=dcgan", "model.conditional=true"]),
            ):
                cwd = folder / name
                shutil.rmtree(cwd, ignore_errors=True)  # what a failed attempt left
                cwd.mkdir(parents=True)
                res = run_cli(*QUICK, *extra, f"data.root={mnist_root}", "data.download=false", cwd=cwd)
                assert res.returncode == 0, res.stderr
            (folder / "trained").touch()
    return out


def grid_size(n_cols: int, n_rows: int, size: int = 28, pad: int = 2) -> tuple[int, int]:
    return n_cols * (size + pad) + pad, n_rows * (size + pad) + pad


def test_sample_png_grid(runs: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(str(runs["plain"]), "n=16", "out=grid.png", "seed=3", name="gan-sample", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "grid.png").size == grid_size(4, 4)
    again = run_cli(str(runs["plain"]), "n=16", "out=again.png", "seed=3", name="gan-sample", cwd=tmp_path)
    assert again.returncode == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "grid.png")), np.asarray(Image.open(tmp_path / "again.png"))
    )


def test_conditional_grid_has_one_row_per_class(runs: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(str(runs["cond"]), "n=30", "out=rows.png", name="gan-sample", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "rows.png").size == grid_size(3, 10)
    train_grid = sorted((runs["cond"] / "samples").glob("step_*.png"))[-1]
    assert Image.open(train_grid).size == grid_size(1, 10)  # logger.num_samples=16 -> 1 per class


def test_sample_npz_with_label(runs: dict[str, Path], tmp_path: Path) -> None:
    args = [str(runs["cond"]), "n=12", "format=npz", "label=7", "out=seven.npz"]
    res = run_cli(*args, name="gan-sample", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    arrays = np.load(tmp_path / "seven.npz")
    assert arrays["images"].shape == (12, 28, 28, 1) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == [7] * 12


def test_sample_interpolation(runs: dict[str, Path], tmp_path: Path) -> None:
    args = [str(runs["plain"]), "n=25", "interpolate=true", "format=npz", "out=path.npz"]
    res = run_cli(*args, name="gan-sample", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = np.load(tmp_path / "path.npz")["images"].astype(float).reshape(5, 5, -1)
    steps = np.abs(np.diff(rows, axis=1)).mean(2)  # change between neighbours along each row
    ends = np.abs(rows[:, -1] - rows[:, 0]).mean(1)
    assert (steps.max(1) < ends).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["n=4", "colour=red"], "known settings: n, out"),
        (["label=3"], "only applies to conditional models"),
        (["format=jpg"], "allowed: png, npz, gif"),
        (["truncation=0"], "truncation=0.0 is not valid; give psi in (0, 1]"),
        (["truncation=1.5"], "truncation=1.5 is not valid; give psi in (0, 1]"),
        (["format=gif"], "add interpolate=true"),
    ],
)
def test_sample_refuses_bad_settings(
    runs: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    res = run_cli(str(runs["plain"]), *args, name="gan-sample", cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_truncation_scales_the_noise_and_one_is_plain_sampling(runs: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from gan_cli.checkpoint import load_generator
    from gan_cli.metrics.reference import to_uint8

    def sampled(*extra: str) -> np.ndarray:
        out = f"s{len(list(tmp_path.iterdir()))}.npz"
        args = [str(runs["plain"]), "n=8", "seed=3", "format=npz", f"out={out}", *extra]
        res = run_cli(*args, name="gan-sample", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return np.load(tmp_path / out)["images"]

    plain, one, half = sampled(), sampled("truncation=1"), sampled("truncation=0.5")
    assert np.array_equal(plain, one)
    G, cfg, _ = load_generator(runs["plain"], torch.device("cpu"))
    z = torch.randn(8, int(cfg.model.z_dim), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = to_uint8(G(0.5 * z)).permute(0, 2, 3, 1).numpy()  # psi * z: halfway to the mean
        unscaled = to_uint8(G(z)).permute(0, 2, 3, 1).numpy()
    assert np.abs(half.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(plain.astype(int) - unscaled.astype(int)).max() <= 1
    assert not np.array_equal(half, plain)


def test_sample_gif_walk(runs: dict[str, Path], tmp_path: Path) -> None:
    args = [str(runs["plain"]), "n=9", "interpolate=true", "format=gif", "frames=6", "out=walk.gif"]
    res = run_cli(*args, name="gan-sample", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.format == "GIF" and gif.n_frames == 6 and gif.size == grid_size(3, 3)
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")))
    assert not np.array_equal(frames[0], frames[-1])
    res = run_cli(
        str(runs["cond"]),
        "n=20",
        "interpolate=true",
        "format=gif",
        "frames=3",
        "out=c.gif",
        name="gan-sample",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "c.gif").size == grid_size(2, 10)  # one row per class, as the PNG grid


def test_sample_to_an_unwritable_place(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    for out in ("a_file/grid.png", "a_file/x/grid.png"):
        res = run_cli(str(runs["plain"]), "n=4", f"out={out}", name="gan-sample", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert f"cannot write out={out}" in res.stderr and "Traceback" not in res.stderr


def test_sample_refuses_an_out_of_range_seed(runs: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(str(runs["plain"]), "n=4", "seed=-3", name="gan-sample", cwd=tmp_path)
    assert res.returncode == 2 and "seed=-3 is not valid" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_eval_prints_its_metrics_when_the_file_cannot_be_written(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    args = [str(runs["plain"]), "metrics=[fid,kid]", "n=4", "real=4", "out=a_file/e.json"]
    res = run_cli(*args, name="gan-eval", cwd=tmp_path, env={"GAN_CLI_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2, res.stderr
    assert "cannot write a_file/e.json" in res.stderr and "metrics are printed above" in res.stderr
    assert "Traceback" not in res.stderr
    table = dict(line.split() for line in res.stdout.splitlines()[1:] if len(line.split()) == 2)
    assert float(table["fid"]) > 0 and "kid" in table


def test_sample_missing_run(tmp_path: Path) -> None:
    res = run_cli(str(tmp_path / "nowhere"), name="gan-sample", cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr


@pytest.mark.slow
def test_eval_with_inception_and_classifier(runs: dict[str, Path], mnist_root: Path, tmp_path: Path) -> None:
    env = {"GAN_CLI_CACHE": str(tmp_path / "cache")}
    res = run_cli("mnist", f"root={mnist_root}", "epochs=1", name="gan-classifier", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout and (tmp_path / "cache" / "classifiers" / "mnist-28px.pt").is_file()
    args = [str(runs["cond"]), "metrics=[fid,kid,classifier]", "n=10", "real=12", "out=e.json"]
    res = run_cli(*args, name="gan-eval", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["step"] == 4 and record["generator"] == "ema" and record["n_generated"] == 10
    assert record["fid"] > 0 and 0 <= record["label_accuracy"] <= 1 and 1 <= record["classes_covered"] <= 10
    assert "fid" in res.stdout and "classifier_is" in res.stdout
    assert len(list((tmp_path / "cache" / "reference").glob("mnist-test-28px-n12-*-inception.npy"))) == 1


HELP = [
    ("gan-sample", SampleArgs, ["ema=true  use the moving-average generator", "device=auto  auto | cpu"]),
    ("gan-eval", EvalArgs, ["real=10000  real images in the reference set", "data.KEY=VALUE  overrides"]),
    ("gan-classifier", ClassifierArgs, ["epochs=null  passes over the training split"]),
]


@pytest.mark.parametrize(("name", "schema", "lines"), HELP, ids=[h[0] for h in HELP])
@pytest.mark.parametrize(
    "flag", [["--help"], ["-h"], ["RUN", "n=3", "--help"]], ids=["long", "short", "late"]
)
def test_help_lists_every_setting_with_its_comment(
    tmp_path: Path, name: str, schema: type, lines: list[str], flag: list[str]
) -> None:
    res = run_cli(*flag, name=name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "error" not in res.stderr + res.stdout and res.stdout.startswith(name)
    listed = {
        line.split()[0].split("=")[0].split(".")[0] for line in res.stdout.splitlines() if line[:2] == "  "
    }
    assert listed == {f.name for f in fields(schema)}
    flat = " ".join(" ".join(line.split()) for line in res.stdout.splitlines())
    for line in lines:
        assert " ".join(line.split()) in flat


def test_sweep_report_help(tmp_path: Path) -> None:
    res = run_cli("--help", name="gan-sweep-report", cwd=tmp_path)
    assert res.returncode == 0 and "--format" in res.stdout and "sweep_dir" in res.stdout


@pytest.mark.slow
def test_eval_shows_a_progress_bar_on_a_terminal(runs: dict[str, Path], tmp_path: Path) -> None:
    """stderr a terminal: tqdm bars for the feature passes (the JSON and table still go to stdout)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 wide
    env = {**os.environ, "GAN_CLI_CACHE": str(tmp_path / "cache")}
    args = [script("gan-eval"), str(runs["plain"]), "metrics=[fid]", "n=20", "real=20", "out=e.json"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(leader)
    assert proc.returncode == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "inception features of generated images" in text and "20/20" in text and "img/s" in text
    assert "fid" in out
