"""Draw a run's loss curves from its metrics.jsonl into a PNG (no plotting library needed).

Usage: python bench/plot_run.py RUN_DIR OUT.png [--tags loss/D loss/G]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def plot(records: list[dict], tags: list[str], out: Path, size: tuple[int, int] = (640, 320)) -> None:
    width, height = size
    left, right, top, bottom = 60, 15, 15, 35
    steps = [r["step"] for r in records]
    values = [r[t] for r in records for t in tags]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - steps[0]) / max(steps[-1] - steps[0], 1) * (width - left - right)
        y = top + (hi - value) / (hi - lo) * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = lo + frac * (hi - lo)
        _, y = xy(steps[0], value)
        draw.line([left, y, width - right, y], fill=(230, 230, 230))
        draw.text((5, y - 6), f"{value:.2f}", fill="black")
    for frac in (0.0, 0.5, 1.0):
        step = steps[0] + frac * (steps[-1] - steps[0])
        x, _ = xy(step, lo)
        draw.text((x - 15, height - bottom + 8), f"{int(step)}", fill="black")
    draw.text((width // 2 - 15, height - 14), "step", fill="black")
    for i, tag in enumerate(tags):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([xy(r["step"], r[tag]) for r in records], fill=colour, width=2)
        legend_x = width - right - 80 * (len(tags) - i)  # the legend sits under the plot, right
        draw.line([legend_x, height - 8, legend_x + 15, height - 8], fill=colour, width=2)
        draw.text((legend_x + 20, height - 14), tag, fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tags", nargs="+", default=["loss/D", "loss/G"])
    args = parser.parse_args()
    lines = (args.run / "metrics.jsonl").read_text().splitlines()
    plot([json.loads(line) for line in lines if line.strip()], args.tags, args.out)


if __name__ == "__main__":
    main()
