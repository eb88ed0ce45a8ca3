"""Broken data and refused configs: clear messages, before any work where the config alone decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gan_cli.datasets import build_data
from gan_cli.errors import ConfigError, DataError
from tests.conftest import QUICK, make_image_folder, make_mnist, run_cli
from tests.runs import Crash, crash_after, load, logged, make_cfg, same_weights, train


def mnist_cfg(root: Path, download: bool = False) -> object:
    return OmegaConf.create(
        {"name": "mnist", "root": str(root), "download": download, "split": "train", "image_size": 28}
    )


def folder_cfg(root: Path, **over: object) -> object:
    base = {
        "name": "image_folder",
        "root": str(root),
        "image_size": 16,
        "channels": 3,
        "in_memory": "auto",
        "max_memory_mb": 4096,
        "num_workers": 0,
        "on_bad_image": "error",
    }
    return OmegaConf.create({**base, **over})


# ---- data sets through torchvision -------------------------------------------------------------


def test_missing_mnist_without_download_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        build_data(mnist_cfg(tmp_path / "nothing"))
    text = str(err.value)
    assert "data.download=false" in text and str(tmp_path / "nothing" / "MNIST" / "raw") in text
    assert "data.download=true" in text and "train-images-idx3-ubyte" in text


def test_no_network_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens
    with pytest.raises(DataError) as err:
        build_data(mnist_cfg(tmp_path, download=True))
    text = str(err.value)
    assert "could not download mnist" in text and "no network" in text
    assert str(tmp_path / "MNIST" / "raw") in text


def test_truncated_idx_file(tmp_path: Path) -> None:
    root = make_mnist(tmp_path, n_train=32, n_test=8)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    for download in (False, True):  # files present: no download is tried, the damage is reported
        with pytest.raises(DataError, match="truncated or corrupt") as err:
            build_data(mnist_cfg(root, download))
        assert str(root / "MNIST" / "raw") in str(err.value)


# ---- image folders -----------------------------------------------------------------------------


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found under"):
        build_data(folder_cfg(tmp_path / "empty"))


def with_bad_images(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = make_image_folder(tmp_path / "pets", n_per_class=4)
    garbage = root / "cats" / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    truncated = root / "dogs" / "truncated.png"
    data = (root / "dogs" / "000.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return root, [garbage, truncated]


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_unreadable_image_is_named_or_skipped(
    tmp_path: Path, in_memory: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = with_bad_images(tmp_path)
    with pytest.raises(DataError) as err:
        data = build_data(folder_cfg(root, in_memory=in_memory))
        if data.dataset is not None:  # streamed: a file that passes the header check fails on decode
            [data.dataset[i] for i in range(len(data.dataset))]
    assert any(str(p) in str(err.value) for p in bad) and "on_bad_image=skip" in str(err.value)

    data = build_data(folder_cfg(root, in_memory=in_memory, on_bad_image="skip"))
    items = (
        [data.dataset[i][0] for i in range(len(data.dataset))] if data.dataset is not None else data.tensor
    )
    assert all(x.shape == (3, 16, 16) and x.dtype == torch.uint8 for x in items)
    if data.tensor is not None:
        assert len(data) == 8
    assert "skipping unreadable image" in caplog.text and str(bad[0]) in caplog.text


def test_every_image_unreadable(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    for in_memory in ("true", "false"):
        with pytest.raises(DataError, match="none of the 1 images"):
            build_data(folder_cfg(tmp_path / "bad", in_memory=in_memory, on_bad_image="skip"))


def test_mixed_sizes_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(rgb).convert("L").save(root / "gray.jpg")
    Image.fromarray(rgb).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "palette.gif")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.tif")
    Image.fromarray(rgb[:, :, 0]).convert("LA").save(root / "la.png")
    deep = (rng.integers(0, 65535, (9, 70)).astype(np.uint16) | 0x8000).astype(np.uint16)  # bright 16-bit
    Image.fromarray(deep).save(root / "deep16.png")
    for channels in (1, 3):
        data = build_data(folder_cfg(root, channels=channels))
        assert data.tensor is not None and tuple(data.tensor.shape) == (7, channels, 16, 16)
    deep_row = build_data(folder_cfg(root, channels=1)).tensor[1]  # sorted by name: deep16.png is second
    assert 128 <= deep_row.float().mean() < 255, "16-bit images are scaled, not clipped to white"


def test_too_few_images_for_a_batch(tmp_path: Path, folder_root: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        *QUICK[:3],
        "trainer.batch_size=1000",
        base=["data=image_folder", f"data.root={folder_root}", "data.image_size=16", "model=mlp"],
    )
    with pytest.raises(DataError, match="fewer than trainer.batch_size=1000"):
        train(cfg)


def test_streamed_folder_resumes_exactly(tmp_path: Path, folder_root: Path) -> None:
    base = [
        "data=image_folder",
        f"data.root={folder_root}",
        "data.image_size=8",
        "data.in_memory=false",
        "data.num_workers=0",
        "model=mlp",
        "model.g_hidden=[16]",
        "model.d_hidden=[16]",
        "model.z_dim=8",
        "trainer.device=cpu",
        "trainer.epochs=null",
        "trainer.steps=9",
        "trainer.batch_size=4",
        "trainer.checkpoint_every=3",
        "logger.log_every=1",
        "logger.sample_every=0",
        "logger.num_samples=4",
        "logger.backends=[]",
        "logger.progress=false",
    ]
    train(make_cfg(tmp_path / "whole", base=base))
    with pytest.raises(Crash):
        train(make_cfg(tmp_path / "broken", base=base), wrap_step=crash_after(5))  # mid-epoch (4 per epoch)
    train(make_cfg(tmp_path / "new", f"trainer.resume={tmp_path / 'broken'}", base=base))
    assert same_weights(load(tmp_path / "whole"), load(tmp_path / "broken"))
    assert logged(tmp_path / "whole") == logged(tmp_path / "broken")


# ---- configs refused before any work -----------------------------------------------------------

REFUSED = [
    ("trainer.batch_size=0", "trainer.batch_size=0 is not valid; it must be > 0"),
    ("trainer.batch_size=-8", "trainer.batch_size=-8 is not valid"),
    ("trainer.steps=0", "trainer.steps=0 is not valid; it must be > 0"),
    ("trainer.epochs=-1", "trainer.epochs=-1"),
    ("optimizer.lr=0", "optimizer.g.lr=0"),
    ("optimizer.d.lr=-0.1", "optimizer.d.lr=-0.1 is not valid"),
    ("optimizer.lr_decay_start=1", "optimizer.lr_decay_start=1.0 is not valid; give the fraction"),
    ("loss.n_critic=0", "loss.n_critic=0 is not valid; it must be >= 1"),
    ("trainer.checkpoint_every=-5", "trainer.checkpoint_every=-5 is not valid; it must be >= 0"),
    ("trainer.keep_checkpoints=-1", "trainer.keep_checkpoints=-1"),
    ("logger.log_every=0", "logger.log_every=0"),
    ("data.image_size=0", "data.image_size=0 is not valid"),
    ("data.image_size=30", "model=dcgan cannot build images of size 30"),
    ("data.image_size=36", "e.g. 8, 16, 28, 32"),
    ("model.z_dim=0", "model.z_dim=0 is not valid"),
    ("model.g_width=-2", "model.g_width=-2"),
    ("model.mbstd_group=-4", "model.mbstd_group=-4 is not valid; it must be >= 0"),
    ("trainer.precision=16", "trainer.precision=16 needs CUDA"),
    ("trainer.precision=8", "trainer.precision=8 is not valid; allowed: auto | 32 | bf16 | 16"),
    ("trainer.channels_last=sometimes", "allowed: auto | true | false"),
    ("trainer.device=tpu", "allowed: auto, cpu, cuda, cuda:N, mps"),
]


@pytest.mark.parametrize(("override", "message"), REFUSED, ids=[o for o, _ in REFUSED])
def test_bad_config_is_refused_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    base = ["model=dcgan", f"data.root={tmp_path / 'no-data'}", "data.download=false", "trainer.device=cpu"]
    cfg = make_cfg(tmp_path / "run", override, base=base)
    with pytest.raises(ConfigError) as err:  # not the DataError that loading the missing data would give
        train(cfg)
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr_decay=cosine", "Invalid value 'cosine', expected one of [none, linear]"),
        ("trainer.on_nan=ignore", "Invalid value 'ignore', expected one of [stop, skip]"),
    ],
)
def test_bad_choice_is_refused_when_composed(tmp_path: Path, override: str, message: str) -> None:
    res = run_cli("debug=tiny", override, "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode != 0 and message in res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "run").exists()


def test_dcgan_on_points_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model=dcgan needs image data"):
        train(make_cfg(tmp_path, base=["data=gaussians", "model=dcgan", "trainer.device=cpu"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda(tmp_path: Path) -> None:
    res = run_cli(
        *QUICK,
        "trainer.device=cuda",
        f"data.root={tmp_path / 'no-data'}",
        "data.download=false",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "CUDA is not available" in out and "trainer.device=cpu" in out and "Traceback" not in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "no-data").exists()


# ---- messages, not tracebacks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.root=${nosuch}", "data.root cannot be resolved: Interpolation key 'nosuch' not found"),
        ("plugins=['']", "plugins: '' is not a module name"),
        ("trainer.seed=-1", "trainer.seed=-1 is not valid; give a whole number from 0 to 2**63 - 1"),
        ("trainer.seed=9223372036854775808", "trainer.seed=9223372036854775808 is not valid"),
    ],
    ids=["interpolation", "empty-plugin", "negative-seed", "huge-seed"],
)
def test_bad_values_get_a_message_not_a_traceback(tmp_path: Path, override: str, message: str) -> None:
    # each is refused before the (absent) data is looked for
    res = run_cli(
        "debug=tiny", f"data.root={tmp_path / 'no-data'}", override, "hydra.run.dir=run", cwd=tmp_path
    )
    out = res.stderr + res.stdout
    assert res.returncode == 2, out
    assert message in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_trains(tmp_path: Path) -> None:
    res = run_cli(
        *QUICK, "experiment=gaussians_demo", "trainer.steps=2", f"trainer.seed={2**63 - 1}", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
