"""One small progress interface for the pure stages; the shells (flows/) decide how it is shown.

A stage reports its work, nothing else::

    from embedline.tasks import progress

    with progress.track("chunk", total=len(docs), unit="doc") as bar:
        for doc in docs:
            ...
            bar.advance()

With no reporter installed (library use, tests) this costs a lock and an integer add per call.
Reporters are installed by the shell for the duration of a run (:func:`reporting`); they receive
``start`` / ``update`` / ``finish`` events and are shared by every thread (the embed fan-out
advances one tracker from several worker threads). The CLI installs a terminal bar or, when stderr
is not a terminal, a log line at least every :data:`LOG_EVERY_S` seconds
(:class:`LogReporter`); a Prefect flow run adds a progress artifact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

log = logging.getLogger("embedline.progress")

LOG_EVERY_S = 30.0
T = TypeVar("T")


class Reporter(Protocol):
    """Receives progress events. Called from worker threads: keep it quick and thread-safe."""

    def start(self, stage: str, total: int | None, unit: str) -> None: ...

    def update(self, stage: str, done: int, total: int | None) -> None: ...

    def finish(self, stage: str, done: int, total: int | None) -> None: ...


_reporters: list[Reporter] = []
_reg_lock = threading.Lock()


@contextmanager
def reporting(*reporters: Reporter) -> Iterator[None]:
    """Install ``reporters`` for the duration of the block (nested blocks add to the outer ones)."""
    with _reg_lock:
        _reporters.extend(reporters)
    try:
        yield
    finally:
        with _reg_lock:
            for r in reporters:
                _reporters.remove(r)


def _emit(method: str, *args: object) -> None:
    for r in list(_reporters):
        try:
            getattr(r, method)(*args)
        except Exception as exc:  # noqa: BLE001 a display/API problem must never fail the stage it reports on
            log.debug("progress reporter %r failed: %s", r, exc)


class Tracker:
    """Counts done units of one stage; thread-safe."""

    def __init__(self, stage: str, total: int | None, unit: str):
        self.stage, self.total, self.unit = stage, total, unit
        self.done = 0
        self._lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            done = self.done
        if _reporters:
            _emit("update", self.stage, done, self.total)

    def set_total(self, total: int) -> None:
        with self._lock:
            self.total = total
        if _reporters:
            _emit("update", self.stage, self.done, total)


@contextmanager
def track(stage: str, total: int | None = None, unit: str = "item") -> Iterator[Tracker]:
    """A :class:`Tracker` for one stage; reporters see it start and finish."""
    tracker = Tracker(stage, total, unit)
    _emit("start", stage, total, unit)
    try:
        yield tracker
    finally:
        _emit("finish", stage, tracker.done, tracker.total)


def counted(items: Iterable[T], tracker: Tracker) -> Iterator[T]:
    """Yield ``items``, advancing ``tracker`` by one per item."""
    for item in items:
        yield item
        tracker.advance()


_shared: dict[str, Tracker] = {}


def shared(stage: str, total: int | None = None, unit: str = "item") -> Tracker:
    """The open tracker of ``stage``, started on first use: for a stage whose parts run as separate
    tasks (the embed fan-out's shards); :func:`close` finishes it."""
    with _reg_lock:
        tracker = _shared.get(stage)
        if tracker is None:
            tracker = _shared[stage] = Tracker(stage, total, unit)
            new = True
        else:
            new = False
    if new:
        _emit("start", stage, total, unit)
    return tracker


def close(stage: str) -> None:
    """Finish the shared tracker of ``stage`` (no-op when none is open)."""
    with _reg_lock:
        tracker = _shared.pop(stage, None)
    if tracker is not None:
        _emit("finish", stage, tracker.done, tracker.total)


def close_all() -> None:
    """Finish every open shared tracker (end of a run, also a failed one)."""
    for stage in list(_shared):
        close(stage)


def row_reporter(tracker: Tracker, start: int) -> Callable[[int, int], None]:
    """Adapt an absolute ``(position, of)`` callback (rows of one shard, from ``start``) to
    ``tracker.advance`` deltas, so parallel shards add up."""
    last = [start]

    def report(position: int, _of: int) -> None:
        delta = position - last[0]
        last[0] = position
        if delta > 0:
            tracker.advance(delta)

    return report


class LogReporter:
    """Non-terminal output: one line at start, at most every ``every_s`` seconds, and at the end,
    with counts, rate and ETA (for CI logs, `nohup`, Prefect workers). A heartbeat thread (daemon,
    alive only while a stage is open) writes the line when ``every_s`` passed without an update,
    so a log gets a line at least every ``every_s`` seconds even while one long batch runs."""

    def __init__(self, write: Callable[[str], None] | None = None, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, *, heartbeat: bool = True):
        self.write = write or log.info
        self.every_s = every_s
        self.clock = clock
        self.heartbeat = heartbeat
        self._state: dict[str, tuple[float, float, str]] = {}  # stage -> (started, last line, unit)
        self._counts: dict[str, tuple[int, int | None]] = {}  # stage -> (done, total) last reported
        self._lock = threading.Lock()
        self._beating: threading.Thread | None = None

    def _now(self) -> float:
        return float(self.clock())

    def start(self, stage: str, total: int | None, unit: str) -> None:
        now = self._now()
        with self._lock:
            self._state[stage] = (now, now, unit)
            self._counts[stage] = (0, total)
            if self.heartbeat and self._beating is None:
                self._beating = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
                self._beating.start()
        self.write(f"{stage}: started" + (f" ({total} {unit}s)" if total else ""))

    def update(self, stage: str, done: int, total: int | None) -> None:
        with self._lock:
            self._counts[stage] = (done, total)
        self._maybe_write(stage)

    def _maybe_write(self, stage: str) -> None:
        now = self._now()
        with self._lock:
            if stage not in self._state:
                return
            started, last, unit = self._state[stage]
            if now - last < self.every_s:
                return
            self._state[stage] = (started, now, unit)
            done, total = self._counts.get(stage, (0, None))
        self.write(line(stage, done, total, now - started, unit))

    def _beat(self) -> None:
        step = min(max(self.every_s / 4, 0.01), 5.0)
        while True:
            time.sleep(step)
            with self._lock:
                stages = list(self._state)
                if not stages:
                    self._beating = None
                    return
            for stage in stages:
                self._maybe_write(stage)

    def finish(self, stage: str, done: int, total: int | None) -> None:
        now = self._now()
        with self._lock:
            started, _, unit = self._state.pop(stage, (now, now, "item"))
            self._counts.pop(stage, None)
        self.write(f"{stage}: done, {done} {unit}s in {now - started:.1f} s")


def line(stage: str, done: int, total: int | None, elapsed: float, unit: str) -> str:
    """``embed: 1200/4096 texts (29 %), 41.2 texts/s, ETA 70 s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 else ""
        return f"{stage}: {done}/{total} {unit}s ({100 * done / total:.0f} %), {rate:.1f} {unit}s/s{eta}"
    return f"{stage}: {done} {unit}s, {rate:.1f} {unit}s/s"
