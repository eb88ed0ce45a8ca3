"""Where a run's numbers and pictures go: TensorBoard, metrics.jsonl, the progress bar and summary lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger("gan_cli")


def _plain(value: Any) -> Any:
    """A value the HParams dashboard accepts (bool, int, float or str)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _record_step(line: str) -> int:
    """The step of a metrics.jsonl line, or -1 for a torn line (a process killed mid-write)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def parse_override_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class RunLogger:
    """Scalars to TensorBoard and metrics.jsonl; on resume, steps after `start_step` are rewritten.

    A checkpoint at step k is written after step k is logged, so a run resumed from it keeps the
    records up to k and drops (TensorBoard: purges) the ones a killed process wrote after it.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        start_step: int,
        total_steps: int,
        tensorboard: bool,
        progress: str,
        print_every_s: float,
    ) -> None:
        self.out_dir = out_dir
        self.metrics_path = out_dir / "metrics.jsonl"
        self._truncate_jsonl(start_step)
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if start_step > 0:
                _sort_after_existing(out_dir / "tb")
            self.writer = SummaryWriter(
                str(out_dir / "tb"), purge_step=start_step + 1 if start_step > 0 else None
            )
        show = sys.stderr.isatty() if str(progress).lower() == "auto" else str(progress).lower() == "true"
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            disable=not show,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
        self.print_every_s = print_every_s
        self._last_print = time.monotonic()

    def _truncate_jsonl(self, start_step: int) -> None:
        """Drop lines logged after `start_step` (written after the checkpoint a resume starts from)."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _record_step(line) in range(start_step + 1)]
        if len(kept) != len(lines):
            self.metrics_path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def hparams(self, params: dict[str, Any], metric_tags: list[str]) -> None:
        """Declare this run to the HParams dashboard; the metric tags are logged as scalars later."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        exp, ssi, sei = hparams({k: _plain(v) for k, v in params.items()}, {tag: 0.0 for tag in metric_tags})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def scalars(self, step: int, values: dict[str, float], epoch: float | None = None) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def objective(self, value: float, step: int) -> None:
        """The run's final objective (what a sweep minimises): TensorBoard only, for the HParams table."""
        if self.writer is not None:
            self.writer.add_scalar("objective", value, step)

    def image(self, tag: str, picture: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, picture, step)

    def progress(self, step: int, epoch: float, values: dict[str, float]) -> None:
        """Update the bar (every step is cheap); print a summary line now and then when the bar is off."""
        if values:
            self.bar.set_postfix(
                epoch=f"{epoch:.2f}",
                D=f"{values.get('loss/D', float('nan')):.3f}",
                G=f"{values.get('loss/G', float('nan')):.3f}",
                img_s=f"{values.get('perf/images_per_s', 0):.0f}",
                refresh=False,
            )
        self.bar.update(step - self.bar.n)
        if self.bar.disable and values and time.monotonic() - self._last_print >= self.print_every_s:
            self.summary(step, epoch, values)

    def summary(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self._last_print = time.monotonic()
        log.info(
            "step %d/%d epoch %.2f  loss/D %.4f  loss/G %.4f  D/real %.3f  D/fake %.3f  %.0f img/s",
            step,
            self.bar.total,
            epoch,
            values.get("loss/D", float("nan")),
            values.get("loss/G", float("nan")),
            values.get("D/real", float("nan")),
            values.get("D/fake", float("nan")),
            values.get("perf/images_per_s", 0.0),
        )

    def close(self) -> None:
        self.bar.close()
        self._jsonl.close()
        if self.writer is not None:
            self.writer.close()


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
