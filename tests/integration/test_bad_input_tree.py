"""One `ingest` flow run on a bad-input zoo (fake embedder): the good files are ingested, every bad
entry is reported with a reason, and the run is Completed even though DVC refuses to record it
after the alias swap (issue 14 rows 1, 2, 18, 19 and the done-when bad-input tree)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.records import Document, iter_records, read_json, read_rejections
from tests.conftest import FAKE, TINY_DOCS, make_project

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
ROOT_USER = os.geteuid() == 0
BIG_FIELD = "x" * 1_000_000


def build_zoo(raw: Path) -> tuple[set[str], dict[str, str]]:
    """Bad entries next to TINY_DOCS; returns (sources that must become documents, path -> reason)."""
    good = set(TINY_DOCS)
    bad: dict[str, str] = {}
    rawb = os.fsencode(raw)
    with open(os.path.join(rawb, b"caf\xe9 latin-1 name.txt"), "wb") as fh:  # not UTF-8
        fh.write(b"Espresso is brewed by forcing hot water through finely ground coffee.\n")
    good.add("caf\\xe9 latin-1 name.txt")
    with open(os.path.join(rawb, b"empty\xff\xfe.md"), "wb"):
        pass
    bad["empty\\xff\\xfe.md"] = "empty"
    (raw / "loop_a.txt").symlink_to("loop_b.txt")  # file symlinks pointing at each other
    (raw / "loop_b.txt").symlink_to("loop_a.txt")
    (raw / "self.txt").symlink_to("self.txt")
    bad |= {"loop_a.txt": "symlink_loop", "loop_b.txt": "symlink_loop", "self.txt": "symlink_loop"}
    (raw / "net" / "up").symlink_to("..", target_is_directory=True)
    bad["net/up"] = "symlink_loop"
    (raw / "dangling.txt").symlink_to("missing.txt")
    bad["dangling.txt"] = "broken_symlink"
    (raw / "escape.txt").symlink_to(PROJECT / "README.md")
    bad["escape.txt"] = "symlink_escape"
    os.mkfifo(raw / "pipe.txt")
    bad["pipe.txt"] = "not_a_file"
    with (raw / "huge.txt").open("wb") as fh:
        fh.truncate(25 * 1024 * 1024)  # sparse: > preprocess.max_file_mb without writing 25 MB
    bad["huge.txt"] = "too_large"
    shutil.copytree(PROJECT / "data" / "raw" / "bad", raw / "bad")  # the committed bad inputs
    bad |= {"bad/empty.txt": "empty", "bad/whitespace_only.md": "empty",
            "bad/corrupted_export.txt": "binary", "bad/undecodable.txt": "undecodable",
            "bad/broken_config.json": "malformed_json", "bad/unclosed_comment.html": "malformed_html",
            "bad/diagram.png": "unsupported_format"}
    malformed = [json.loads(line) for line in (raw / "bad" / "malformed.jsonl").read_text().splitlines()
                 if line.strip().startswith("{") and _parses(line)]
    good |= {f"bad/malformed.jsonl#{r.get('_id', r.get('id'))}" for r in malformed}
    bad |= {f"bad/malformed.jsonl:{n}": "malformed_json"
            for n, line in enumerate((raw / "bad" / "malformed.jsonl").read_text().splitlines(), 1)
            if line.strip() and not _parses(line)}
    records = [{"_id": "big", "text": "A record with a one megabyte side field.", "blob": BIG_FIELD},
               {"_id": "sur\ud800", "text": "A lone surrogate \udc80 in JSON."}]
    (raw / "side.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    good |= {"side.jsonl#big", "side.jsonl#sur\\ud800"}  # a lone surrogate id, escaped
    (raw / "locked.txt").write_text("Text behind a mode that only root can read.\n")
    (raw / "locked.txt").chmod(0)
    (raw / "locked_dir").mkdir()
    (raw / "locked_dir" / "inner.txt").write_text("Text in a folder only root can list.\n")
    (raw / "locked_dir").chmod(0)
    if ROOT_USER:  # root reads through modes: these are good files then
        good |= {"locked.txt", "locked_dir/inner.txt"}
    else:
        bad |= {"locked.txt": "unreadable", "locked_dir": "unreadable"}
    return good, bad


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from embedline.flows.ingest import ingest

    root = make_project(tmp_path_factory.mktemp("zoo") / "proj", FAKE)
    good, bad = build_zoo(root / "data" / "raw")
    # a DVC project DVC refuses to commit (no such stages): dvc_record raises after the alias swap
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / ".dvc").mkdir()
    try:
        with prefect_test_harness(server_startup_timeout=120):
            run = ingest(root=str(root), evaluate=False)
    finally:
        (root / "data" / "raw" / "locked_dir").chmod(0o755)
    return {"root": root, "run": run, "good": good, "bad": bad}


def test_good_files_ingested_in_one_run(zoo_run: dict[str, Any]) -> None:
    art = Artifacts(zoo_run["root"])
    docs = {d.source: d for d in iter_records(art.documents, Document)}
    assert set(docs) == zoo_run["good"]
    assert zoo_run["run"]["upsert"]["points_total"] > 0
    assert zoo_run["run"]["preprocess"]["documents"] == len(zoo_run["good"])


def test_every_bad_entry_reported_with_a_reason(zoo_run: dict[str, Any]) -> None:
    rejected = read_rejections(Artifacts(zoo_run["root"]).rejected)
    assert {r.path: r.reason for r in rejected} == zoo_run["bad"]
    assert len(rejected) == len(zoo_run["bad"]) and all(r.detail for r in rejected)


def test_side_fields_capped_in_payloads(zoo_run: dict[str, Any]) -> None:
    from embedline.tasks.vectorsets.stores import open_store

    root: Path = zoo_run["root"]
    cfg = load_config(root / "params.yaml")
    receipt = read_json(Artifacts(root).receipt)
    store = open_store(cfg.qdrant, root)
    sizes = {}
    for p in store.scan(receipt["collection"]):
        payload = p.payload or {}
        sizes[payload["source"]] = len(json.dumps(payload, ensure_ascii=False).encode())
        if payload["source"] == "side.jsonl#big":
            meta = payload["metadata"]["document"] if "document" in payload.get("metadata", {}) else payload["metadata"]
            assert meta["truncated_fields"] == {"blob": len(BIG_FIELD) + 2}
    assert sizes["side.jsonl#big"] < 16_000  # was 1.09 MB per point
    assert zoo_run["run"]["preprocess"]["metadata_truncated"] == 1


def test_dvc_refusal_after_the_swap_leaves_the_run_completed(zoo_run: dict[str, Any]) -> None:
    """The flow returned (Completed) although `dvc commit` failed; the new set is live."""
    from embedline.tasks.vectorsets.stores import open_store

    root: Path = zoo_run["root"]
    cfg = load_config(root / "params.yaml")
    receipt = read_json(Artifacts(root).receipt)
    assert open_store(cfg.qdrant, root).get_alias(cfg.qdrant.collection) == receipt["collection"]
    assert not (root / "dvc.lock").exists()
