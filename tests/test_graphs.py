"""The step chooser, the capture-ready step (run eagerly on the CPU) against the plain step, and the
device policy (precision, fused kernels); the CUDA-graph capture itself is checked on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from gan_cli.config import Switch, validate
from gan_cli.datasets import Data
from gan_cli.device import auto_precision, fused_by_default, use_fused
from gan_cli.errors import ConfigError
from gan_cli.graphs import GraphedStep, build_step, graph_blocker, make_capturable
from gan_cli.losses import build_loss
from gan_cli.models import build_models
from gan_cli.run import build_optimizer, seed_everything
from gan_cli.step import Nets, TrainStep
from tests.conftest import QUICK, run_cli

CPU = torch.device("cpu")


def compose_cfg(*overrides: str):
    with initialize_config_module("gan_cli.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def make_step(cfg, data: Data, channels_last: bool, device: torch.device = CPU) -> TrainStep:
    seed_everything(0)
    G, D = build_models(cfg.model, data)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(device=device, memory_format=fmt)
    D.to(device=device, memory_format=fmt)
    fused = use_fused(validate(cfg).fused, device)
    nets = Nets(
        G=G,
        D=D,
        loss=build_loss(cfg.loss),
        opt_g=build_optimizer(cfg.optimizer.g, G.parameters(), fused, "optimizer.g"),
        opt_d=build_optimizer(cfg.optimizer.d, D.parameters(), fused, "optimizer.d"),
        scaler=torch.amp.GradScaler(device.type, enabled=False),
        device=device,
        amp_dtype=None,
        z_dim=int(cfg.model.z_dim),
    )
    return TrainStep(nets, int(cfg.loss.n_critic))


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

    plain = make_step(cfg, data, channels_last)
    plain_stats = [plain(batches) for batches in steps]

    fast = make_step(cfg, data, channels_last)
    seen: list[int] = []

    def spy(batches: list) -> torch.Tensor:
        seen.append(id(batches[0][0]))
        return fast(batches)

    graphed = GraphedStep(spy, [fast.nets.opt_d, fast.nets.opt_g], CPU, warmup=2, capture=False)
    fast_stats = [graphed([(x.clone(), y.clone()) for x, y in batches]) for batches in steps]
    assert graphed.path == "eager-buffers"
    assert len(set(seen)) == 1, "every step must read the same static buffers"
    assert seen[0] == id(graphed.static_in[0][0])
    if channels_last:
        assert graphed.static_in[0][0].is_contiguous(memory_format=torch.channels_last)
    for i, (a, b) in enumerate(zip(plain_stats, fast_stats, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m, i=i: f"step {i + 1}: {m}")
    for a, b in zip(plain.nets.G.state_dict().values(), fast.nets.G.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert plain.names == ["loss/D", "D/real", "D/fake"] + (["loss/gp"] if "wgan_gp" in name else []) + [
        "grad_norm/D",
        "loss/G",
        "grad_norm/G",
    ]


def test_shape_change_falls_back_to_eager() -> None:
    step = make_step(compose_cfg("model=mlp"), Data(kind="image", shape=(1, 28, 28), num_classes=10), False)
    graphed = GraphedStep(step, [step.nets.opt_d, step.nets.opt_g], CPU, warmup=1, capture=False)
    graphed(random_batches(1, 1, (1, 28, 28), batch=8)[0])
    stats = graphed(random_batches(1, 1, (1, 28, 28), batch=6)[0])
    assert graphed.path == "eager"
    assert torch.isfinite(stats).all() and stats.shape == (6,)


def test_step_choice_on_cpu() -> None:
    step = make_step(compose_cfg("model=mlp"), Data(kind="image", shape=(1, 28, 28), num_classes=10), False)
    why = graph_blocker(CPU, world=1, lr_decay=False, grad_scaler=False)
    assert why == "the device is cpu, and CUDA graphs need a CUDA device"
    opts = [step.nets.opt_d, step.nets.opt_g]
    assert build_step(step, Switch.auto, why, opts, CPU) is step
    assert build_step(step, Switch.false, why, opts, CPU) is step
    with pytest.raises(ConfigError, match=r"cuda_graphs=true but the device is cpu.*cuda_graphs=auto"):
        build_step(step, Switch.true, why, opts, CPU)
    cuda = torch.device("cuda")
    assert graph_blocker(cuda, 2, False, False).startswith("training runs in several processes")
    assert graph_blocker(cuda, 1, True, False).startswith("optimizer.lr_decay")
    assert graph_blocker(cuda, 1, False, True).startswith("trainer.precision=16")
    assert graph_blocker(cuda, 1, False, False) is None


def test_auto_precision_on_cpu_follows_its_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_cli.config import Precision

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert auto_precision(CPU, conv=True) is Precision.fp32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert auto_precision(CPU, conv=True) is Precision.bf16
    assert auto_precision(CPU, conv=False) is Precision.fp32  # MLPs stay in fp32


def test_fused_kernel_policy() -> None:
    """auto: fused kernels on CUDA, and on the CPU with this torch (2.4 and later have them); a class
    without fused kernels gets foreach ones; false asks for neither."""
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    assert fused_by_default(CPU) is ((major, minor) >= (2, 4))
    assert fused_by_default(torch.device("cuda")) is True
    assert use_fused(Switch.true, CPU) and not use_fused(Switch.false, CPU)
    params = [torch.nn.Parameter(torch.ones(2))]
    adam = build_optimizer(compose_cfg("optimizer=adam").optimizer.g, params, True, "optimizer.g")
    assert adam.param_groups[0]["fused"] is True
    rms = build_optimizer(compose_cfg("optimizer=rmsprop").optimizer.g, params, True, "optimizer.g")
    assert rms.param_groups[0]["foreach"] is True
    plain = build_optimizer(compose_cfg("optimizer=adam").optimizer.g, params, False, "optimizer.g")
    assert plain.param_groups[0]["fused"] is None and plain.param_groups[0]["foreach"] is None


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
    assert "trainer.cuda_graphs=true but the device is cpu" in out
    assert "Traceback" not in out


def test_capturable_optimizer_checkpoints_load_on_the_cpu() -> None:
    """A checkpoint written after capture (capturable optimizers) resumes on a CPU-only machine."""
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


@pytest.mark.gpu
def test_graphed_step_matches_eager_on_cuda() -> None:
    """On a GPU: the captured graph's replays train like the eager step."""
    cuda = torch.device("cuda")
    cfg = compose_cfg("model=dcgan", "model.g_width=8", "model.d_width=8")
    data = Data(kind="image", shape=(1, 16, 16), num_classes=10)
    runs = []
    for graphed in (False, True):
        step = make_step(cfg, data, False, cuda)
        fn = GraphedStep(step, [step.nets.opt_d, step.nets.opt_g], cuda) if graphed else step
        batches = [[(x.to(cuda), y.to(cuda)) for x, y in b] for b in random_batches(8, 1, (1, 16, 16))]
        torch.cuda.manual_seed(1)
        runs.append(torch.stack([fn(b) for b in batches]).cpu())
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-3, atol=1e-4)
