"""A plain (non-editable) install finds its configs from any working directory, and building it is quiet."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_from_anywhere(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("gan_cli-*.whl"))
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Its processes get no PYTHONPATH: a checkout on it (the tests may run against one) holds gan_cli and
    # the gan_cli.egg-info the wheel build leaves, which pip takes for gan-cli installed: the wheel
    # would be neither installed nor imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The heavy dependencies (torch, hydra...) come from this environment; the package itself from the wheel.
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = subprocess.run(
        [str(py), "-c", "import gan_cli.configs as c; print(c.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert str(REPO) not in located.stdout and "site-packages" in located.stdout
    args = ["experiment=gaussians_demo", "trainer.steps=2", "logger.log_every=1", "hydra.run.dir=run"]
    res = subprocess.run(
        [str(env_dir / "bin" / "gan-train"), *args], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    assert (elsewhere / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_wheel_build_is_quiet_and_ships_every_config(tmp_path: Path) -> None:
    """The build prints no packaging warnings (verbose, so the build backend's output shows), and the
    wheel holds every YAML file under configs/."""
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    output = res.stdout + res.stderr
    for warning in ("would be ignored", "absent from the `packages`", "Deprecat"):
        assert warning not in output, [line for line in output.splitlines() if warning in line][:3]
    wheel = next(tmp_path.glob("gan_cli-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"gan_cli/configs/{p.relative_to(REPO / 'configs').as_posix()}"
        for p in REPO.glob("configs/**/*.yaml")
    }
    assert len(configs) > 30
    assert sorted(configs - shipped) == []
