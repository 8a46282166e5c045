"""Give memory a stage no longer uses back to the operating system (Linux; a no-op elsewhere).

Two kinds of memory made a whole ingest in one process grow with the corpus although no stage
needs it any more (``benchmarks/bench_scale.py``, docs/scaling.md):

- freed heap kept by the allocators: glibc's arenas and pyarrow's memory pool (mimalloc) keep what
  a stage freed for reuse; :func:`release_freed` returns it (``malloc_trim(0)``,
  ``MemoryPool.release_unused()``). :func:`embedline.tasks.pipeline.run_stage` calls it after
  every stage.
- the store's files mapped into the process: Qdrant Edge writes its segments (vectors, payloads)
  through shared memory maps, so every page the upsert wrote stays in the process's resident set
  (``RssFile``) until the shard is closed: ~2.6 KB a point, whatever ``qdrant.on_disk`` says.
  Those pages belong to the OS page cache (reclaimable, Qdrant's own "cached" tier);
  :func:`release_mapped` unmaps them from this process (``madvise(MADV_DONTNEED)`` on the
  *shared* file mappings under a folder: the data stays in the page cache and in the file, dirty
  pages are written back as usual, the next access maps the page again). Private mappings are
  never touched (DONTNEED would discard their changes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MADV_DONTNEED = 4


@dataclass
class Released:
    """What :func:`release_mapped` did: mappings and bytes it advised the kernel to drop."""

    mappings: int = 0
    bytes: int = 0


_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        if name:
            lib = ctypes.CDLL(name, use_errno=True)
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            lib.madvise.restype = ctypes.c_int
            _libc = lib
    return _libc


def release_freed() -> None:
    """Return freed heap to the OS: pyarrow's pool, then glibc's arenas (cheap: tens of ms)."""
    try:
        import pyarrow as pa
    except ImportError:  # pyarrow is a dependency; a stripped environment just skips its pool
        pa = None
    if pa is not None:
        pa.default_memory_pool().release_unused()
    lib = _c()
    if lib is not None and hasattr(lib, "malloc_trim"):  # glibc only (not musl)
        lib.malloc_trim(0)


def _proc_lines(name: str) -> list[str]:
    try:
        return Path("/proc/self", name).read_text().splitlines()
    except OSError:  # not Linux / no procfs: no mappings to report or release
        return []


def _shared_under(head: list[str], root: str) -> bool:
    """Whether a maps/smaps header line (split in at most 6 fields) is a shared (``s``) mapping
    of a file under ``root``."""
    return len(head) == 6 and head[5].startswith(root) and head[1][3] == "s"


def shared_mappings(under: Path) -> list[tuple[int, int]]:
    """``(start, end)`` of this process's shared (``s``) file mappings of files under ``under``."""
    root = str(Path(under).resolve()) + os.sep
    out: list[tuple[int, int]] = []
    for line in _proc_lines("maps"):
        head = line.split(maxsplit=5)
        if _shared_under(head, root):
            start, end = (int(x, 16) for x in head[0].split("-"))
            out.append((start, end))
    return out


def resident_mapped(under: Path) -> int:
    """Bytes of the files under ``under`` resident in this process's shared mappings (smaps Rss)."""
    root = str(Path(under).resolve()) + os.sep
    total, inside = 0, False
    for line in _proc_lines("smaps"):
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header line
            inside = _shared_under(head, root)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def release_mapped(under: Path) -> Released:
    """Drop the resident pages of the shared file mappings under ``under`` from this process
    (module doc). Best effort: a mapping that went away meanwhile is skipped."""
    done = Released()
    lib = _c()
    if lib is None:
        return done
    for start, end in shared_mappings(under):
        if lib.madvise(ctypes.c_void_p(start), end - start, MADV_DONTNEED) == 0:
            done.mappings += 1
            done.bytes += end - start
    return done


# gen-0 threshold while a bulk writer runs (quiet_gc): Python's default, 700, ran ~1,100 collections
# and 9 full ones (~0.16 s each, traversing every object the imports left) for 88 k points
QUIET_GC_THRESHOLD = 20_000


@contextlib.contextmanager
def quiet_gc(threshold: int = QUIET_GC_THRESHOLD) -> Iterator[None]:
    """Fewer garbage collections while a loop allocates many short-lived containers (the upsert:
    records, payload dicts, engine points): every object alive on entry is frozen
    (``gc.freeze``: the collections that still run do not traverse it again) and the gen-0
    threshold is raised to ``threshold``. Cycles are still collected (every ``threshold``
    allocations); the previous thresholds and the unfrozen heap come back on exit. Measured on
    the full Debian corpus (88,649 points): GC time 2.1 s -> 0.5 s."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
