"""The stage progress interface (tasks/progress.py) and its non-terminal output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from embedline.tasks import progress

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_reporter_writes_a_line_at_least_every_30_s() -> None:
    clock, lines = Clock(), []
    reporter = progress.LogReporter(write=lines.append, every_s=30, clock=clock)
    with progress.reporting(reporter), progress.track("embed", total=100, unit="text") as bar:
        for _ in range(100):
            clock.t += 1.0
            bar.advance()
    assert lines[0] == "embed: started (100 texts)"
    middle = lines[1:-1]
    assert len(middle) == 3 and all("ETA" in line and "/100 texts" in line for line in middle)
    assert middle[0].startswith("embed: 30/100 texts (30 %), 1.0 texts/s, ETA 70 s")
    assert lines[-1] == "embed: done, 100 texts in 100.0 s"


def test_threads_add_up_and_no_reporter_is_free() -> None:
    seen: list[int] = []

    class Last:
        def start(self, stage: str, total: int | None, unit: str) -> None: ...
        def update(self, stage: str, done: int, total: int | None) -> None: ...
        def finish(self, stage: str, done: int, total: int | None) -> None:
            seen.append(done)

    with progress.reporting(Last()):
        bar = progress.shared("embed", total=4000, unit="chunk")
        reporters = [progress.row_reporter(bar, start) for start in (0, 1000, 2000, 3000)]
        threads = [threading.Thread(target=lambda r=r, s=s: [r(s + k, 4000) for k in range(1, 1001)])
                   for r, s in zip(reporters, (0, 1000, 2000, 3000), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        progress.close("embed")
    assert seen == [4000]
    with progress.track("chunk") as quiet:  # nothing installed: still counts
        quiet.advance(3)
    assert quiet.done == 3


def test_a_failing_reporter_never_fails_the_stage() -> None:
    class Broken:
        def start(self, *a: object) -> None:
            raise RuntimeError("display gone")

        update = finish = start

    with progress.reporting(Broken()), progress.track("dedupe", total=2) as bar:
        bar.advance(2)
    assert bar.done == 2


@pytest.mark.integration
def test_cli_prints_progress_lines_when_not_a_terminal(tiny_project: Path) -> None:
    exe = Path(sys.executable).with_name("embedline")
    env = {**os.environ, "EMBEDLINE_PROGRESS_EVERY_S": "0"}  # every update: a "long" stage in a tiny corpus
    res = subprocess.run([str(exe), "ingest", "--no-eval", "--no-prefect", "--set", "embed.batch_size=2"],
                         cwd=tiny_project, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for stage in ("preprocess", "chunk", "embed", "dedupe", "upsert"):
        assert f"{stage}: started" in res.stderr and f"{stage}: done" in res.stderr, stage
    during = [line for line in res.stderr.splitlines() if line.startswith("embed: ") and "ETA" in line]
    assert len(during) >= 2  # per batch, with counts and ETA, while the stage runs


def test_prefect_progress_artifact_is_updated_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow's reporter: one artifact, created once, updated for every batch (interval 0 here),
    overall % rising across the stages to 100."""
    import prefect.artifacts as artifacts

    from embedline.flows.reporters import PrefectArtifactReporter

    created: list[dict[str, object]] = []
    updates: list[tuple[object, float, str]] = []
    monkeypatch.setattr(artifacts, "create_progress_artifact", lambda **kw: created.append(kw) or "artifact-1")
    monkeypatch.setattr(artifacts, "update_progress_artifact",
                        lambda artifact_id, progress, description=None: updates.append((artifact_id, progress, description)))
    reporter = PrefectArtifactReporter(["chunk", "embed"], min_interval_s=0.0)
    with progress.reporting(reporter):
        with progress.track("chunk", total=2, unit="document") as bar:
            bar.advance(2)
        with progress.track("embed", total=6, unit="chunk") as bar:
            for _ in range(3):  # three batches of two
                bar.advance(2)
    assert len(created) == 1 and created[0]["key"] == "ingest-progress"
    embed = [u for u in updates if u[2] and u[2].startswith("embed")]
    assert len(embed) >= 1 + 3  # start + one per batch (+ the final one)
    values = [u[1] for u in updates]
    assert all(u[0] == "artifact-1" for u in updates)
    assert values == sorted(values) and values[-1] == 100.0


def test_log_reporter_writes_while_one_long_batch_runs() -> None:
    """No update for longer than ``every_s`` (one slow batch): the heartbeat still writes the
    line, with the last reported count; it stops with the stage."""
    import time

    lines: list[str] = []
    reporter = progress.LogReporter(write=lines.append, every_s=0.05)
    with progress.reporting(reporter), progress.track("embed", total=64, unit="text") as bar:
        bar.advance(32)
        deadline = time.monotonic() + 10
        while not any(line.startswith("embed: 32/64 texts") for line in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any(line.startswith("embed: 32/64 texts (50 %)") for line in lines), lines
    assert lines[-1].startswith("embed: done, 32 texts")
    deadline = time.monotonic() + 10
    while reporter._beating is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reporter._beating is None  # the heartbeat thread ended with the last open stage
