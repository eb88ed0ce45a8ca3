"""`gan-sweep-report SWEEP_DIR`: one line per run of a sweep, best objective first.

A run is a folder with `.hydra/overrides.yaml`. Its status and final metrics come from the
`status.json` the CLI writes when a job ends; a folder without one is a job still running or one that
was killed (its last logged metrics then come from metrics.jsonl).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gan_cli import sweeps
from gan_cli.errors import GanCliError
from gan_cli.sweeps import STATUS_FILE, SUMMARY_FILE

METRICS = ["loss/D", "loss/G", "D/real", "D/fake", "fid"]
FORMATS = ("table", "markdown", "csv")

log = logging.getLogger("gan_cli")


@dataclass
class Run:
    folder: Path
    overrides: dict[str, str]
    status: str  # ok | failed | incomplete
    wall_s: float | None = None
    objective: float | None = None
    objective_name: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def job(self) -> str:
        """The job number Hydra gave the run (the folder name up to the first '_')."""
        return self.name.split("_", 1)[0]

    @property
    def ranked(self) -> bool:
        return self.status == "ok" and self.objective is not None and math.isfinite(self.objective)


class DamagedFile(GanCliError):
    """A run's overrides.yaml or status.json that cannot be read: the run is skipped, with a warning."""


def _read_overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DamagedFile(f"{path} cannot be read ({str(err).splitlines()[0]})") from err
    if not isinstance(items, list):
        raise DamagedFile(f"{path} does not hold a list of overrides")
    return sweeps.job_identity(items)


def _read_status(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(f"{path} cannot be read ({err})") from err
    if not isinstance(record, dict):
        raise DamagedFile(f"{path} does not hold a JSON object")
    return record


def _last_metrics(folder: Path) -> dict[str, Any]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        return dict(json.loads(lines[-1])) if lines else {}
    except json.JSONDecodeError:  # a line cut short by a killed job
        return dict(json.loads(lines[-2])) if len(lines) > 1 else {}


def read_run(folder: Path) -> Run:
    overrides = _read_overrides(folder)
    status_path = folder / STATUS_FILE
    if not status_path.is_file():
        return Run(folder, overrides, "incomplete", metrics=_last_metrics(folder))
    record = _read_status(status_path)
    objective, wall_s, metrics = record.get("objective"), record.get("wall_s"), record.get("metrics")
    numbers = all(v is None or isinstance(v, (int, float)) for v in (objective, wall_s))
    if not numbers or not isinstance(metrics, (dict, type(None))):
        raise DamagedFile(f"{status_path} has an objective, wall_s or metrics of the wrong type")
    return Run(
        folder,
        overrides,
        str(record.get("status", "failed")),
        wall_s=wall_s,
        objective=float(objective) if objective is not None else None,
        objective_name=record.get("objective_name"),
        metrics=metrics or _last_metrics(folder),
        error=str(record.get("error", "")),
    )


def _job_number(run: Run) -> tuple[int, str]:
    return (int(run.job) if run.job.isdigit() else 1 << 30, str(run.folder))


def collect(sweep_dir: Path) -> list[Run]:
    """Every run under `sweep_dir`, finished ones by objective (lowest first), then the rest."""
    if not sweep_dir.is_dir():
        raise GanCliError(
            f"{sweep_dir} is not a folder; give a sweep folder such as outputs/multirun/DATE/TIME"
        )
    folders = sorted(
        p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml") if ".submitit" not in p.parts
    )
    if not folders:
        raise GanCliError(
            f"no runs in {sweep_dir} (no folder with .hydra/overrides.yaml); "
            "give a sweep folder such as outputs/multirun/DATE/TIME"
        )
    readable = []
    for folder in folders:
        try:
            readable.append(read_run(folder))
        except DamagedFile as err:
            log.warning("skipped a run: %s", err)
    if not readable:
        raise GanCliError(f"no run in {sweep_dir} could be read (the warnings above name the files)")
    runs = sorted(readable, key=_job_number)
    ranked = sorted((r for r in runs if r.ranked), key=lambda r: r.objective or 0.0)
    return ranked + [r for r in runs if not r.ranked]


def best_run(runs: list[Run]) -> Run | None:
    return next((r for r in runs if r.ranked), None)


def _varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run: what the sweep explored."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def _fmt(value: Any, raw: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not raw:
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _short(value: str) -> str:
    """A swept number as a person reads it (Optuna proposes full-precision floats)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if any(c in value for c in ".eE") else value


def _common(runs: list[Run]) -> str:
    """The overrides every run shares (the table shows only those that varied)."""
    varying = set(_varying_keys(runs))
    first = runs[0].overrides
    return " ".join(f"{k}={v}" for k, v in first.items() if k not in varying)


def rows(runs: list[Run], raw: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells; `raw` (for CSV): full precision, the objective's name in its own column, and
    each run's folder and every override."""
    varying = _varying_keys(runs)
    metrics = [m for m in METRICS if any(m in r.metrics for r in runs)]
    objective = ["objective_name", "objective", "folder", "overrides"] if raw else ["objective"]
    header = ["job", "status", *objective, *varying, *metrics, "steps", "wall_s", "error"]
    body = []
    for r in runs:
        if raw:
            cells = [r.objective_name or "", _fmt(r.objective, raw), str(r.folder)]
            cells.append(" ".join(f"{k}={v}" for k, v in r.overrides.items()))
            cells += [r.overrides.get(k, "") for k in varying]
        else:
            cells = [f"{r.objective_name}={_fmt(r.objective)}" if r.objective is not None else ""]
            cells += [_short(r.overrides.get(k, "")) for k in varying]
        cells += [_fmt(r.metrics.get(m), raw) for m in metrics]
        error = r.error if raw else (r.error.splitlines() or [""])[0][:120]
        body.append([r.job, r.status, *cells, _fmt(r.metrics.get("step")), _fmt(r.wall_s, raw), error])
    return header, body


def render(runs: list[Run], fmt: str) -> str:
    if fmt == "csv":
        header, body = rows(runs, raw=True)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buf.getvalue()
    header, body = rows(runs)
    best = best_run(runs)
    footer = f"best run: {best.folder}" if best is not None else "best run: none (no run finished)"
    if _common(runs):
        footer = f"in every run: {_common(runs)}\n{footer}"
    if fmt == "markdown":
        esc = [[cell.replace("|", "\\|") for cell in row] for row in [header, *body]]
        lines = ["| " + " | ".join(row) + " |" for row in esc]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines) + "\n\n" + footer.replace("\n", "\n\n") + "\n"
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]
    return "\n".join(lines) + f"\n\n{footer}\n"


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, log the report and write it to the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = collect(sweep_dir)
        except GanCliError as err:
            log.warning("no sweep summary: %s", err)
            return
        table = render(runs, "markdown")
        (sweep_dir / SUMMARY_FILE).write_text(table, encoding="utf-8")
        log.info("sweep summary (%s):\n%s", sweep_dir / SUMMARY_FILE, table)
        sweeps.failed_runs[:] = [r.name for r in runs if r.status != "ok"]
        if sweeps.failed_runs:
            log.error(
                "%d of %d runs did not finish: %s",
                len(sweeps.failed_runs),
                len(runs),
                ", ".join(sweeps.failed_runs),
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gan-sweep-report",
        description="Summarise a sweep: every run with its overrides, final metrics, status and wall time, "
        "lowest objective (final FID, or its stand-in pixel_fd) first.",
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="a sweep folder, e.g. outputs/multirun/2026-11-27/10-00-00"
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="gan-sweep-report: warning: %(message)s", stream=sys.stderr
    )
    try:
        runs = collect(args.sweep_dir)
    except GanCliError as err:
        print(f"gan-sweep-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(render(runs, args.format))


if __name__ == "__main__":
    main()
