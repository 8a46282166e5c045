"""The bundled sample corpus and its labelled query set stay consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PROJECT = Path(__file__).resolve().parents[2]
RAW = PROJECT / "data" / "raw"
EVAL = PROJECT / "data" / "eval"


def _jsonl_ids(path: Path) -> set[str]:
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["_id"]))
        except (ValueError, KeyError):
            continue
    return ids


def test_every_qrels_id_resolves() -> None:
    lines = (EVAL / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["query-id", "corpus-id", "score"]
    queries = {json.loads(q)["_id"] for q in (EVAL / "queries.jsonl").read_text().splitlines() if q}
    judged = set()
    for line in lines[1:]:
        qid, cid, score = line.split("\t")
        judged.add(qid)
        assert qid in queries, qid
        assert int(score) > 0
        path, _, rec = cid.partition("#")
        assert (RAW / path).is_file(), cid
        if rec:
            assert rec in _jsonl_ids(RAW / path), cid
    assert judged == queries  # every query has at least one judgement


def test_corpus_spans_formats_and_plants_duplicates() -> None:
    files = [p for p in RAW.rglob("*") if p.is_file() and "bad" not in p.parts]
    suffixes = {p.suffix for p in files}
    assert {".txt", ".md", ".html", ".jsonl", ".py"} <= suffixes
    contents: dict[bytes, list[Path]] = {}
    for p in files:
        contents.setdefault(p.read_bytes(), []).append(p)
    assert sum(1 for v in contents.values() if len(v) > 1) >= 2  # exact duplicates


def test_smoke_query_points_at_a_corpus_file() -> None:
    smoke = json.loads((EVAL / "smoke.json").read_text())
    assert (RAW / smoke["expected_source"]).is_file()
    assert smoke["query"].strip()
