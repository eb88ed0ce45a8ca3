"""Adding a model through the public registry: one Python file plus one YAML file, no edit to the loop."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gan_cli.datasets import DATASETS
from gan_cli.errors import ConfigError
from gan_cli.models import MODELS
from gan_cli.registry import Registry
from tests.conftest import QUICK, pythonpath, run_cli

TOY_MODEL = '''
    """A toy model registered from outside the package."""
    import torch
    from torch import nn

    from gan_cli.models import MODELS


    class ToyG(nn.Module):
        def __init__(self, z_dim, shape):
            super().__init__()
            self.z_dim, self.shape = z_dim, shape
            self.net = nn.Linear(z_dim, shape[0])

        def forward(self, z, y=None):
            return self.net(z)


    class ToyD(nn.Module):
        def __init__(self, shape, scale):
            super().__init__()
            self.net = nn.Linear(shape[0], 1)
            self.scale = scale

        def forward(self, x, y=None):
            return self.scale * self.net(x).squeeze(1)


    @MODELS.register("toy")
    def build(cfg, data):
        return ToyG(cfg.z_dim, data.shape), ToyD(data.shape, cfg.scale)
'''


def test_toy_model_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "toy_gan.py").write_text(textwrap.dedent(TOY_MODEL))
    (tmp_path / "configs" / "model").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "toy.yaml").write_text("name: toy\nz_dim: 3\nscale: 0.5\n")
    res = run_cli(
        *QUICK,
        "data=gaussians",
        "model=toy",
        "plugins=[toy_gan]",
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]",
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert "model:\n  name: toy\n  z_dim: 3" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


def test_missing_plugin_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli(*QUICK, "data=gaussians", "model=mlp", "plugins=[no_such_module]", cwd=tmp_path)
    assert res.returncode == 2
    assert "plugins: cannot import 'no_such_module'" in res.stderr


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'vit'; choose one of: dcgan, mlp, resnet"):
        MODELS.get("vit")
    with pytest.raises(ConfigError, match="cifar10, fashion_mnist, gaussians, image_folder, mnist"):
        DATASETS.get("celeba")


def test_double_registration_is_refused() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)
