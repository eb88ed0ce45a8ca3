"""`gan-export` through the installed script: the files run without gan_cli and compute what the eager
generator computes, for several batch sizes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gan_cli.checkpoint import load_generator
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # runs in make test; make test-fast leaves it out

BATCHES = (1, 5)

# Plain Python: torch alone, with gan_cli made unimportable, loads the file and runs it.
PLAIN = textwrap.dedent(
    """
    import sys
    sys.modules["gan_cli"] = None
    import torch
    G = torch.jit.load(sys.argv[1])
    inputs = torch.load(sys.argv[2])
    torch.save([G(z, y) for z, y in inputs], sys.argv[3])
    print(G.z_dim, G.num_classes)
    """
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """A four-step conditional DCGAN (batch norm in G, a label input) on the tiny MNIST fixture."""
    cwd = tmp_path_factory.mktemp("export")
    args = ["debug=tiny", "model=dcgan", "model.conditional=true", f"data.root={mnist_root}"]
    res = run_cli(*args, "data.download=false", "hydra.run.dir=run", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return cwd / "run"


def inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(n, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)) for n in BATCHES]


def eager(run: Path, ema: bool) -> list[torch.Tensor]:
    G, _, _ = load_generator(run, torch.device("cpu"), use_ema=ema)
    with torch.no_grad():
        return [G(z, y) for z, y in inputs()]


@pytest.mark.parametrize("ema", [True, False])
def test_torchscript_runs_without_gan_cli_and_matches(run: Path, tmp_path: Path, ema: bool) -> None:
    res = run_cli(str(run), "format=torchscript", "out=g.pt", f"ema={ema}", name="gan-export", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    torch.save(inputs(), tmp_path / "inputs.pt")
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN, "g.pt", "inputs.pt", "outputs.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["16", "10"]
    outputs = torch.load(tmp_path / "outputs.pt")
    expected = eager(run, ema)
    for got, want, n in zip(outputs, expected, BATCHES, strict=True):
        assert got.shape == (n, 1, 28, 28)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    other = eager(run, not ema)  # ema picks the generator: the other one draws other images
    assert not torch.allclose(outputs[1], other[1], atol=1e-3)


def test_onnx_runs_in_onnxruntime_and_matches(run: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    res = run_cli(str(run), "format=onnx", "out=g.onnx", name="gan-export", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z", "y"]
    for (z, y), want in zip(inputs(), eager(run, True), strict=True):
        (got,) = session.run(None, {"z": z.numpy(), "y": y.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=0)


def test_export_refuses_an_unknown_format(run: Path, tmp_path: Path) -> None:
    res = run_cli(str(run), "format=tflite", name="gan-export", cwd=tmp_path)
    assert res.returncode == 2 and "allowed: torchscript, onnx" in res.stderr
    assert not list(tmp_path.iterdir())


class SizedReshape(torch.nn.Module):
    """A generator that reads the batch size as a Python int: its trace keeps the size it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(z).view(int(z.shape[0]), 1, 2, 3)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_refuses_a_trace_that_fixes_the_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from gan_cli.commands import export
    from gan_cli.errors import GanCliError

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    cfg = OmegaConf.create({"model": {"name": "sized", "z_dim": 4}})
    state = SimpleNamespace(num_classes=0, G_ema=None, step=1)
    monkeypatch.setattr(export, "load_generator", lambda *a, **k: (SizedReshape().eval(), cfg, state))
    out = tmp_path / f"g.{fmt}"
    with pytest.raises(GanCliError, match="fails at batch size 3"):
        export.export(["run", f"format={fmt}", f"out={out}"])
    assert not out.exists()
