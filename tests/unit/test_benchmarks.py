"""The benchmark harness's own logic (no timings asserted: speed lives in benchmarks/, not in tests)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.common import change_fraction, replicate, tag_text
from benchmarks.run import BENCHMARKS, main, selected

pytestmark = pytest.mark.unit


def test_tag_text_touches_prose_html_jsonl_and_code_but_keeps_them_valid() -> None:
    md = "# Title\n\nSome words here.\n| a | b |\n```\ncode line here\n```\n"
    out = tag_text("x.md", md, "c3")
    assert "# Title (c3)" in out and "Some words here. (c3)" in out
    assert "| a | b |\n" in out and "code line here\n" in out  # tables and fences untouched
    html = tag_text("x.html", "<p>Hello brave world</p><b>x</b>", "c3")
    assert html == "<p>Hello brave world (c3)</p><b>x</b>"
    line = json.loads(tag_text("x.jsonl", json.dumps({"_id": "1", "text": "two words"}), "c3"))
    assert line == {"_id": "1", "text": "two words (c3)"}
    py = tag_text("x.py", "def f():\n    return 1\n", "c3")
    compile(py, "x.py", "exec")  # still valid Python
    assert "# c3" in py


def test_replicate_makes_new_texts_in_every_copy_but_the_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.md").write_text("A line of text.\n")
    (src / "b.bin").write_bytes(b"\xff\xfe\x00binary")
    info = replicate(src, tmp_path / "out", 3)
    assert info == {"copies": 3, "files_edited": 2}
    texts = [(tmp_path / "out" / f"copy{i:03d}" / "d" / "a.md").read_text() for i in range(3)]
    assert texts[0] == "A line of text.\n" and len(set(texts)) == 3
    assert (tmp_path / "out" / "copy002" / "b.bin").read_bytes() == b"\xff\xfe\x00binary"


def test_change_fraction_edits_at_least_one_prose_file(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"doc{i}.txt").write_text("word " * 300 + "\n" + "a longer line with many words\n" * 5)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    info = change_fraction(tmp_path, 0.01)
    changed = [p.name for p in tmp_path.iterdir() if p.read_text() != before[p.name]]
    assert info["files_changed"] == 1 and info["changed"] == changed
    assert info["fraction"] == 0.2


def test_selection_keeps_large_benchmarks_behind_the_flag() -> None:
    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"only": [], "skip": [], "large": False, "no_peers": False, **kw})

    assert "dedupe_1m" not in selected(args())
    assert "dedupe_1m" in selected(args(large=True))
    assert "peers" not in selected(args(no_peers=True))
    assert selected(args(only=["ingest,peers"])) == ["ingest", "peers"]
    assert set(BENCHMARKS) >= {"chunk", "ingest", "embed", "dedupe", "store", "peers"}


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        main(["--only", "nope"])


def test_report_shows_missing_as_not_measured_and_names_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({
        "run_id": "2026-01-01T00:00:00+00:00",
        "results": [{"backend": "edge", "points": 1000, "points_per_second": 12345.6, "search_ms_median": 1.0,
                     "reopen_seconds": 0.1}],
    }))
    runs = {"2026-01-01T00:00:00+00:00": {"options": {"only": ["store"]}, "benchmarks": ["store"], "seconds": 60},
            "2026-02-02T00:00:00+00:00": {"options": {}, "benchmarks": ["ingest"], "seconds": 60}}
    md = report.table({"run_id": "2026-02-02T00:00:00+00:00", "machine": {"cpu": "Test CPU", "cores": 2},
                       "runs": runs, "benchmarks": {"ingest": {"status": "failed (exit 1)", "started": "x"}}})
    assert "Test CPU, 2 cores" in md
    assert "| `ingest` | not measured (failed (exit 1)) |" in md
    assert "12,346 points/s" in md and "| run 2026-01-01 00:00 |" in md  # the run that measured it
    assert "Run `2026-01-01T00:00:00+00:00`: store, 1.0 min" in md
    assert "2026-02-02T00:00:00+00:00" not in md  # a run with no figure in the table is not listed


def test_peer_ratios_keep_each_systems_best_round_and_pair_rounds() -> None:
    from benchmarks.bench_peers import compute_ratios

    def run(seconds: float) -> dict[str, float]:
        return {"process_seconds": seconds, "seconds": seconds - 1, "process_cpu_seconds": seconds * 1.5}

    def system(firsts: list[float]) -> dict[str, object]:
        rounds = [{"round": i + 1, "mode": "first", **run(s)} for i, s in enumerate(firsts)]
        rounds += [{"round": i + 1, "mode": "rerun", **run(2.0)} for i in range(len(firsts))]
        return {"first": run(min(firsts)), "rerun": run(2.0), "rounds": rounds}

    results = {"embedline": system([12.0, 10.0, 14.0]), "peer": system([30.0, 24.0, 21.0])}
    r = compute_ratios(results, ["peer"], {})["peer"]
    assert r["first_run"] == 2.1  # best / best
    assert r["first_run_per_round"] == [2.5, 2.4, 1.5]  # the same round's runs
    assert r["first_run_median_of_rounds"] == 2.4
