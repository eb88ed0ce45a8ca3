"""The step chooser and the capture-ready step (run eagerly on the CPU) against the plain step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from gan_cli.datasets import Data
from gan_cli.errors import ConfigError
from gan_cli.fast import GraphedStep, auto_precision, build_step, fused_by_default
from gan_cli.losses import build_loss
from gan_cli.models import build_models
from gan_cli.train import Parts, make_optimizer, seed_everything, train_step
from tests.conftest import QUICK, run_cli


def compose_cfg(*overrides: str):
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        return compose("train", overrides=["output_dir=unused", *overrides])


def make_parts(cfg, data: Data, channels_last: bool) -> Parts:
    seed_everything(0)
    G, D = build_models(cfg.model, data)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(memory_format=fmt)
    D.to(memory_format=fmt)
    cpu = torch.device("cpu")
    return Parts(
        G=G,
        D=D,
        loss=build_loss(cfg.loss),
        opt_g=make_optimizer(G.parameters(), cfg.optimizer, cfg.optimizer.g, cpu),
        opt_d=make_optimizer(D.parameters(), cfg.optimizer, cfg.optimizer.d, cpu),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        device=cpu,
        amp_dtype=None,
        z_dim=int(cfg.model.z_dim),
        channels_last=channels_last,
    )


def random_batches(steps: int, n_critic: int, shape: tuple[int, ...], batch: int = 8) -> list[list]:
    gen = torch.Generator().manual_seed(1)
    return [
        [
            (torch.rand(batch, *shape, generator=gen) * 2 - 1, torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(n_critic)
        ]
        for _ in range(steps)
    ]


CASES = [
    ("mlp", ["model=mlp"], (1, 28, 28), False),
    (
        "dcgan wgan_gp n_critic 2, channels_last",
        ["model=dcgan", "model.g_width=8", "model.d_width=8", "loss=wgan_gp", "loss.n_critic=2"],
        (1, 16, 16),
        True,
    ),
    ("dcgan hinge", ["model=dcgan", "model.g_width=8", "model.d_width=8", "loss=hinge"], (3, 16, 16), False),
]


@pytest.mark.parametrize(("name", "overrides", "shape", "channels_last"), CASES, ids=[c[0] for c in CASES])
def test_capture_ready_step_matches_plain_step(name, overrides, shape, channels_last) -> None:
    """The graphed path's code (static buffers, warm-up, then steps on the buffers), run eagerly,
    trains exactly like the plain step: same stats every step, same weights at the end."""
    cfg = compose_cfg(*overrides)
    data = Data(kind="image", shape=shape, num_classes=10)
    steps = random_batches(6, int(cfg.loss.n_critic), shape)
    if channels_last:
        steps = [[(x.contiguous(memory_format=torch.channels_last), y) for x, y in b] for b in steps]

    plain = make_parts(cfg, data, channels_last)
    plain_stats = [train_step(plain, batches) for batches in steps]

    seen: list[int] = []

    def spy(p: Parts, batches: list) -> torch.Tensor:
        seen.append(id(batches[0][0]))
        return train_step(p, batches)

    fast = make_parts(cfg, data, channels_last)
    graphed = GraphedStep(spy, warmup=2, capture=False)
    fast_stats = []
    for batches in steps:
        fast_stats.append(graphed(fast, [(x.clone(), y.clone()) for x, y in batches]))
    assert graphed.path == "eager-buffers"
    assert len(set(seen)) == 1, "every step must read the same static buffers"
    assert seen[0] == id(graphed.static_in[0][0])
    if channels_last:
        assert graphed.static_in[0][0].is_contiguous(memory_format=torch.channels_last)
    for i, (a, b) in enumerate(zip(plain_stats, fast_stats, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m, i=i: f"step {i + 1}: {m}")
    for a, b in zip(plain.G.state_dict().values(), fast.G.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_shape_change_falls_back_to_eager() -> None:
    cfg = compose_cfg("model=mlp")
    data = Data(kind="image", shape=(1, 28, 28), num_classes=10)
    p = make_parts(cfg, data, False)
    graphed = GraphedStep(train_step, warmup=1, capture=False)
    graphed(p, random_batches(1, 1, (1, 28, 28), batch=8)[0])
    stats = graphed(p, random_batches(1, 1, (1, 28, 28), batch=6)[0])
    assert graphed.path == "eager"
    assert torch.isfinite(stats).all() and stats.shape == (6,)


def test_step_choice_on_cpu() -> None:
    cfg = compose_cfg("model=mlp")
    p = make_parts(cfg, Data(kind="image", shape=(1, 28, 28), num_classes=10), False)
    assert build_step(p, "auto", train_step) is train_step
    assert build_step(p, "off", train_step) is train_step
    with pytest.raises(ConfigError, match=r"cuda_graphs=on but the device is cpu.*cuda_graphs=auto"):
        build_step(p, "on", train_step)
    assert compose_cfg().trainer.precision == "auto"


def test_auto_precision_on_cpu_follows_its_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert auto_precision(cpu, conv=True) == "32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert auto_precision(cpu, conv=True) == "bf16"
    assert auto_precision(cpu, conv=False) == "32"  # MLPs stay in fp32


def test_cpu_optimizers_are_fused_when_torch_has_the_kernels() -> None:
    cfg = compose_cfg("model=mlp")
    p = make_parts(cfg, Data(kind="image", shape=(1, 28, 28), num_classes=10), False)
    assert p.opt_d.param_groups[0]["fused"] == (fused_by_default(torch.device("cpu")) or None)


def test_cuda_graphs_on_without_cuda_is_a_clear_error(tmp_path: Path, mnist_root: Path) -> None:
    res = run_cli(
        *QUICK,
        "model=mlp",
        f"data.root={mnist_root}",
        "data.download=false",
        "trainer.cuda_graphs=on",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr + res.stdout
    out = res.stderr + res.stdout
    assert "trainer.cuda_graphs=on but the device is cpu" in out
    assert "Traceback" not in out


def test_capturable_optimizer_checkpoints_load_on_the_cpu() -> None:
    """A checkpoint written after capture (capturable optimizers) resumes on a CPU-only machine."""
    from gan_cli.fast import make_capturable

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    make_capturable(opt)
    assert opt.param_groups[0]["capturable"] is True
    saved = opt.state_dict()
    assert saved["param_groups"][0]["capturable"] is False
    assert opt.param_groups[0]["capturable"] is True
    w2 = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.Adam([w2], lr=0.1)
    opt2.load_state_dict(saved)
    w2.grad = torch.ones(3)
    opt2.step()  # a capturable step on the CPU would raise here
    torch.testing.assert_close(w2.detach(), torch.full((3,), 0.9))  # Adam moves by lr
