"""The evaluate stage's PNG charts (Pillow): valid, deterministic images of the stated size for
every input shape the stage can produce (no points, one point, many groups)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.charts import line_chart, palette, scatter_chart


def _png(path: Path) -> tuple[int, int]:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        return img.size


@pytest.mark.parametrize(
    "series",
    [
        {"dense": [(1.0, 0.5), (10.0, 0.9), (100.0, 1.0)], "bm25": [(1.0, 0.4), (100.0, 0.8)]},
        {"dense": [(1.0, 0.5)]},  # one k: a dot, not a line
        {},  # no method scored
    ],
)
def test_line_chart_draws_every_series_shape(tmp_path: Path, series: dict[str, list[tuple[float, float]]]) -> None:
    a = line_chart(tmp_path / "a.png", series, title="t", xlabel="k", ylabel="recall@k")
    b = line_chart(tmp_path / "b.png", series, title="t", xlabel="k", ylabel="recall@k")
    assert _png(a) == (600, 400)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_line_chart_draws_each_series_in_its_colour(tmp_path: Path) -> None:
    from PIL import Image

    series = {"dense": [(1.0, 0.2), (100.0, 0.2)], "bm25": [(1.0, 0.8), (100.0, 0.8)]}
    with Image.open(line_chart(tmp_path / "c.png", series, title="", xlabel="", ylabel="")) as img:
        colours = {img.getpixel((300, y)) for y in range(0, 400)}
    want = [tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in palette(2)]

    def near(c: tuple[int, ...], w: tuple[int, ...]) -> bool:
        return max(abs(a - b) for a, b in zip(c, w, strict=False)) < 40

    assert all(any(near(c, w) for c in colours) for w in want)


def test_scatter_chart_with_groups_and_with_a_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    groups = {f"g{i}": rng.normal(size=(5, 2)) for i in range(25)}  # > 20 groups: no legend, tab20 colours
    assert _png(scatter_chart(tmp_path / "m.png", groups, title="map")) == (700, 600)
    assert _png(scatter_chart(tmp_path / "n.png", {}, title="map", note="too few points to map (2)")) == (700, 600)
    assert len(set(palette(25))) == 20
