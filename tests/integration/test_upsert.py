"""Upsert end to end through the stage functions (fake embedder, real embedded Qdrant):
incremental sync == clean ingest, SIGKILL mid-upsert, vector-set switches, guards, plan/verify,
export/import."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, load_config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.vectorsets.base import VectorStore
from embedline.tasks.vectorsets.stores import PointRecord, close_stores, open_store
from tests.conftest import FAKE, PROJECT, make_project, write_corpus

pytestmark = pytest.mark.integration

_WORDS = ["river", "stone", "cloud", "engine", "garden", "violin", "harbor", "pepper", "quartz", "lantern", "meadow", "copper", "falcon", "orbit", "ribbon", "walnut", "signal", "canyon", "marble", "velvet", "thunder", "compass", "saddle", "glacier", "tunnel", "biscuit", "anchor", "prism", "juniper", "cobalt", "ember", "fossil", "mosaic", "nectar", "oyster", "pebble", "quiver", "raven", "sapphire", "tundra", "umbrella", "vortex", "willow", "yarrow", "zephyr", "basalt", "cedar", "dynamo"]


def _text(topic: str, n: int) -> str:
    """``n`` sentences that share few words (so the fake embedder keeps them apart)."""
    out = []
    for i in range(n):
        k = (sum(map(ord, topic)) * 7 + i * 11) % len(_WORDS)
        words = [_WORDS[(k + j * j + i) % len(_WORDS)] for j in range(9)]
        out.append(f"The {topic} note {i} mentions " + " ".join(words) + ".")
    return " ".join(out)


CORPUS_A = {
    "notes/alpha.md": "# Alpha\n\n" + _text("alpha", 12),
    "notes/beta.txt": _text("beta", 8),
    "notes/gamma.txt": _text("gamma", 8),
    "notes/delta.txt": _text("delta", 6),
    "misc/epsilon.txt": _text("epsilon", 6),
    "misc/zeta.txt": _text("zeta", 6),
    "misc/zeta_copy.txt": _text("zeta", 6),
}
SETTINGS = {**FAKE, "chunk.max_tokens": 48, "chunk.overlap_tokens": 0, "chunk.strategy": "sentence"}


def _final_corpus() -> dict[str, str]:
    docs = dict(CORPUS_A)
    docs["notes/alpha.md"] = "# Alpha\n\n" + _text("alpha", 3)  # shrinks
    del docs["notes/gamma.txt"]  # deleted
    docs["notes/eta.txt"] = _text("eta", 5)  # added
    return docs


def _project(root: Path, docs: dict[str, str], **overrides: Any) -> tuple[Config, Artifacts]:
    make_project(root, {**SETTINGS, **overrides}, docs=docs)
    return load_config(root / "params.yaml"), Artifacts(root)


def _set_corpus(root: Path, docs: dict[str, str]) -> None:
    shutil.rmtree(root / "data" / "raw")
    write_corpus(root / "data" / "raw", docs)


def _ingest(cfg: Config, art: Artifacts, **upsert: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for name in INGEST_STAGES:
        out[name] = run_stage(name, cfg, art, **(upsert if name == "upsert" else {}))
    return out


def _store(cfg: Config, art: Artifacts) -> VectorStore:
    return open_store(cfg.qdrant, art.root)


def _state(cfg: Config, art: Artifacts) -> dict[str, str]:
    """point id -> payload hash of the live vector set."""
    store = _store(cfg, art)
    return {p.id: (p.payload or {})["payload_hash"] for p in store.scan(cfg.qdrant.collection, with_payload=["payload_hash"])}


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    yield
    close_stores()


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_incremental_sync_equals_clean_ingest(tmp_path: Path, backend: str) -> None:
    cfg, art = _project(tmp_path / "a", CORPUS_A, **{"qdrant.backend": backend, "qdrant.batch_points": 4})
    first = _ingest(cfg, art)
    up = first["upsert"]
    assert first["promote"]["promoted"] is True and up["added"] == up["points_total"] == first["dedupe"]["points"] > 10
    assert first["dedupe"]["exact_removed"] > 0  # zeta_copy collapses onto zeta
    before = _state(cfg, art)

    _set_corpus(art.root, _final_corpus())
    run2 = _ingest(cfg, art)
    second = run2["upsert"]
    assert run2["promote"]["promoted"] is False and second["new_vector_set"] is False
    assert second["added"] > 0 and second["deleted"] > 0 and second["unchanged"] > 0
    after = _state(cfg, art)
    assert set(before) - set(after) and set(after) - set(before)

    third = _ingest(cfg, art)["upsert"]  # nothing changed: nothing sent
    assert (third["added"], third["updated"], third["deleted"]) == (0, 0, 0)

    cfg2, art2 = _project(tmp_path / "clean", _final_corpus(), **{"qdrant.backend": backend})
    _ingest(cfg2, art2)
    assert _state(cfg2, art2) == after
    # payload content: text, source(s), chunk index, fingerprint
    hit = _store(cfg, art).scan(cfg.qdrant.collection).__next__()
    payload = hit.payload or {}
    for key in ("text", "source", "sources", "chunk_index", "fingerprint", "doc_id", "payload_hash"):
        assert key in payload
    assert payload["fingerprint"] == first["embed"]["fingerprint"]
    receipt = art.receipt.read_text()
    assert cfg.qdrant.collection in receipt and first["embed"]["fingerprint"] in receipt


_CHILD = """
import sys
from pathlib import Path
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
root = Path(sys.argv[1])
cfg, art = load_config(root / "params.yaml"), Artifacts(root)
for name in INGEST_STAGES:
    print(name, run_stage(name, cfg, art), flush=True)
"""


def test_sigkill_mid_upsert_then_rerun_converges_without_re_embedding(tmp_path: Path) -> None:
    cfg, art = _project(tmp_path / "p", CORPUS_A, **{"qdrant.batch_points": 2})
    _ingest(cfg, art)
    before = _state(cfg, art)
    close_stores()
    _set_corpus(art.root, _final_corpus())
    env = {**os.environ, "EMBEDLINE_TEST_UPSERT_PAUSE_S": "120", "PYTHONPATH": str(PROJECT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(art.root)], cwd=PROJECT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        assert child.stderr is not None
        while "first batch written" not in seen:
            assert time.monotonic() < deadline, f"child never reached the upsert: {seen[-2000:]}"
            assert child.poll() is None, f"child exited early: {seen[-2000:]}"
            ready, _, _ = select.select([child.stderr], [], [], 1.0)
            if ready:
                seen += child.stderr.readline()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    rerun = _ingest(cfg, art)
    embed, up = rerun["embed"], rerun["upsert"]
    assert embed["texts_embedded"] == 0 and embed["cache_hits"] == embed["unique_texts"] > 0

    cfg2, art2 = _project(tmp_path / "clean", _final_corpus())
    _ingest(cfg2, art2)
    final = _state(cfg2, art2)
    assert _state(cfg, art) == final
    # the killed run had landed exactly its first batch (2 points) and no delete
    writes = len(set(final) - set(before)) + sum(1 for k in set(final) & set(before) if final[k] != before[k])
    assert up["added"] + up["updated"] == writes - 2
    assert up["deleted"] == len(set(before) - set(final)) > 0


def test_model_change_builds_a_shadow_and_swaps_after_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedline.tasks.vectorsets.build import run_build
    from embedline.tasks.vectorsets.lifecycle import VectorSetValidationError
    from embedline.tasks.vectorsets.promote import promote

    cfg, art = _project(tmp_path / "p", CORPUS_A, **{"qdrant.keep_versions": 1})
    v1 = _ingest(cfg, art)["upsert"]["collection"]
    store = _store(cfg, art)
    assert store.get_alias("embedline") == v1

    # a model change: new fingerprint and dims -> shadow; the gate sees the alias still on v1
    cfg_b = load_config(art.root / "params.yaml", ["embed.model=fake-b", "embed.dimensions=64"])
    for name in ("chunk", "embed", "dedupe"):
        run_stage(name, cfg_b, art)
    calls: list[tuple[str, str | None, str | None]] = []

    def gate(shadow: str, live: str | None) -> None:
        calls.append((shadow, live, store.get_alias("embedline")))

    built = run_build(cfg_b, art)  # building never moves the alias
    assert built["new_vector_set"] is True and store.get_alias("embedline") == v1 and not calls
    stats = promote(cfg_b, art, gate=gate)
    v2 = stats["collection"]
    assert v2 == built["collection"] != v1 and stats["promoted"] is True and stats["previous_collection"] == v1
    assert calls == [(v2, v1, v1)]
    assert store.get_alias("embedline") == v2 and v1 in store.list_collections()
    spec = store.describe("embedline")
    assert spec is not None and spec.dims == 64

    # a third model whose shadow loses points: validation fails, the alias stays on v2
    cfg_c = load_config(art.root / "params.yaml", ["embed.model=fake-c"])
    for name in ("chunk", "embed", "dedupe"):
        run_stage(name, cfg_c, art)
    # the write path builds Edge requests with ``prepare`` (lifecycle.write_points), others upsert
    hook = "prepare" if hasattr(type(store), "prepare") else "upsert"
    real = getattr(type(store), hook)

    def lossy(self: Any, *args: Any) -> Any:
        *head, points = args
        return real(self, *head, points[:-1])

    monkeypatch.setattr(type(store), hook, lossy)
    with pytest.raises(VectorSetValidationError, match="count"):
        run_build(cfg_c, art)
    monkeypatch.undo()
    assert store.get_alias("embedline") == v2
    v3 = f"embedline-{load_config(art.root / 'params.yaml', ['embed.model=fake-c']).fingerprint}"
    shadows = [c for c in store.list_collections() if c not in (v1, v2)]
    assert len(shadows) == 1 and shadows[0] != v3  # shadow name is the manifest fingerprint

    # a gate that refuses: alias untouched, shadow kept for inspection
    def refuse(shadow: str, live: str | None) -> None:
        raise RuntimeError("quality gate: nDCG@10 dropped")

    run_build(cfg_c, art)
    with pytest.raises(RuntimeError, match="quality gate"):
        promote(cfg_c, art, gate=refuse)
    assert store.get_alias("embedline") == v2

    # it passes now: swap, and keep_versions=1 keeps only v2 besides the live one
    final = promote(cfg_c, art)
    assert final["promoted"] is True and store.get_alias("embedline") == final["collection"]
    assert final["dropped"] == 1
    assert set(store.list_collections()) == {final["collection"], v2}


def test_dims_mismatch_in_an_existing_collection_is_a_clear_error(tmp_path: Path) -> None:
    from embedline.tasks.vectorsets.base import VectorSetMismatchError, VectorSetSpec

    cfg, art = _project(tmp_path / "p", CORPUS_A)
    for name in ("preprocess", "chunk", "embed", "dedupe"):
        run_stage(name, cfg, art)
    fp = __import__("json").loads(art.manifest.read_text())["fingerprint"]
    _store(cfg, art).ensure(VectorSetSpec(name=f"embedline-{fp}", dims=7, metadata={"fingerprint": fp}))
    with pytest.raises(VectorSetMismatchError, match="dims 7"):
        run_stage("upsert", cfg, art)


def test_mass_delete_guard_on_an_emptied_source(tmp_path: Path) -> None:
    from embedline.tasks.vectorsets.lifecycle import MassDeleteError

    cfg, art = _project(tmp_path / "p", CORPUS_A)
    total = _ingest(cfg, art)["upsert"]["points_total"]
    _set_corpus(art.root, {"misc/epsilon.txt": CORPUS_A["misc/epsilon.txt"]})
    for name in ("preprocess", "chunk", "embed", "dedupe"):
        run_stage(name, cfg, art)
    with pytest.raises(MassDeleteError, match="allow-mass-delete"):
        run_stage("upsert", cfg, art)
    assert _store(cfg, art).count("embedline") == total  # nothing was touched
    stats = run_stage("upsert", cfg, art, allow_mass_delete=True)
    assert stats["deleted"] > total / 2 and stats["points_total"] == total - stats["deleted"]


def test_dry_run_and_plan_write_nothing(tmp_path: Path) -> None:
    from embedline.tasks.vectorsets.build import plan
    from embedline.tasks.vectorsets.build import run_build as run_upsert

    cfg, art = _project(tmp_path / "p", CORPUS_A)
    _ingest(cfg, art)
    before = _state(cfg, art)
    receipt = art.receipt.read_text()
    _set_corpus(art.root, _final_corpus())
    for name in ("preprocess", "chunk"):
        run_stage(name, cfg, art)
    sp_chunks = plan(cfg, art)  # embed backlog from chunks vs the cache; sync part from the stale artifact
    assert sp_chunks.texts_to_embed is not None and sp_chunks.texts_to_embed > 0
    for name in ("embed", "dedupe"):
        run_stage(name, cfg, art)
    sp = plan(cfg, art)
    assert sp.texts_to_embed == 0 and sp.new_vector_set is False
    dry = run_upsert(cfg, art, dry_run=True)
    assert (dry["added"], dry["updated"], dry["deleted"]) == (len(sp.adds), len(sp.updates), len(sp.deletes))
    assert _state(cfg, art) == before and art.receipt.read_text() == receipt
    real = run_upsert(cfg, art)
    assert (real["added"], real["updated"], real["deleted"], real["unchanged"]) == (
        len(sp.adds), len(sp.updates), len(sp.deletes), sp.unchanged)


def test_verify_finds_and_repairs_drift(tmp_path: Path) -> None:
    import numpy as np

    from embedline.tasks.vectorsets.verify import verify

    cfg, art = _project(tmp_path / "p", CORPUS_A)
    _ingest(cfg, art)
    good = _state(cfg, art)
    report = verify(cfg, art)
    assert report.ok and report.actual == report.expected == len(good)

    store = _store(cfg, art)
    ids = sorted(good)
    store.delete("embedline", [ids[0]])  # missing
    rec = store.retrieve("embedline", [ids[1]], with_vectors=True)[0]
    store.upsert("embedline", [PointRecord(rec.id, rec.vector, {**(rec.payload or {}), "text": "tampered"})])  # stale
    rec2 = store.retrieve("embedline", [ids[2]], with_vectors=True)[0]
    store.upsert("embedline", [PointRecord(rec2.id, rec2.vector, {**(rec2.payload or {}), "payload_hash": "x"})])
    orphan = "00000000-0000-5000-8000-000000000001"
    store.upsert("embedline", [PointRecord(orphan, np.ones(rec.vector.shape[0], np.float32) if rec.vector is not None else None, {"payload_hash": "o"})])

    report = verify(cfg, art)
    assert not report.ok
    assert report.missing == [ids[0]] and report.orphans == [orphan] and report.stale == sorted([ids[2]])
    fixed = verify(cfg, art, repair=True)
    assert fixed.repaired == {"upserted": 2, "deleted": 1}
    assert _state(cfg, art) == good and verify(cfg, art).ok
    summary = fixed.summary()
    assert summary["missing"] == 1 and summary["orphans"] == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_import_moves_a_vector_set_between_backends(tmp_path: Path, fmt: Literal["jsonl", "parquet"]) -> None:
    from embedline.tasks.vectorsets.search import search
    from embedline.tasks.vectorsets.transfer import export_points, import_points

    cfg, art = _project(tmp_path / "edge", CORPUS_A)
    _ingest(cfg, art)
    out = tmp_path / f"points.{fmt}"
    n = export_points(cfg, art, out, fmt, with_vectors=True)
    assert n == _store(cfg, art).count("embedline")
    no_vec = tmp_path / f"ids.{fmt}"
    assert export_points(cfg, art, no_vec, fmt, with_vectors=False) == n

    cfg_l = load_config(art.root / "params.yaml", ["qdrant.backend=local", f"qdrant.path={tmp_path / 'local'}"])
    with pytest.raises(ValueError, match="without vectors"):
        import_points(cfg_l, art, no_vec)
    assert import_points(cfg_l, art, out) == n
    local = open_store(cfg_l.qdrant, art.root)
    assert local.backend == "local" and local.get_alias("embedline") == _store(cfg, art).get_alias("embedline")
    assert _state(cfg_l, art) == _state(cfg, art)
    hits = search(cfg_l, art, _text("beta", 3), 3)
    assert hits and hits[0].source == "notes/beta.txt"


def test_unchanged_rerun_skips_the_diff_and_verify_still_sees_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    import json

    from embedline.tasks.vectorsets import build
    from embedline.tasks.vectorsets.verify import verify

    cfg, art = _project(tmp_path / "p", CORPUS_A)
    first = _ingest(cfg, art)["upsert"]
    assert first["diff_skipped"] is False
    good = _state(cfg, art)

    def no_diff(*_: Any, **__: Any) -> None:
        raise AssertionError("the unchanged re-run built the sync state")

    with monkeypatch.context() as m:  # same deduped shards, same collection and count: no spill, no scan
        m.setattr(build.SyncState, "of_artifacts", no_diff)
        again = run_stage("upsert", cfg, art)
    assert again["diff_skipped"] is True and again["unchanged"] == again["points_total"] == len(good)
    assert (again["added"], again["updated"], again["deleted"]) == (0, 0, 0)

    store = _store(cfg, art)
    ids = sorted(good)
    rec = store.retrieve("embedline", [ids[1]], with_vectors=True)[0]
    store.upsert("embedline", [PointRecord(rec.id, rec.vector, {**(rec.payload or {}), "payload_hash": "x"})])
    assert run_stage("upsert", cfg, art)["diff_skipped"] is True  # same count: the skip trusts the receipt...
    report = verify(cfg, art)  # ...verify does not
    assert not report.ok and report.stale == [ids[1]]
    assert verify(cfg, art, repair=True).repaired == {"upserted": 1, "deleted": 0} and _state(cfg, art) == good

    store.delete("embedline", [ids[0]])  # a different count: the full diff
    healed = run_stage("upsert", cfg, art)
    assert healed["diff_skipped"] is False and healed["added"] == 1 and _state(cfg, art) == good

    receipt = json.loads(art.receipt.read_text())
    receipt["deduped_sha256"] = "0" * 64  # other deduped shards than the last sync's: the full diff
    art.receipt.write_text(json.dumps(receipt))
    assert run_stage("upsert", cfg, art)["diff_skipped"] is False
    assert json.loads(art.receipt.read_text())["deduped_sha256"] == build.deduped_digest(art)


def test_one_edited_document_reads_only_its_deduped_shard(tmp_path: Path) -> None:
    """An incremental upsert reads only the deduped (and vector) shards that hold points to write:
    a one-document edit reads one shard, not all of them; the collection equals a clean ingest."""
    cfg, art = _project(tmp_path / "a", CORPUS_A, **{"run.shards": 8})
    first = _ingest(cfg, art)["upsert"]
    n_shards = len(list(art.deduped.glob("shard-*.parquet")))
    assert n_shards > 2 and first["deduped_shards_read"] == n_shards
    docs = dict(CORPUS_A)
    docs["notes/beta.txt"] = _text("beta", 8) + " A closing sentence about walnut harbors."
    _set_corpus(art.root, docs)
    second = _ingest(cfg, art)["upsert"]
    assert second["added"] + second["updated"] > 0
    assert second["deduped_shards_read"] == 1
    cfg2, art2 = _project(tmp_path / "clean", docs, **{"run.shards": 8})
    _ingest(cfg2, art2)
    assert _state(cfg2, art2) == _state(cfg, art)


def test_a_sync_reads_the_last_syncs_record_and_any_other_write_voids_it(tmp_path: Path) -> None:
    """After a sync the store records every point's payload hash, so the next sync reads that
    record instead of every point's payload. Any write through the store deletes the record first:
    a point changed outside the sync is found by the scan that follows and repaired."""
    cfg, art = _project(tmp_path / "p", CORPUS_A)
    _ingest(cfg, art)
    docs = dict(CORPUS_A)
    docs["notes/beta.txt"] = _text("beta", 8) + " A closing sentence about walnut harbors."
    _set_corpus(art.root, docs)
    second = _ingest(cfg, art)["upsert"]
    assert second["store_scanned"] is False and second["added"] + second["updated"] > 0

    store = _store(cfg, art)
    tampered = sorted(_state(cfg, art))[0]
    rec = store.retrieve("embedline", [tampered], with_vectors=True)[0]
    store.upsert("embedline", [PointRecord(rec.id, rec.vector, {**(rec.payload or {}), "payload_hash": "x"})])
    docs["notes/delta.txt"] = _text("delta", 6) + " Another closing sentence about cobalt canyons."
    _set_corpus(art.root, docs)
    third = _ingest(cfg, art)["upsert"]
    assert third["store_scanned"] is True and third["updated"] >= 1
    fourth = _ingest(cfg, art)["upsert"]  # nothing changed: the receipt skips the diff
    assert fourth["diff_skipped"] is True

    cfg2, art2 = _project(tmp_path / "clean", docs)
    _ingest(cfg2, art2)
    assert _state(cfg, art) == _state(cfg2, art2)
    assert _state(cfg, art)[tampered] != "x"
