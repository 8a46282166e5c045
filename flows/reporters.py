"""How stage progress (:mod:`embedline.tasks.progress`) is shown: a terminal bar, log lines, a
Prefect progress artifact on the main flow run."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from embedline.tasks import progress


class RichReporter:
    """One rich progress bar per stage (counts, rate, ETA) on the given console."""

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichReporter:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def start(self, stage: str, total: int | None, unit: str) -> None:
        with self._lock:
            self.tasks[stage] = self.bar.add_task(stage, total=total, unit=unit)

    def update(self, stage: str, done: int, total: int | None) -> None:
        task = self.tasks.get(stage)
        if task is not None:
            self.bar.update(task, completed=done, total=total)

    def finish(self, stage: str, done: int, total: int | None) -> None:
        task = self.tasks.get(stage)
        if task is not None:
            self.bar.update(task, completed=done, total=total if total is not None else done)


class PrefectArtifactReporter:
    """One progress artifact on the current (main) flow run, updated per batch (at most every
    ``min_interval_s``): overall % over ``stages``, the current stage's counts as description."""

    def __init__(self, stages: Sequence[str], key: str = "ingest-progress", min_interval_s: float = 1.0):
        from prefect.artifacts import create_progress_artifact

        self.stages = list(stages)
        self.min_interval_s = min_interval_s
        self.started: dict[str, float] = {}
        self.units: dict[str, str] = {}
        self._last = 0.0
        self._lock = threading.Lock()
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=key, description="ingest: " + " -> ".join(self.stages))

    def _overall(self, stage: str, done: int, total: int | None) -> float:
        idx = self.stages.index(stage) if stage in self.stages else 0
        frac = min(done / total, 1.0) if total else 0.0
        return round(100.0 * (idx + frac) / max(len(self.stages), 1), 1)

    def _push(self, stage: str, done: int, total: int | None, force: bool = False) -> None:
        from prefect.artifacts import update_progress_artifact

        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.min_interval_s:
                return
            self._last = now
        unit = self.units.get(stage, "item")
        text = progress.line(stage, done, total, now - self.started.get(stage, now), unit)
        update_progress_artifact(self.artifact_id, progress=self._overall(stage, done, total), description=text)  # type: ignore[arg-type]

    def start(self, stage: str, total: int | None, unit: str) -> None:
        self.started[stage] = time.monotonic()
        self.units[stage] = unit
        self._push(stage, 0, total, force=True)

    def update(self, stage: str, done: int, total: int | None) -> None:
        self._push(stage, done, total)

    def finish(self, stage: str, done: int, total: int | None) -> None:
        self._push(stage, done, total or done, force=True)


@contextmanager
def flow_progress(stages: Sequence[str]) -> Iterator[None]:
    """Inside a flow run: the Prefect progress artifact (best effort: no API, no artifact)."""
    try:
        reporter: Any = PrefectArtifactReporter(stages)
    except Exception:  # noqa: BLE001 an artifact is a display; a missing API must not fail the run
        reporter = None
    try:
        with progress.reporting(reporter) if reporter is not None else nullcontext():
            yield
    finally:
        progress.close_all()


@contextmanager
def terminal_progress(console: Any) -> Iterator[None]:
    """The CLI's reporter: a live bar in a terminal, else a log line at least every 30 s."""
    if console.is_terminal and sys.stderr.isatty():
        with RichReporter(console) as bar, progress.reporting(bar):
            yield
        return
    every = float(os.environ.get("EMBEDLINE_PROGRESS_EVERY_S", progress.LOG_EVERY_S))
    reporter = progress.LogReporter(write=lambda text: console.print(text, highlight=False, soft_wrap=True),
                                    every_s=every)
    with progress.reporting(reporter):
        yield
