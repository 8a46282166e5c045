"""The two PNG charts the evaluate stage writes (DVC outputs), drawn with Pillow.

- :func:`line_chart`: recall@k per retrieval method (``data/metrics/recall_curve.png``), log-scaled k.
- :func:`scatter_chart`: the 2-D embedding map by top-level folder (``data/metrics/embedding_map.png``).

They used to be matplotlib figures: importing matplotlib and laying out and rendering the two
figures cost ~1.2 CPU s of a first ``evaluate`` on the sample project (about an eighth of the
stage's CPU), for two fixed chart types. Pillow draws both in ~0.17 CPU s, its import included.
Drawn at :data:`SCALE` x and downsampled, so lines and dots are antialiased. Deterministic: the same
inputs give the same bytes (no timestamps, Pillow's bundled font).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

SCALE = 2  # supersampling factor
# matplotlib's tab10 and tab20: the palettes the charts used before, so colours stay familiar
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]
TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
         "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
         "#17becf", "#9edae5"]
INK, GRID, FRAME = (0, 0, 0), (225, 225, 225), (60, 60, 60)


def palette(n: int) -> list[str]:
    """Colours for ``n`` groups (tab10 up to 10, then tab20, cycling)."""
    base = TAB10 if n <= 10 else TAB20
    return [base[i % len(base)] for i in range(n)]


@cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size * SCALE)


class _Canvas:
    """A white RGB image at SCALE x with a plot area; data -> pixel mapping set by :meth:`axes`."""

    def __init__(self, width: int, height: int, box: tuple[int, int, int, int]):
        from PIL import Image, ImageDraw

        self.size = (width, height)
        self.image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.left, self.top, self.right, self.bottom = (v * SCALE for v in box)
        self.x0, self.x1, self.y0, self.y1 = 0.0, 1.0, 0.0, 1.0
        self.xlog = False

    def axes(self, xlim: tuple[float, float], ylim: tuple[float, float], *, xlog: bool = False) -> None:
        self.xlog = xlog
        tx = (math.log10(xlim[0]), math.log10(xlim[1])) if xlog else xlim
        pad = (tx[1] - tx[0]) * 0.05 or 0.5  # a margin either side, as plotting libraries leave
        self.x0, self.x1 = tx[0] - pad, tx[1] + pad
        self.y0, self.y1 = ylim

    def px(self, x: float, y: float) -> tuple[float, float]:
        xv = math.log10(x) if self.xlog else x
        fx = (xv - self.x0) / ((self.x1 - self.x0) or 1.0)
        fy = (y - self.y0) / ((self.y1 - self.y0) or 1.0)
        return self.left + fx * (self.right - self.left), self.bottom - fy * (self.bottom - self.top)

    def text(self, xy: tuple[float, float], s: str, size: int, anchor: str, **kw: Any) -> None:
        self.draw.text(xy, s, fill=INK, font=_font(size), anchor=anchor, **kw)

    def vtext(self, xy: tuple[float, float], s: str, size: int) -> None:
        """``s`` rotated 90 degrees counter-clockwise, centred on ``xy`` (an axis label)."""
        from PIL import Image, ImageDraw

        font = _font(size)
        left, top, right, bottom = font.getbbox(s)
        label = Image.new("L", (right - left + 2, bottom - top + 2), 0)
        ImageDraw.Draw(label).text((1 - left, 1 - top), s, fill=255, font=font)
        label = label.rotate(90, expand=True)
        at = (int(xy[0] - label.width / 2), int(xy[1] - label.height / 2))
        self.image.paste(Image.new("RGB", label.size, INK), at, label)

    def title(self, s: str) -> None:
        self.text(((self.left + self.right) / 2, self.top - 8 * SCALE), s, 10, "md")

    def frame(self) -> None:
        self.draw.rectangle((self.left, self.top, self.right, self.bottom), outline=FRAME, width=SCALE)

    def legend(self, entries: Sequence[tuple[str, str]], corner: str, *, marker: str = "line") -> None:
        """A boxed legend in ``corner`` ("lower right" or "lower left") of the plot area."""
        if not entries:
            return
        font = _font(8)
        row = 14 * SCALE
        width = max(int(self.draw.textlength(label, font=font)) for _, label in entries) + 34 * SCALE
        height = row * len(entries) + 6 * SCALE
        x = self.right - width - 6 * SCALE if corner.endswith("right") else self.left + 6 * SCALE
        y = self.bottom - height - 6 * SCALE
        self.draw.rectangle((x, y, x + width, y + height), fill="white", outline=(200, 200, 200), width=SCALE)
        for i, (colour, label) in enumerate(entries):
            cy = y + 3 * SCALE + row * i + row / 2
            if marker == "line":
                self.draw.line((x + 6 * SCALE, cy, x + 24 * SCALE, cy), fill=colour, width=2 * SCALE)
            else:
                r = 4 * SCALE
                self.draw.ellipse((x + 15 * SCALE - r, cy - r, x + 15 * SCALE + r, cy + r), fill=colour)
            self.draw.text((x + 30 * SCALE, cy), label, fill=INK, font=font, anchor="lm")

    def save(self, path: Path) -> Path:
        from PIL import Image

        img = self.image.resize(self.size, Image.Resampling.LANCZOS)
        tmp = path.with_name(f"{path.name}.tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        return path


def _decades(lo: float, hi: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def _steps(lo: float, hi: float, step: float) -> list[float]:
    return [round(lo + i * step, 10) for i in range(int((hi - lo) / step + 1e-9) + 1)]


def line_chart(
    path: str | Path,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] = (0.0, 1.02),
    xlog: bool = True,
) -> Path:
    """One line per series (``{name: [(x, y), ...]}``), grid, legend in the lower right; x on a
    log scale with decade ticks when ``xlog``."""
    c = _Canvas(600, 400, (62, 36, 582, 350))
    xs = [x for pts in series.values() for x, _ in pts if not xlog or x > 0] or [1.0, 10.0]
    c.axes((min(xs), max(xs)), ylim, xlog=xlog)
    xticks = _decades(min(xs), max(xs)) if xlog else _steps(min(xs), max(xs), max((max(xs) - min(xs)) / 5, 1))
    for t in xticks:
        x, _ = c.px(t, ylim[0])
        if c.left <= x <= c.right:
            c.draw.line((x, c.top, x, c.bottom), fill=GRID, width=SCALE)
            c.text((x, c.bottom + 5 * SCALE), f"{t:g}", 9, "mt")
    for t in _steps(0.0, math.floor(ylim[1] * 5) / 5, 0.2):
        _, y = c.px(xticks[0], t)
        c.draw.line((c.left, y, c.right, y), fill=GRID, width=SCALE)
        c.text((c.left - 6 * SCALE, y), f"{t:.1f}", 9, "rm")
    colours = palette(len(series))
    for colour, pts in zip(colours, series.values(), strict=True):
        line = [c.px(x, y) for x, y in pts if not xlog or x > 0]
        if len(line) > 1:
            c.draw.line(line, fill=colour, width=2 * SCALE, joint="curve")
        elif line:
            px, py = line[0]
            c.draw.ellipse((px - 3 * SCALE, py - 3 * SCALE, px + 3 * SCALE, py + 3 * SCALE), fill=colour)
    c.frame()
    c.text(((c.left + c.right) / 2, c.bottom + 22 * SCALE), xlabel, 10, "mt")
    c.vtext((16 * SCALE, (c.top + c.bottom) / 2), ylabel, 10)
    c.title(title)
    c.legend(list(zip(colours, series, strict=True)), "lower right")
    return c.save(Path(path))


def scatter_chart(path: str | Path, groups: Mapping[str, np.ndarray], *, title: str, note: str = "") -> Path:
    """Dots per group (``{label: array (n, 2)}``), coloured by group, legend when <= 20 groups,
    no ticks (the axes of a 2-D projection carry no units); ``note`` is written in the middle
    instead when there is nothing to draw."""
    c = _Canvas(700, 600, (10, 36, 690, 590))
    every = [g for g in groups.values() if len(g)]
    if every:
        allxy = np.concatenate(every)
        (xmin, ymin), (xmax, ymax) = allxy.min(axis=0), allxy.max(axis=0)
        padx, pady = (xmax - xmin) * 0.05 or 1.0, (ymax - ymin) * 0.05 or 1.0
        c.x0, c.x1, c.y0, c.y1 = float(xmin - padx), float(xmax + padx), float(ymin - pady), float(ymax + pady)
    total = sum(len(g) for g in groups.values())
    r = (2.5 if total > 500 else 4.0) * SCALE
    colours = palette(len(groups))
    for colour, xy in zip(colours, groups.values(), strict=True):
        for x, y in np.asarray(xy, dtype=np.float64):
            px, py = c.px(float(x), float(y))
            c.draw.ellipse((px - r, py - r, px + r, py + r), fill=colour)
    if note:
        c.text(((c.left + c.right) / 2, (c.top + c.bottom) / 2), note, 10, "mm")
    c.frame()
    c.title(title)
    if 0 < len(groups) <= 20:
        entries = [(colour, f"{g} ({len(xy)})") for colour, (g, xy) in zip(colours, groups.items(), strict=True)]
        c.legend(entries, "lower left", marker="dot")
    return c.save(Path(path))
