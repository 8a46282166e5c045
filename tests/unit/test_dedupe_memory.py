"""Dedupe's memory does not grow with the corpus beyond what its index needs: vectors read from the
memmap leave the resident set as they are read (rows scattered over the file would otherwise map
all of it: the kernel maps the cached pages around every fault), the text confirmation holds a
bounded number of keys, and the spill buffers of preprocess are bounded by characters too."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedline.tasks import dedupe, neardup
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.memory import resident_mapped
from embedline.tasks.records import Document, ParquetSink
from tests.chunkdata import Item, near, unit, write_artifacts

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and madvise: Linux")

ROWS, DIMS = 16_384, 64  # a 4 MiB vector file


def _memmap(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    data = rng.standard_normal((ROWS, DIMS)).astype(np.float32)
    path = folder / "vectors.f32"
    data.tofile(path)  # written: its pages are in the page cache, as dedupe's own file is
    return np.memmap(path, dtype=np.float32, mode="r", shape=(ROWS, DIMS)), data


def _no_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages once mapped stay mapped: what is resident at the end is what was ever mapped."""
    monkeypatch.setattr(neardup, "drop_pages", lambda vectors: None)
    monkeypatch.setattr(dedupe, "drop_pages", lambda vectors: None)


@linux
def test_scattered_reads_never_map_the_vector_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "vec"
    vectors, data = _memmap(folder)
    _no_drops(monkeypatch)
    rng = np.random.default_rng(5)
    i, j = rng.integers(0, ROWS, 3000), rng.integers(0, ROWS, 3000)
    uniq = np.arange(ROWS, dtype=np.int64)
    assert np.array_equal(neardup.gather(vectors, j), data[j])  # the same rows, in the asked order
    assert np.array_equal(neardup.gather(vectors[100:200], np.array([5, 5, 0])), data[[105, 105, 100]])
    cos = dedupe._cosines(vectors, uniq, i, j, 4096)
    a, b = neardup.normalized(data[i]), neardup.normalized(data[j])
    assert np.allclose(cos, np.einsum("ij,ij->i", a, b), atol=1e-6)
    sims = dedupe._similarities(vectors, i, j, 4096)
    assert np.allclose(sims[i != j], cos[i != j], atol=1e-6)
    assert resident_mapped(folder) == 0


@linux
def test_ivf_cell_join_never_maps_its_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "vec"
    vectors, data = _memmap(folder)
    monkeypatch.setattr(neardup.tempfile, "tempdir", str(folder))  # the join's cell-sorted copy, here too
    _no_drops(monkeypatch)
    blocks, info = neardup.range_pairs(vectors, 0.5, method="ivf", nprobe=2)
    got = {(int(x), int(y)) for a, b in blocks for x, y in zip(a, b, strict=True)}
    assert info.method == "ivf" and resident_mapped(folder) == 0
    # the same pairs as the join over the vectors in memory (no file, no preadv)
    ref, _ = neardup.range_pairs(np.array(data), 0.5, method="ivf", nprobe=2)
    assert got == {(int(x), int(y)) for a, b in ref for x, y in zip(a, b, strict=True)}


def test_text_keys_share_one_copy_of_each_word() -> None:
    a = neardup.text_key("Returns the parsed configuration value", ("Config",))
    b = neardup.text_key("returns THE parsed value", ("Config",))
    assert a.words[0] is b.words[0] and a.words[1] is b.words[1] and a.words[2] is b.words[2]


def test_confirmation_holds_a_bounded_number_of_text_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    items = []
    for g in range(40):  # 40 groups of 4 near-copies: 240 candidate pairs to confirm
        base = unit(rng, 32)
        words = " ".join(f"w{g}x{k}" for k in range(30))
        items += [Item(f"d{g}-{c}.md", 0, f"{words} copy{c}", near(rng, base, 0.99)) for c in range(4)]

    def run(root: Path) -> bytes:
        art = Artifacts(root)
        write_artifacts(art, items)
        dedupe.run_dedupe(Config.model_validate({"dedupe": {"threshold": 0.95, "method": "exact"}}), art)
        return b"".join(f.read_bytes() for f in sorted(art.deduped.glob("*.parquet")))

    expected = run(tmp_path / "a")
    held: list[int] = []
    real = dedupe._TextKeys.get

    def get(self: dedupe._TextKeys, nodes):  # type: ignore[no-untyped-def]
        out = real(self, nodes)
        held.append(len(self.cache))
        return out

    monkeypatch.setattr(dedupe._TextKeys, "CACHE", 16)
    monkeypatch.setattr(dedupe._TextKeys, "PAIR_BLOCK", 8)
    monkeypatch.setattr(dedupe._TextKeys, "get", get)
    assert run(tmp_path / "b") == expected  # the same groups and bytes with a tiny cache
    assert len(held) >= 240 // 8 and max(held) <= 16 + 2 * 8


def test_spill_buffer_is_bounded_by_characters(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "docs.parquet", Document, batch_rows=256, batch_chars=2500)
    for k in range(10):
        sink.write(Document(doc_id=f"d{k}", source=f"s{k}.md", title="t", text="x" * 1000, format="md",
                            content_hash=f"h{k}"))
        assert len(sink._buf) <= 3
    sink.close()
    md = pq.ParquetFile(tmp_path / "docs.parquet").metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [3, 3, 3, 1]
