"""tasks/memory.py: the store's mapped pages leave the process's resident set, their data stays;
private mappings and files elsewhere are never touched."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

from embedline.tasks.memory import release_freed, release_mapped, resident_mapped

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and madvise: Linux")

PAGES = 64


def _mapped(path: Path, access: int) -> tuple[mmap.mmap, object]:
    path.write_bytes(b"\0" * (PAGES * mmap.PAGESIZE))
    fh = path.open("r+b")
    return mmap.mmap(fh.fileno(), 0, access=access), fh


def test_shared_pages_leave_the_resident_set_and_keep_their_data(tmp_path: Path) -> None:
    store, other = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    other.mkdir()
    shared, f1 = _mapped(store / "vectors.mmap", mmap.ACCESS_WRITE)
    private, f2 = _mapped(store / "private.mmap", mmap.ACCESS_COPY)
    outside, f3 = _mapped(other / "outside.mmap", mmap.ACCESS_WRITE)
    for m, byte in ((shared, 1), (private, 2), (outside, 3)):
        for p in range(PAGES):  # dirty every page: written, not yet flushed
            m[p * mmap.PAGESIZE] = byte
    assert resident_mapped(store) >= PAGES * mmap.PAGESIZE  # the private mapping is not counted
    done = release_mapped(store)
    assert done.mappings == 1 and done.bytes == PAGES * mmap.PAGESIZE  # the shared one only
    assert resident_mapped(store) == 0
    assert resident_mapped(other) >= PAGES * mmap.PAGESIZE  # another folder: untouched
    # the data is still there: through the mapping, in the file, and the private copy kept its changes
    assert all(shared[p * mmap.PAGESIZE] == 1 for p in range(PAGES))
    assert (store / "vectors.mmap").read_bytes()[:: mmap.PAGESIZE] == b"\1" * PAGES
    assert all(private[p * mmap.PAGESIZE] == 2 for p in range(PAGES))
    for m, fh in ((shared, f1), (private, f2), (outside, f3)):
        m.close()
        fh.close()  # type: ignore[attr-defined]


def test_release_freed_runs_and_nothing_under_a_folder_without_mappings(tmp_path: Path) -> None:
    release_freed()
    assert release_mapped(tmp_path).mappings == 0 and resident_mapped(tmp_path) == 0
