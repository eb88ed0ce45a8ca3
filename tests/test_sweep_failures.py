"""A sweep job whose process dies (a segfault, the out-of-memory killer): it is recorded as failed, and the
jobs beside it finish (hydra/launcher=parallel runs each job in a process of its own)."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import pythonpath, run_cli
from tests.runs import GAUSS

KILLER = textwrap.dedent(
    """
    import os
    import signal

    from gan_cli.models import MODELS
    from gan_cli.models.mlp import build


    @MODELS.register("killer")
    def killer(cfg, data):
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault or the out-of-memory killer ends a process
        return build(cfg, data)
    """
)


@pytest.mark.slow
def test_a_job_whose_process_dies_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "killer.py").write_text(KILLER)
    args = [*GAUSS, "trainer.steps=4", "plugins=[killer]", "model.name=killer,mlp", "hydra.sweep.dir=sweep"]
    res = run_cli(
        "-m",
        *args,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath(tmp_path)},
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "n_jobs=2" in out and "each in a process of its own" in out
    assert "TerminatedWorkerError" not in out and "1 of 2 runs did not finish" in out
    statuses = {
        p.parent.name[:2]: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/status.json")
    }
    assert statuses["0_"]["status"] == "failed" and "killed by SIGKILL" in statuses["0_"]["error"]
    assert statuses["1_"]["status"] == "ok" and statuses["1_"]["metrics"]["step"] == 4
    assert "| 0 | failed |" in (tmp_path / "sweep" / "summary.md").read_text()

    report = run_cli("sweep", "--format", "csv", cwd=tmp_path, name="gan-sweep-report")
    assert report.returncode == 0, report.stderr
    rows = {r["job"]: r for r in csv.DictReader(io.StringIO(report.stdout))}
    assert rows["0"]["status"] == "failed" and "killed by SIGKILL" in rows["0"]["error"]
    assert rows["1"]["status"] == "ok"
