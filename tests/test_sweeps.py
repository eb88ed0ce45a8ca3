"""Sweeps through the real `gan-train -m` and `gan-sweep-report`: joblib, submitit (local), Optuna, and a
failing job that must not cost the others."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from gan_cli import objective
from gan_cli.commands.sweep_report import collect, render
from gan_cli.datasets import Data
from tests.conftest import run_cli

# A few steps of the small MLP on the tiny MNIST, and only the files a sweep needs.
TINY = [
    "model=mlp",
    "trainer.device=cpu",
    "trainer.steps=2",
    "trainer.epochs=null",
    "trainer.batch_size=8",
    "logger.log_every=1",
    "logger.sample_every=0",
    "logger.num_samples=16",
    "data.download=false",
    "hydra.sweep.dir=sweep",
]


def sweep(tmp_path: Path, mnist_root: Path, *args: str):
    return run_cli("-m", *TINY, f"data.root={mnist_root}", *args, cwd=tmp_path)


def statuses(sweep_dir: Path) -> dict[str, dict]:
    """job number -> status.json of every run folder of the sweep."""
    return {p.parent.name.split("_")[0]: json.loads(p.read_text()) for p in sweep_dir.glob("*/status.json")}


def report(tmp_path: Path, fmt: str = "csv") -> list[dict[str, str]]:
    res = run_cli("sweep", "--format", fmt, cwd=tmp_path, name="gan-sweep-report")
    assert res.returncode == 0, res.stderr
    return list(csv.DictReader(io.StringIO(res.stdout)))


def session_hparams(run: Path) -> dict[str, object]:
    """What the HParams dashboard shows for a run: its hyperparameters as written to TensorBoard."""
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {
        k: v.number_value if v.HasField("number_value") else v.string_value for k, v in info.hparams.items()
    }


@pytest.mark.slow
def test_joblib_parallel_sweep_report_and_hparams(tmp_path: Path, mnist_root: Path) -> None:
    res = sweep(
        tmp_path, mnist_root, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=1e-4,5e-4"
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "n_jobs=2" in res.stdout + res.stderr
    runs = statuses(tmp_path / "sweep")
    assert set(runs) == {"0", "1"} and all(r["status"] == "ok" for r in runs.values())
    for r in runs.values():
        assert (
            r["objective_name"] == "pixel_fd" and math.isfinite(r["objective"]) and r["metrics"]["step"] == 2
        )
    rows = report(tmp_path)
    values = [float(r["objective"]) for r in rows]
    assert values == sorted(values) and len(rows) == 2
    assert {r["optimizer.lr"] for r in rows} == {"0.0001", "0.0005"}
    best = min(runs, key=lambda j: runs[j]["objective"])
    table = run_cli("sweep", cwd=tmp_path, name="gan-sweep-report").stdout
    assert f"best run: sweep/{best}_" in table
    assert (tmp_path / "sweep" / "summary.md").read_text().startswith("| job | status | objective |")
    for run in (tmp_path / "sweep").glob("[01]_*"):
        hp = session_hparams(run)
        assert hp["optimizer.lr"] in (1e-4, 5e-4) and hp["loss"] == "nonsaturating"
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        assert [e.value for e in acc.Scalars("objective")] == pytest.approx([runs[run.name[0]]["objective"]])


# a batch larger than the 128 images of the tiny MNIST: the config is fine, the run fails on its data
TOO_BIG = "fewer than trainer.batch_size=1000"


@pytest.mark.slow
def test_failed_job_does_not_stop_the_sweep(tmp_path: Path, mnist_root: Path) -> None:
    res = sweep(tmp_path, mnist_root, "trainer.batch_size=8,1000,16")
    assert res.returncode == 1, res.stderr + res.stdout
    assert "1 of 3 runs did not finish" in res.stdout + res.stderr
    runs = statuses(tmp_path / "sweep")
    assert [runs[j]["status"] for j in "012"] == ["ok", "failed", "ok"]
    assert TOO_BIG in runs["1"]["error"]
    rows = report(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[2]["job"] == "1" and rows[2]["objective"] == "" and TOO_BIG in rows[2]["error"]
    markdown = run_cli("sweep", "--format", "markdown", cwd=tmp_path, name="gan-sweep-report").stdout
    assert "| 1 | failed |" in markdown


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path: Path, mnist_root: Path) -> None:
    res = sweep(tmp_path, mnist_root, "hydra/launcher=submitit_local", "trainer.batch_size=8,1000")
    assert res.returncode == 1, res.stderr + res.stdout
    runs = statuses(tmp_path / "sweep")
    assert runs["0"]["status"] == "ok" and runs["1"]["status"] == "failed"
    assert any((tmp_path / "sweep" / ".submitit").iterdir())  # the jobs went through submitit
    assert (next((tmp_path / "sweep").glob("0_*")) / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_optuna_search(tmp_path: Path, mnist_root: Path) -> None:
    # beta1 = 1.5 is refused: that trial fails, the search goes on (the seeded sampler proposes it once)
    args = ["hparams_search=gan_optuna", "hydra.sweeper.n_trials=3", "optimizer.betas.0=choice(0.5,1.5)"]
    res = sweep(tmp_path, mnist_root, *args)
    assert res.returncode == 1, res.stderr + res.stdout
    runs = statuses(tmp_path / "sweep")
    assert sorted(runs) == ["0", "1", "2"]
    overrides = {
        j: yaml.safe_load((tmp_path / "sweep" / j / ".hydra" / "overrides.yaml").read_text()) for j in runs
    }
    for job, run in runs.items():
        failed = "optimizer.betas.0=1.5" in overrides[job]
        assert run["status"] == ("failed" if failed else "ok")
        assert any(o.startswith("optimizer.g.lr=") for o in overrides[job])
        assert any(o.startswith("loss=") for o in overrides[job])
    assert {r["status"] for r in runs.values()} == {"ok", "failed"}
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    ok = [r["objective"] for r in runs.values() if r["status"] == "ok"]
    assert best["best_value"] == pytest.approx(min(ok))
    assert float(report(tmp_path)[0]["objective"]) == pytest.approx(min(ok))


@pytest.mark.parametrize(
    ("values", "job", "message"),
    [
        (["optimizer.lr=1e-4,-1"], "#1 of 2", "optimizer.g.lr=-1.0 is not valid"),
        (["loss=hinge,lsgan", "+trainer.batchsize=32"], "#0 of 2", "trainer.batchsize is not a setting"),
        (
            ["optimizer._target_=torch.optim.Adam,torch.optim.Nope"],
            "#1 of 2",
            "'torch.optim.Nope' cannot be used",
        ),
    ],
    ids=["value", "unknown-key", "optimizer"],
)
def test_a_bad_job_stops_the_sweep_before_any_job_starts(
    tmp_path: Path, mnist_root: Path, values: list[str], job: str, message: str
) -> None:
    res = sweep(tmp_path, mnist_root, *values)
    assert res.returncode == 2, res.stderr + res.stdout
    out = res.stderr + res.stdout
    assert message in out and "No job was started" in out and "Traceback" not in out
    named = next(line for line in out.splitlines() if f"job {job} (" in line)  # the job and its overrides
    bad = [v.split(",")[0] if job == "#0 of 2" else v.split("=")[0] + "=" + v.split(",")[-1] for v in values]
    assert "model=mlp" in named and f"data.root={mnist_root}" in named and " ".join(bad) + ")" in named
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())


@pytest.mark.slow
def test_single_run_failure_still_exits_2(tmp_path: Path) -> None:
    res = run_cli("optimizer.lr=-1", "trainer.device=cpu", "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2
    assert "optimizer.g.lr=-1.0 is not valid" in res.stderr + res.stdout
    assert not (tmp_path / "run" / "status.json").exists()


def write_run(
    folder: Path, overrides: list[str], status: dict | None, metrics: list[dict] | None = None
) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def test_report_orders_and_marks_runs(tmp_path: Path) -> None:
    ok = {
        "status": "ok",
        "wall_s": 3.0,
        "objective_name": "fid",
        "metrics": {"loss/D": 1.0, "fid": 0, "step": 9},
    }
    write_run(tmp_path / "0_loss=a", ["loss=a", "seed=1"], {**ok, "objective": 30.0})
    write_run(tmp_path / "1_loss=b", ["loss=b", "seed=1"], {**ok, "objective": 10.0})
    write_run(
        tmp_path / "2_loss=c", ["loss=c", "seed=1"], {"status": "failed", "wall_s": 1.0, "error": "boom"}
    )
    write_run(
        tmp_path / "3_loss=d",
        ["loss=d", "seed=1"],
        None,
        [{"step": 4, "loss/D": 0.5}, {"step": 8, "loss/D": 0.25}],
    )
    runs = collect(tmp_path)
    assert [(r.job, r.status) for r in runs] == [
        ("1", "ok"),
        ("0", "ok"),
        ("2", "failed"),
        ("3", "incomplete"),
    ]
    assert runs[3].metrics["step"] == 8
    text = render(runs, "table")
    header = text.splitlines()[0].split()
    assert header[:4] == ["job", "status", "objective", "loss"] and "seed" not in header  # only what varied
    assert text.rstrip().endswith(f"best run: {tmp_path / '1_loss=b'}")
    assert "boom" in text


def test_report_errors(tmp_path: Path) -> None:
    res = run_cli(str(tmp_path), cwd=tmp_path, name="gan-sweep-report")
    assert res.returncode == 2 and "no runs in" in res.stderr
    res = run_cli(str(tmp_path / "missing"), cwd=tmp_path, name="gan-sweep-report")
    assert res.returncode == 2 and "is not a folder" in res.stderr


def test_report_skips_damaged_files_with_a_warning(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    write_run(sweep_dir / "0_loss=a", ["loss=a"], {"status": "ok", "objective": 2.0, "metrics": {"step": 4}})
    write_run(sweep_dir / "1_loss=b", ["loss=b"], None)
    (sweep_dir / "1_loss=b" / "status.json").write_text('{"status": "ok", "objec')  # cut short
    write_run(sweep_dir / "2_loss=c", ["loss=c"], {"status": "ok", "objective": 1.0})
    (sweep_dir / "2_loss=c" / ".hydra" / "overrides.yaml").write_text("- loss=c\n- [unclosed\n")
    write_run(sweep_dir / "3_loss=d", ["loss=d"], None)
    (sweep_dir / "3_loss=d" / "status.json").write_text('["a", "list"]')
    res = run_cli("sweep", cwd=tmp_path, name="gan-sweep-report")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    for damaged in ("1_loss=b/status.json", "2_loss=c/.hydra/overrides.yaml", "3_loss=d/status.json"):
        assert f"warning: skipped a run: sweep/{damaged}" in res.stderr
    assert [line.split()[0] for line in res.stdout.splitlines()[1:] if line[:1].isdigit()] == ["0"]


def test_report_of_only_damaged_runs_is_an_error(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "0_loss=a", ["loss=a"], None)
    (tmp_path / "sweep" / "0_loss=a" / "status.json").write_text("{")
    res = run_cli("sweep", cwd=tmp_path, name="gan-sweep-report")
    assert res.returncode == 2 and "could be read" in res.stderr and "Traceback" not in res.stderr


def test_objective_prefers_fid() -> None:
    assert objective.choose({"fid": 12.5}, lambda: 1 / 0) == ("fid", 12.5)
    assert objective.choose({"fid": None}, lambda: 3.0) == ("pixel_fd", 3.0)
    assert objective.choose({}, lambda: 4.0) == ("pixel_fd", 4.0)


def test_pixel_fd_is_low_for_a_generator_that_copies_the_data() -> None:
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    data = Data(kind="image", shape=(1, 16, 16), num_classes=0, tensor=images)

    class Copy(torch.nn.Module):
        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return images[: len(z)].float() / 127.5 - 1

    class Grey(torch.nn.Module):
        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(z), 1, 16, 16)

    state = torch.get_rng_state()
    same = objective.pixel_fd(Copy(), data, z_dim=4, device=torch.device("cpu"))
    grey = objective.pixel_fd(Grey(), data, z_dim=4, device=torch.device("cpu"))
    assert torch.equal(state, torch.get_rng_state())  # the run's random stream is untouched
    assert same == pytest.approx(0.0, abs=1e-6) and grey > 0.5
