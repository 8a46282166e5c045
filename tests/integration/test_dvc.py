"""DVC end to end on a throw-away git + DVC copy of the project (tiny corpus, fake embedder).

Claims of issue 6, one test each: a second `dvc repro` is a no-op; a param change re-runs exactly
the stages downstream of it (and the embed stage pays only for changed texts); two clean runs give
byte-identical vectors and one fingerprint, traceable from dvc.lock to every served payload;
`dvc exp run -S` + `dvc exp show` list the metrics; push -> fresh clone -> pull -> upsert restores the
collection without embedding anything; an `ingest` flow run leaves `dvc status` clean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.config import load_config
from embedline.tasks.records import doc_id_for
from embedline.tasks.shards import shard_name, shard_of
from embedline.tasks.vector_shards import read_all
from embedline.tasks.vectorsets.stores import close_stores, open_store
from tests.chunkdata import folder_bytes
from tests.dvcrepo import STAGES, Repo, clone

pytestmark = pytest.mark.integration



def up_to_date(repo: Repo) -> bool:
    """`dvc status` reports nothing but the promote stage, which is `always_changed` by design."""
    return repo.dvc("status").stdout.split() == ["promote:", "always", "changed"]


def _points(repo: Repo) -> dict[str, dict[str, Any]]:
    """Point id -> payload of the live collection (read in-process, after the commands ended)."""
    cfg = load_config(repo.path / "params.yaml")
    store = open_store(cfg.qdrant, repo.path)
    try:
        return {p.id: dict(p.payload or {}) for p in store.scan(cfg.qdrant.collection, with_payload=True)}
    finally:
        close_stores()


def _served(repo: Repo) -> str | None:
    """The collection the alias serves (read in-process, after the commands ended)."""
    cfg = load_config(repo.path / "params.yaml")
    store = open_store(cfg.qdrant, repo.path)
    try:
        return store.get_alias(cfg.qdrant.collection)
    finally:
        close_stores()


def _lock_out(repo: Repo, stage: str, path: str) -> dict[str, Any]:
    outs = repo.lock()["stages"][stage]["outs"]
    return next(o for o in outs if o["path"] == path)


def _cached(repo: Repo, md5: str) -> Path:
    return repo.path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


# ---- no-op repro -------------------------------------------------------------------------------
def test_second_repro_is_a_noop(built: tuple[Repo, list[str]]) -> None:
    repo, first = built
    assert first == list(STAGES), "the first repro must run every stage in DAG order"
    assert repo.repro() == ["promote"]  # always runs: it makes the store match (a no-op here)
    assert up_to_date(repo)
    lock = repo.lock()["stages"]
    assert set(lock) == set(STAGES)
    # every stage's params and code deps are recorded, so a change to either is detected
    assert lock["chunk"]["params"]["params.yaml"]["chunk"]["max_tokens"] == 256
    assert "embed.model" in lock["chunk"]["params"]["params.yaml"]
    assert "dedupe" in lock["dedupe"]["params"]["params.yaml"]
    assert any(d["path"] == "tasks/embed" for d in lock["embed"]["deps"])


# ---- provenance: dvc.lock -> manifest -> receipt -> collection -> payloads -------------------------
def test_fingerprint_traces_from_dvc_lock_to_every_payload(built: tuple[Repo, list[str]]) -> None:
    repo, _ = built
    manifest_out = _lock_out(repo, "embed", "data/embeddings/manifest.json")
    manifest = json.loads(_cached(repo, manifest_out["md5"]).read_text())
    fp = manifest["fingerprint"]
    assert fp and manifest == repo.json("data/embeddings/manifest.json")

    receipt_out = _lock_out(repo, "upsert", "data/receipts/upsert.json")
    receipt = json.loads(_cached(repo, receipt_out["md5"]).read_text())
    assert receipt["fingerprint"] == fp
    assert receipt["collection"].endswith(f"-{fp}")
    assert repo.json("data/metrics/embed.json")["fingerprint"] == fp  # Git-tracked metric

    points = _points(repo)
    assert len(points) == receipt["points_total"] > 0
    assert {p["fingerprint"] for p in points.values()} == {fp}
    cfg = load_config(repo.path / "params.yaml")
    store = open_store(cfg.qdrant, repo.path)
    try:
        assert store.get_alias(cfg.qdrant.collection) == receipt["collection"]
    finally:
        close_stores()


# ---- reproducibility: two clean runs ------------------------------------------------------------
def test_two_clean_runs_give_identical_vectors(
    built: tuple[Repo, list[str]], tmp_path: Path, scratch: Path
) -> None:
    """A fresh `git clone` (no dvc.lock, no DVC cache, no embedding cache) reproduces the bytes."""
    first, _ = built
    second = clone(first, tmp_path / "clone", scratch)
    assert not (second.path / "dvc.lock").exists() and not (second.path / "data" / "cache").exists()
    assert second.repro() == list(STAGES)
    assert second.repro() == ["promote"]
    assert second.json("data/metrics/embed.json")["cache_hits"] == 0  # really embedded again
    # what a run leaves to commit: dvc.lock and the Git-tracked metrics, nothing else
    changed = {line[3:] for line in second.git("status", "--porcelain", "-uall").splitlines()}
    assert "dvc.lock" in changed
    assert all(p == "dvc.lock" or p.startswith("data/metrics/") for p in changed), changed

    a = folder_bytes(first.path / "data/embeddings/vectors")
    b = folder_bytes(second.path / "data/embeddings/vectors")
    assert a and a == b
    fp1 = first.json("data/embeddings/manifest.json")["fingerprint"]
    fp2 = second.json("data/embeddings/manifest.json")["fingerprint"]
    assert fp1 == fp2
    for stage, path in [("embed", "data/embeddings/vectors"), ("chunk", "data/interim/chunks"),
                        ("dedupe", "data/interim/deduped")]:
        assert _lock_out(first, stage, path)["md5"] == _lock_out(second, stage, path)["md5"], path
    assert _points(first).keys() == _points(second).keys()


# ---- selective re-runs ----------------------------------------------------------------------------
@pytest.mark.slow
def test_param_change_reruns_exactly_the_downstream_stages(work: Repo) -> None:
    rows_before = work.json("data/metrics/embed.json")["rows"]
    work.set_params(chunk__max_tokens=64)
    # finetune reads the chunk params too (its eval-corpus mode); off, it only records that it is off
    assert work.repro() == ["chunk", "embed", "dedupe", "upsert", "evaluate", "promote", "finetune"]
    embed = work.json("data/metrics/embed.json")
    assert embed["rows"] > rows_before  # the long document now has more chunks
    # only the re-chunked text is paid for; the shards of the unchanged short documents are kept
    # as they are (their chunk shard hash did not move: not even read, nor looked up in the cache)
    assert 0 < embed["cache_misses"] < embed["unique_texts"]
    assert embed["texts_embedded"] == embed["cache_misses"]
    assert embed["vector_shards_kept"] > 0 and embed["chunk_shards_read"] == embed["vector_shards_written"]

    points = work.json("data/metrics/upsert.json")["points_total"]
    # merges the planted near-duplicate (by vectors alone: its text is a rewording, so the text check is off)
    work.set_params(dedupe__threshold=0.85, dedupe__confirm_text=False)
    assert work.repro() == ["dedupe", "upsert", "evaluate", "promote", "finetune"]
    assert work.json("data/metrics/upsert.json")["points_total"] == points - 1
    assert work.repro() == ["promote"]


# ---- experiments --------------------------------------------------------------------------------
def _find_exp(node: Any, name: str) -> dict[str, Any] | None:
    if isinstance(node, dict):
        if node.get("name") == name and "data" in node:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_exp(child, name)
        if found is not None:
            return found
    return None


@pytest.mark.slow
def test_exp_run_and_show_list_the_headline_metrics_in_15_columns(work: Repo) -> None:
    work.commit_all("baseline run")
    served = _served(work)
    work.dvc("exp", "run", "-n", "small-chunks", "-S", "chunk.max_tokens=64", timeout=600)
    assert _served(work) == served, "an experiment must not change what the alias serves"
    shown = json.loads(work.dvc("exp", "show", "--json").stdout)
    exp = _find_exp(shown, "small-chunks")
    assert exp is not None, json.dumps(shown)[:2000]
    data = exp["data"]
    assert data["params"]["params.yaml"]["data"]["chunk"]["max_tokens"] == 64
    # one metrics file: the headline numbers, no timings, no per-stage details
    metrics = {Path(k).name: v["data"] for k, v in data["metrics"].items()}
    # the headline, and finetune's base vs fine-tuned scores (issue 17: compared in `dvc exp show`)
    assert set(metrics) == {"headline.json", "finetune.json"}
    head = metrics["headline.json"]
    assert set(head) == {"ndcg@10", "recall@100", "points", "chunks", "duplicates", "texts_embedded"}
    assert set(head["ndcg@10"]) == {"dense", "bm25", "wholedoc"} and head["ndcg@10"]["dense"] > 0
    # the details stay one command away (not listed by exp show)
    details = work.dvc("metrics", "show", "data/metrics/embed.json", "--json").stdout
    assert "cache_hits" in details
    table = work.dvc("exp", "show", "--only-changed", "--csv").stdout.splitlines()
    header = table[0].split(",")
    # rev and typ are CSV-only columns (the table view shows Experiment and Created)
    assert len([c for c in header if c not in ("rev", "typ")]) <= 15, header
    assert "chunk.max_tokens" in header and "chunks" in header
    assert not any("seconds" in c for c in header)


# ---- remote: push -> fresh clone -> pull -> upsert, nothing embedded -----------------------------
POISON = '''
"""Loaded at interpreter start-up (PYTHONPATH): any attempt to embed fails the command."""
import dataclasses
from embedline.tasks.embed import registry

def _poisoned(params):
    raise RuntimeError("poisoned: this command must not embed anything")

for _name in registry.PROVIDERS.names():
    _spec = registry.provider_spec(_name)
    registry.PROVIDERS.register(_name, dataclasses.replace(_spec, factory=_poisoned), replace=True)
'''


def test_push_clone_pull_restores_collection_without_embedding(
    work: Repo, tmp_path: Path, scratch: Path
) -> None:
    remote = tmp_path / "remote"
    work.dvc("remote", "add", "-d", "local", str(remote))
    work.commit_all("vector set + local remote")
    work.dvc("push")
    expected = _points(work)

    fresh = clone(work, tmp_path / "fresh", scratch)
    assert not (fresh.path / "data/embeddings/vectors").exists()
    fresh.dvc("pull")
    assert up_to_date(fresh)
    lock = (fresh.path / "dvc.lock").read_bytes()
    assert folder_bytes(fresh.path / "data/embeddings/vectors") == folder_bytes(
        work.path / "data/embeddings/vectors"
    )

    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "sitecustomize.py").write_text(POISON)
    fresh.env["PYTHONPATH"] = f"{fresh.path}:{poison}"
    # `dvc repro` runs only the promote stage, which builds the recorded set from the pulled
    # vectors (nothing embedded) and serves it; dvc.lock and Git are left as they were
    assert fresh.repro() == ["promote"]
    assert not (fresh.path / "data" / "cache").exists(), "nothing may be embedded or cached"
    assert (fresh.path / "dvc.lock").read_bytes() == lock
    assert fresh.git("status", "--porcelain") == ""
    assert fresh.repro() == ["promote"] and up_to_date(fresh)
    verify = json.loads(fresh.embedline("verify", "--json").stdout)
    assert verify["ok"] and verify["served_fingerprint"] == verify["recorded_fingerprint"]
    receipt = fresh.json("data/receipts/upsert.json")
    assert receipt["fingerprint"] == work.json("data/receipts/upsert.json")["fingerprint"]
    assert receipt["points_total"] == len(expected)
    restored = _points(fresh)
    assert restored.keys() == expected.keys()
    assert {k: v.get("payload_hash") for k, v in restored.items()} == {
        k: v.get("payload_hash") for k, v in expected.items()
    }
    # the poison is live: an embed would have failed
    assert "poisoned" in fresh.embedline("search", "black holes", check=False).stderr


# ---- Prefect and DVC agree ------------------------------------------------------------------------
@pytest.mark.slow
def test_ingest_flow_run_leaves_dvc_status_clean(work: Repo) -> None:
    doc = work.path / "data/raw/net/tcp.txt"
    doc.write_text(doc.read_text() + "It closes the connection with a FIN segment from each side.\n")
    assert not up_to_date(work)
    work.env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    work.embedline("ingest", timeout=600)
    assert up_to_date(work)
    assert work.repro() == ["promote"]
    # what DVC recorded is what the flow built
    lock = _lock_out(work, "embed", "data/embeddings/vectors")
    assert lock["nfiles"] == len(list((work.path / "data/embeddings/vectors").glob("shard-*")))
    assert read_all(work.path / "data/embeddings/vectors").shape[0] == work.json(
        "data/metrics/embed.json"
    )["rows"]


# ---- incremental: a one-file edit ------------------------------------------------------------------
@pytest.mark.slow
def test_one_file_edit_rewrites_only_its_shard_files(work: Repo) -> None:
    """`dvc repro` after editing one document: preprocess loads one file, chunk chunks one document,
    and DVC reports exactly that document's shard file as modified in each shard folder."""
    work.commit_all("first run")
    (work.path / "data/raw/net/tcp.txt").write_text(
        "TCP retransmits lost segments and orders the byte stream for the receiving application.\n"
    )
    ran = work.repro()
    assert ran[:2] == ["preprocess", "chunk"]
    assert work.json("data/metrics/preprocess.json")["files_loaded"] == 1
    assert work.json("data/metrics/chunk.json")["documents_chunked"] == 1
    diff = json.loads(work.dvc("diff", "--json").stdout)
    files = {d["path"] for kind in ("added", "deleted", "modified") for d in diff.get(kind, [])
             if not d["path"].endswith("/")}
    shards = load_config(work.path / "params.yaml").run.shards
    shard = shard_name(shard_of(doc_id_for("net/tcp.txt"), shards))
    assert {p for p in files if p.startswith("data/interim/documents/")} == {f"data/interim/documents/{shard}"}
    assert {p for p in files if p.startswith("data/interim/chunks/")} == {f"data/interim/chunks/{shard}"}
    # the later stages too: one vector shard, one deduped shard (the others byte-identical)
    assert {p for p in files if p.startswith("data/embeddings/vectors/")} == {f"data/embeddings/vectors/{shard}"}
    assert {p for p in files if p.startswith("data/interim/deduped/")} == {f"data/interim/deduped/{shard}"}
    assert work.json("data/metrics/embed.json")["vector_shards_written"] == 1

# ---- byte-stable outputs ----------------------------------------------------------------------------
def _cached_out_hashes(repo: Repo) -> dict[str, str]:
    """path -> md5 of every DVC-cached output in dvc.lock (the `cache: false` stats files aside)."""
    import yaml

    uncached = set()
    for stage in yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"].values():
        for o in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            if isinstance(o, dict) and next(iter(o.values())).get("cache") is False:
                uncached.add(next(iter(o)))
    return {o["path"]: o["md5"] for s in repo.lock()["stages"].values() for o in s.get("outs", [])
            if o["path"] not in uncached}


@pytest.mark.slow
def test_forced_repro_changes_no_output_hash(work: Repo) -> None:
    """Every cached output is a pure function of its inputs and params on one machine."""
    before = _cached_out_hashes(work)
    assert {"data/embeddings/manifest.json", "data/interim/dedupe_report.json",
            "data/metrics/embedding_map.png", "data/metrics/recall_curve.png"} <= before.keys()
    work.dvc("repro", "-f", timeout=900)
    assert _cached_out_hashes(work) == before
