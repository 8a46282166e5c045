"""The dedupe stage costs what changed: an unchanged run skips, a change searches only the nodes of
changed shards, and the outputs are byte-identical to a clean full dedupe of the final inputs."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks import shards
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, load_config
from embedline.tasks.dedupe import run_dedupe
from embedline.tasks.records import Chunk, records_table, write_json
from embedline.tasks.vector_shards import write_vector_shard
from tests.chunkdata import Item, make_chunk, near, unit

pytestmark = pytest.mark.unit
DIMS = 32
SHARDS = 16
FILLER = ("with the same twenty words of shared body text that every planted copy repeats so a small "
          "edit keeps the texts near identical")


def _cfg(**over: object) -> Config:
    return load_config(None, {**{f"dedupe.{k}": v for k, v in over.items()}})


def _write(art: Artifacts, items: list[Item]) -> None:
    """Chunk shards by document id (as the chunk stage does) and row-aligned vector shards."""
    by: dict[int, list[tuple]] = defaultdict(list)
    for it in items:
        c = make_chunk(it.source, it.index, it.text)
        by[shards.shard_of(c.doc_id, SHARDS)].append((c, it.vector))
    for index in range(SHARDS):
        rows = sorted(by.get(index, []), key=lambda t: (t[0].source, t[0].chunk_index))
        shards.write_shard(art.chunks, index, records_table(Chunk, [c for c, _ in rows]), ["source", "chunk_index"])
        vecs = np.stack([v for _, v in rows]) if rows else np.zeros((0, DIMS), np.float32)
        write_vector_shard(art.vectors, index, [c.chunk_id for c, _ in rows], vecs, {})
    write_json(art.manifest, {"fingerprint": "fp0000000000000a", "dims": DIMS, "model": "m", "provider": "fake",
                              "rows": len(items)})


def _corpus(seed: int = 3) -> tuple[list[Item], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    bases = [unit(rng, DIMS) for _ in range(80)]
    items = [Item(f"base/{g}.txt", 0, f"base text {g} {FILLER}", b) for g, b in enumerate(bases)]
    for g in range(12):  # near copies
        for c in range(1 + g % 3):
            items.append(Item(f"near/{g}-{c}.txt", 0, f"base text {g} {FILLER} rev {c}",
                              near(rng, bases[g], rng.uniform(0.97, 0.995))))
    for g in [*range(2, 8), *range(20, 28)]:  # exact copies (same text, same vector)
        items.append(Item(f"exact/{g}.txt", 0, f"base text {g} {FILLER}", bases[g]))
    for g in range(40, 46):  # hard negatives
        items.append(Item(f"hard/{g}.txt", 0, f"hard negative {g}", near(rng, bases[g], 0.85)))
    return items, bases


def _snapshot(art: Artifacts) -> dict[str, bytes]:
    out = {f.name: f.read_bytes() for f in shards.shard_files(art.deduped)}
    out["report"] = art.dedupe_report.read_bytes()
    return out


def _clean(tmp: Path, art: Artifacts, cfg: Config) -> tuple[dict[str, bytes], dict]:
    """A full dedupe of the same inputs in a fresh project."""
    root = tmp / "clean"
    shutil.rmtree(root, ignore_errors=True)
    fresh = Artifacts(root)
    shutil.copytree(art.chunks, fresh.chunks)
    shutil.copytree(art.vectors, fresh.vectors)
    shutil.copy(art.manifest, fresh.manifest)
    stats = run_dedupe(cfg, fresh)
    assert stats["search"] == "full"
    return _snapshot(fresh), stats


@pytest.mark.parametrize("policy", ["link", "keep_canonical"])
def test_unchanged_skips_and_changes_equal_a_clean_run(tmp_path: Path, policy: str) -> None:
    cfg = _cfg(policy=policy)
    art = Artifacts(tmp_path / "proj")
    items, bases = _corpus()
    _write(art, items)

    first = run_dedupe(cfg, art)
    assert first["search"] == "full" and not first["skipped"]
    assert first["near_groups"] > 0 and first["exact_groups"] > 0
    before = _snapshot(art)
    mtimes = {f.name: f.stat().st_mtime_ns for f in shards.shard_files(art.deduped)}

    again = run_dedupe(cfg, art)
    assert again["skipped"] and again["search"] == "skipped"
    assert again["shards_changed"] == 0 and again["deduped_shards_written"] == 0
    assert again["points"] == first["points"] and again["near_groups"] == first["near_groups"]
    assert _snapshot(art) == before
    assert {f.name: f.stat().st_mtime_ns for f in shards.shard_files(art.deduped)} == mtimes

    # edit: base/50 becomes a near copy of base/60 (creates a pair); delete near/0-0 and base/1 (breaks
    # pairs, and base/1's near copies lose their representative); delete base/20, whose exact copy
    # exact/20 may become the representative; add exact and near copies
    rng = np.random.default_rng(11)
    by_src = {it.source: it for it in items}
    by_src["base/50.txt"] = Item("base/50.txt", 0, f"base text 60 {FILLER} edited", near(rng, bases[60], 0.99))
    for gone in ("near/0-0.txt", "base/1.txt", "base/20.txt", "base/21.txt"):
        del by_src[gone]
    for g in range(2, 8):  # the exact representative goes: its copy becomes a search node
        del by_src[min((f"base/{g}.txt", f"exact/{g}.txt"),
                       key=lambda s: make_chunk(s, 0, f"base text {g} {FILLER}").chunk_id)]
    for k in range(6):
        by_src[f"added/x{k}.txt"] = Item(f"added/x{k}.txt", 0, f"base text {22 + k} {FILLER}", bases[22 + k])
    by_src["added/near.txt"] = Item("added/near.txt", 0, f"base text 70 {FILLER} rev 9", near(rng, bases[70], 0.98))
    final = list(by_src.values())
    _write(art, final)

    inc = run_dedupe(cfg, art)
    assert inc["search"] == "incremental" and not inc["skipped"]
    assert 0 < inc["shards_changed"] <= SHARDS
    assert inc["nodes_searched"] < inc["unique_texts"]
    assert inc["rows_copied"] > 0  # unchanged rows of rewritten shards are copied, not rebuilt
    clean, clean_stats = _clean(tmp_path, art, cfg)
    assert _snapshot(art) == clean
    drop = ("seconds", "search", "skipped", "shards_changed", "nodes_searched", "deduped_shards_written",
            "full_reason", "rows_copied")
    assert {k: v for k, v in inc.items() if not k.startswith(drop)} == {
        k: v for k, v in clean_stats.items() if not k.startswith(drop)}
    assert inc["near_groups"] != first["near_groups"] or inc["points"] != first["points"]

    # and the incremental state stays exact for the next change too
    del by_src["added/near.txt"]
    by_src["base/60.txt"] = Item("base/60.txt", 0, "base text 60 rewritten entirely", unit(rng, DIMS))
    _write(art, list(by_src.values()))
    inc2 = run_dedupe(cfg, art)
    assert inc2["search"] == "incremental"
    assert _snapshot(art) == _clean(tmp_path, art, cfg)[0]


def test_one_shard_change_rewrites_only_what_changed(tmp_path: Path) -> None:
    cfg = _cfg()
    art = Artifacts(tmp_path / "proj")
    items, _ = _corpus()
    _write(art, items)
    run_dedupe(cfg, art)
    mtimes = {f.name: f.stat().st_mtime_ns for f in shards.shard_files(art.deduped)}
    rng = np.random.default_rng(5)
    lone = Item("added/lone.txt", 0, "a new unrelated text", unit(rng, DIMS))  # no duplicate of anything
    _write(art, [*items, lone])
    stats = run_dedupe(cfg, art)
    target = shards.shard_name(shards.shard_of(make_chunk(lone.source, 0, lone.text).doc_id, SHARDS))
    assert stats["search"] == "incremental" and stats["shards_changed"] == 1
    assert stats["nodes_searched"] == 1
    assert stats["deduped_shards_written"] == 1
    now = {f.name: f.stat().st_mtime_ns for f in shards.shard_files(art.deduped)}
    assert {k for k in now if now[k] != mtimes.get(k)} == {target}
    assert _snapshot(art) == _clean(tmp_path, art, cfg)[0]


def test_param_change_full_rebuild_and_damaged_outputs_recompute(tmp_path: Path) -> None:
    art = Artifacts(tmp_path / "proj")
    items, _ = _corpus()
    _write(art, items)
    run_dedupe(_cfg(), art)

    changed = run_dedupe(_cfg(threshold=0.98), art)
    assert changed["search"] == "full" and "params" in changed["full_reason"]
    assert _snapshot(art) == _clean(tmp_path, art, _cfg(threshold=0.98))[0]
    assert run_dedupe(_cfg(threshold=0.98), art)["skipped"]

    forced = run_dedupe(load_config(None, {"dedupe.threshold": 0.98, "run.full_rebuild": True}), art)
    assert forced["search"] == "full" and forced["full_reason"] == "run.full_rebuild"

    # a deduped shard deleted or edited behind the stage's back is rewritten, not trusted
    victim = shards.shard_files(art.deduped)[0]
    good = victim.read_bytes()
    victim.unlink()
    fixed = run_dedupe(_cfg(threshold=0.98), art)
    assert not fixed["skipped"] and fixed["deduped_shards_written"] == 1
    assert victim.read_bytes() == good
