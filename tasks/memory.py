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

import ctypes
import ctypes.util
import os
import sys
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


def shared_mappings(under: Path) -> list[tuple[int, int]]:
    """``(start, end)`` of this process's shared (``s``) file mappings of files under ``under``."""
    root = str(Path(under).resolve()) + os.sep
    out: list[tuple[int, int]] = []
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:  # not Linux / no procfs: nothing to release
        return out
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith(root) or parts[1][3] != "s":
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        out.append((start, end))
    return out


def resident_mapped(under: Path) -> int:
    """Bytes of the files under ``under`` resident in this process's shared mappings (smaps Rss)."""
    root = str(Path(under).resolve()) + os.sep
    total, inside = 0, False
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:  # not Linux / no procfs
        return 0
    for line in lines:
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header line
            inside = len(head) == 6 and head[5].startswith(root) and head[1][3] == "s"
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
