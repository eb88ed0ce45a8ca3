"""Experiment trackers chosen by logger.backends, through the real `gan-train`: MLflow (read back with its
client), W&B offline runs (their records read back), metrics.csv, and a tracker that is not installed."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from gan_cli.logger import CsvLogger
from tests.conftest import pythonpath, run_cli
from tests.runs import make_cfg, records, train

pytestmark = pytest.mark.slow  # runs in make test; make test-fast leaves it out

TINY = ["debug=tiny", "model=mlp", "data.download=false"]


def test_mlflow_sweep_is_one_experiment_whose_runs_carry_the_overrides(
    tmp_path: Path, mnist_root: Path
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    args = ["-m", *TINY, f"data.root={mnist_root}", "loss=nonsaturating,hinge", "hydra.sweep.dir=sweep"]
    res = run_cli(*args, "logger.backends=[mlflow]", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep")
    assert experiment is not None
    runs = {r.data.params["overrides.loss"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["hinge", "nonsaturating"]
    for loss, run in runs.items():
        folder = next((tmp_path / "sweep").glob(f"*loss={loss}*"))
        assert run.info.run_name == folder.name and run.info.status == "FINISHED"
        params = run.data.params
        assert (
            params["loss.name"] == loss and params["model.name"] == "mlp" and params["trainer.steps"] == "4"
        )
        assert params["overrides.model"] == "mlp" and params["overrides.debug"] == "tiny"
        history = client.get_metric_history(run.info.run_id, "loss/D")
        assert [(m.step, m.value) for m in history] == [(r["step"], r["loss/D"]) for r in records(folder)]
        status = json.loads((folder / "status.json").read_text())
        assert run.data.metrics["objective"] == pytest.approx(status["objective"])
        assert "wall_s" in run.data.metrics and run.data.tags["objective_name"] == status["objective_name"]
        pictures = [a.path for a in client.list_artifacts(run.info.run_id, "samples/fake")]
        assert pictures == ["samples/fake/step_000002.png", "samples/fake/step_000004.png"]
        assert not (folder / "tb").exists(), "backends=[mlflow] leaves TensorBoard out"


def test_mlflow_resume_continues_the_run(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    tracked = [
        "logger.backends=[mlflow]",
        f"logger.mlflow.tracking_uri={uri}",
        "logger.mlflow.experiment=resumed",
    ]
    train(make_cfg(tmp_path / "run", "trainer.steps=4", *tracked))
    train(make_cfg(tmp_path / "new", "trainer.steps=8", f"trainer.resume={tmp_path / 'run'}", *tracked))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("resumed")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/D")] == [2, 4, 6, 8]
    assert run.info.status == "FINISHED"
    # a run that starts tracking when resumed gets a new MLflow run, with its params all the same
    train(make_cfg(tmp_path / "late", "trainer.steps=4", "logger.backends=[]"))
    later = [*tracked[:2], "logger.mlflow.experiment=late"]
    train(make_cfg(tmp_path / "new", "trainer.steps=6", f"trainer.resume={tmp_path / 'late'}", *later))
    late = client.get_experiment_by_name("late")
    assert late is not None
    (run,) = client.search_runs([late.experiment_id])
    assert run.data.params["model.name"] == "mlp" and run.data.params["trainer.steps"] == "6"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/D")] == [6]


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a .wandb file: a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte head (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last); a block's tail too short
    for a head is padding."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, found = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def test_wandb_offline_run_holds_the_logged_values(tmp_path: Path, mnist_root: Path) -> None:
    pytest.importorskip("wandb")
    args = [*TINY, f"data.root={mnist_root}", "hydra.run.dir=run", "logger.backends=[wandb,csv]"]
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline}" in res.stderr
    (log_file,) = offline.glob("run-*.wandb")
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]["id"] in log_file.name
    history: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        items = {
            "history": record.history.item,
            "config": record.config.update,
            "summary": record.summary.update,
        }
        parsed = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items.get(kind, [])}
        if kind == "history":
            history.setdefault(parsed["_step"], {}).update(parsed)
        elif kind == "config":
            config.update(parsed)
        elif kind == "summary":
            summary.update(parsed)
    for r in records(tmp_path / "run"):
        assert history[r["step"]]["loss/D"] == r["loss/D"] and history[r["step"]]["epoch"] == r["epoch"]
    assert history[4]["samples/fake/_type"] == "image-file" and "samples/real/path" in history[0]
    assert list((offline / "files" / "media" / "images" / "samples").glob("fake_4_*.png"))
    assert config["model"]["name"] == "mlp" and config["trainer"]["steps"] == 4
    assert config["overrides"] == [*TINY, f"data.root={mnist_root}", "logger.backends=[wandb,csv]"]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert summary["objective"] == pytest.approx(status["objective"])
    assert not (tmp_path / "run" / "tb").exists()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:  # the csv backend beside it
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), float(r["loss/D"])) for r in rows] == [
        (r["step"], r["loss/D"]) for r in records(tmp_path / "run")
    ]


def test_csv_header_widens_when_new_keys_appear_and_a_resume_drops_later_rows(tmp_path: Path) -> None:
    logger = CsvLogger(tmp_path, 0)
    logger.scalars(2, {"loss/D": 1.5}, epoch=0.5)
    logger.scalars(4, {"loss/D": 1.25, "metrics/fid": 80.0})
    logger.scalars(6, {"loss/D": 1.0}, epoch=1.5)
    logger.close()
    text = (tmp_path / "metrics.csv").read_text()
    assert text.splitlines() == [
        "step,epoch,loss/D,metrics/fid",
        "2,0.5,1.5,",
        "4,,1.25,80.0",
        "6,1.5,1.0,",
    ]
    assert not list(tmp_path.glob(".metrics.csv.tmp*"))
    (tmp_path / "metrics.csv").write_text(text + "8,2.0,0.")  # a line torn by a kill
    CsvLogger(tmp_path, 4).close()  # resumed from the checkpoint of step 4
    assert (tmp_path / "metrics.csv").read_text().splitlines() == text.splitlines()[:3]


def test_a_tracker_that_is_not_installed_is_refused_before_training(tmp_path: Path, mnist_root: Path) -> None:
    missing = tmp_path / "missing"
    (missing / "mlflow").mkdir(parents=True)
    (missing / "mlflow" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mlflow'\")\n"
    )
    args = [*TINY, f"data.root={mnist_root}", "hydra.run.dir=run", "logger.backends=[tensorboard,mlflow]"]
    res = run_cli(*args, cwd=tmp_path, env={"PYTHONPATH": pythonpath(missing)})
    assert res.returncode == 2
    assert "pip install 'gan-cli[mlflow]'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists(), "a refused run must leave no run directory"


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    res = run_cli(*TINY, "hydra.run.dir=run", "logger.backends=[mlfow]", cwd=tmp_path)
    assert res.returncode != 0 and "mlfow" in res.stderr and "tensorboard" in res.stderr
    assert not (tmp_path / "run").exists()
