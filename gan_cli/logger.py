"""Where a run's numbers and pictures go: a small `MetricLogger` interface and its implementations
(TensorBoard, metrics.jsonl, metrics.csv, the progress bar, and a null one for processes other than
rank 0). The MLflow and W&B loggers, which need packages of their own, are in trackers.py.

A resumed run logs on from its checkpoint's step: each logger drops what a killed process wrote after
that step (metrics.jsonl: its lines; TensorBoard: a purge), so the records read as one run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from gan_cli.errors import GanCliError, writing

log = logging.getLogger("gan_cli")

HEADLINE = ("loss/D", "loss/G", "D/real", "D/fake")  # the statistics the summary lines and HParams show


class MetricLogger(Protocol):
    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None: ...

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None: ...

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None: ...

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        """End of the run; `final` holds its result (objective, step, epoch, last values) when it finished."""


class NullLogger:
    """Logs nothing (processes other than rank 0: one set of logs per run)."""

    def advance(self, step: int) -> None:
        """A step is done (the progress bar moves on)."""

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        pass

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        pass

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        pass

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        pass


class Loggers(NullLogger):
    """Several loggers as one."""

    def __init__(self, loggers: Sequence[MetricLogger]) -> None:
        self.loggers = list(loggers)

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        for lg in self.loggers:
            lg.scalars(step, values, epoch)

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        for lg in self.loggers:
            lg.image(tag, picture, step)

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        for lg in self.loggers:
            lg.hparams(params, metric_tags)

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        """Close every logger; after a failure (`final` None) one that cannot close does not hide it."""
        failed: Exception | None = None
        for lg in self.loggers:
            try:
                lg.close(final)
            except (OSError, GanCliError) as err:
                log.debug("closing %s: %s", type(lg).__name__, err)
                failed = failed or err
        if failed is not None and final is not None:
            raise failed


class LogFile(logging.FileHandler):
    """The run's train.log. When it cannot be written (a full disk) it says so once on stderr, instead of
    logging's traceback for every line; the console still gets every line."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            sys.stderr.write(
                f"cannot write {self.baseFilename} ({sys.exc_info()[1]}); log lines go to the console only\n"
            )


def _record_step(line: str) -> int:
    """The step of a metrics.jsonl line, or -1 for a torn line (a process killed mid-write)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


class JsonlLogger(NullLogger):
    """One JSON line per logging step in metrics.jsonl: {"step", "epoch", values...}."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.kept = f"{self.path.name} keeps the lines written before"
        for stale in run_dir.glob(f".{self.path.name}.tmp*"):  # a rewrite a killed process left
            stale.unlink(missing_ok=True)
        with writing(self.path, self.kept):
            self._drop_after(start_step)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _drop_after(self, start_step: int) -> None:
        """Drop lines logged after `start_step` (written after the checkpoint a resume starts from).

        The kept lines go to a temporary file, flushed to disk and renamed over metrics.jsonl: a failure
        or a kill at any moment leaves the old file whole, and a failed write leaves no temporary file."""
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _record_step(line) in range(start_step + 1)]
        if len(kept) == len(lines):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in kept))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), **values}
        with writing(self.path, self.kept):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        with writing(self.path, self.kept):
            self._file.close()


class CsvLogger(NullLogger):
    """metrics.csv, for a spreadsheet: one row per logging step, one column per key seen so far.

    A key that first appears later (an evaluation's metrics/fid) widens the header: the file is then
    rewritten whole, to a temporary file renamed into place, so it always opens with one header that
    names every column and is never seen half written."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns = ["step", "epoch"]
        rows = self._rows()
        if self.path.exists():
            kept = [row for row in rows if _csv_step(row) in range(start_step + 1)]
            if len(kept) != len(rows) or not self.path.read_text(encoding="utf-8").endswith("\n"):
                self._rewrite(kept)
        else:
            self._rewrite([])
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())

    def _rows(self) -> list[dict[str, str]]:
        """The file's complete rows (a torn last line, from a process killed mid-write, is left out);
        its header becomes the columns."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        if reader.fieldnames:
            self.columns = list(reader.fieldnames)
        return rows

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        record = {"step": step, "epoch": round(epoch, 4) if epoch is not None else "", **values}
        new = [key for key in record if key not in self.columns]
        if new:
            self._file.close()
            rows = self._rows()
            self.columns += new
            self._rewrite(rows)
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        csv.DictWriter(self._file, fieldnames=self.columns).writerow(record)
        self._file.flush()

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        self._file.close()


def _csv_step(row: Mapping[str, str]) -> int:
    try:
        return int(row["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def _plain(value: Any) -> Any:
    """A value the HParams dashboard accepts (bool, int, float or str)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class TensorBoardLogger(NullLogger):
    """Event files under tb/: scalars, sample grids, the HParams row and the final objective."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = run_dir / "tb"
        self.kept = f"the event files written before in {self.folder} are kept"
        _quiet_writer_threads()
        if start_step > 0:
            _sort_after_existing(self.folder)
        with writing(self.folder, self.kept):
            self.writer = SummaryWriter(
                str(self.folder), purge_step=start_step + 1 if start_step > 0 else None
            )

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        with writing(self.folder, self.kept):
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        with writing(self.folder, self.kept):
            self.writer.add_image(tag, picture, step)

    def hparams(self, params: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """Declare this run to the HParams dashboard; the metric tags are logged as scalars later."""
        from torch.utils.tensorboard.summary import hparams

        exp, ssi, sei = hparams({k: _plain(v) for k, v in params.items()}, {tag: 0.0 for tag in metric_tags})
        with writing(self.folder, self.kept):
            fw = self.writer._get_file_writer()
            for summary in (exp, ssi, sei):
                fw.add_summary(summary)

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        with writing(self.folder, self.kept):
            if final is not None and final.get("objective") is not None:
                self.writer.add_scalar(
                    "objective", final["objective"], final["step"]
                )  # for the HParams table
            self.writer.close()


_hook_installed = False


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread prints the traceback of a write that failed, then hands the error to
    the writer's next call, which reports it as an OutputError: leave out the thread's traceback."""
    global _hook_installed
    if _hook_installed:
        return
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook
    _hook_installed = True


class ProgressLogger(NullLogger):
    """A tqdm bar on a terminal (`advance` every step); elsewhere a summary line now and then."""

    def __init__(self, start_step: int, total_steps: int, show: bool, print_every_s: float) -> None:
        self.bar = tqdm(
            total=total_steps or None,  # 0: no step limit (epochs or minutes end the run)
            initial=start_step,
            disable=not show,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
        self.print_every_s = print_every_s
        self._last_print = time.monotonic()

    def advance(self, step: int) -> None:
        self.bar.update(step - self.bar.n)

    def scalars(self, step: int, values: Mapping[str, float], epoch: float | None = None) -> None:
        if "loss/D" not in values:  # metrics: the evaluation logs its own line
            return
        self.bar.set_postfix(
            epoch=f"{epoch or 0:.2f}",
            D=f"{values.get('loss/D', float('nan')):.3f}",
            G=f"{values.get('loss/G', float('nan')):.3f}",
            img_s=f"{values.get('perf/images_per_s', 0):.0f}",
            refresh=False,
        )
        self.advance(step)
        if self.bar.disable and time.monotonic() - self._last_print >= self.print_every_s:
            self.summary(step, epoch or 0.0, values)

    def summary(self, step: int, epoch: float, values: Mapping[str, float]) -> None:
        self._last_print = time.monotonic()
        log.info(
            "step %s epoch %.2f  loss/D %.4f  loss/G %.4f  D/real %.3f  D/fake %.3f  %.0f img/s",
            f"{step}/{self.bar.total}" if self.bar.total else step,
            epoch,
            values.get("loss/D", float("nan")),
            values.get("loss/G", float("nan")),
            values.get("D/real", float("nan")),
            values.get("D/fake", float("nan")),
            values.get("perf/images_per_s", 0.0),
        )

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        self.bar.close()
        if final is not None:
            self.summary(int(final["step"]), float(final["epoch"]), final)


class WorkProgress:
    """Progress through a long piece of work outside the training loop (feature extraction, minutes
    on a CPU): a tqdm bar on stderr when it is a terminal, else a log line every `every_s` seconds, so
    a long evaluation is never silent."""

    def __init__(self, total: int, what: str, unit: str = "img", every_s: float = 30.0) -> None:
        self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
        self.bar = tqdm(
            total=total,
            desc=what,
            unit=unit,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )
        self.done, self._last = 0, time.monotonic()

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        if self.bar.disable and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            log.info("%s: %d/%d %s", self.what, self.done, self.total, self.unit)

    def __enter__(self) -> WorkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def show_progress(setting: str) -> bool:
    """`logger.progress`: auto shows the bar only when stderr is a terminal."""
    return sys.stderr.isatty() if setting == "auto" else setting == "true"


def _sort_after_existing(tb: Path) -> None:
    """Let a resumed run's event file sort after the run's earlier ones.

    TensorBoard reads a run's event files in name order, and a name starts with the second its writer
    was made (`events.out.tfevents.<second>.<host>.<pid>.<n>`): a resume within the same second as the
    earlier writer could sort first and undo the purge of the steps it redoes. So wait out that second.
    """
    seconds = [
        int(f.name.split(".")[3]) for f in tb.glob("events.out.tfevents.*") if f.name.split(".")[3].isdigit()
    ]
    wait = max(seconds, default=0) + 1 - time.time()
    if 0 < wait <= 2:  # more would mean a clock that went backwards: nothing to wait for
        time.sleep(wait)
